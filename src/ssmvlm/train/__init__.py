"""ssmvlm.train"""
