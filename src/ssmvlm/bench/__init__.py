"""ssmvlm.bench"""
