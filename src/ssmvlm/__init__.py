"""ssmvlm: controlled vision-encoder studies for LLaVA-style VLMs, with SSM encoders first-class."""

__version__ = "0.1.0"
