"""ssmvlm.connectors"""
