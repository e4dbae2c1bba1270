"""ssmvlm.vlm"""
