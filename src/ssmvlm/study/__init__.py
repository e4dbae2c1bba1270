"""ssmvlm.study"""
