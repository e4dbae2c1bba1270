"""ssmvlm.pretrain"""
