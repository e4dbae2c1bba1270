"""ssmvlm.eval"""
