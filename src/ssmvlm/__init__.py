"""ssmvlm: controlled vision-encoder studies for LLaVA-style VLMs, with SSM encoders first-class."""

__version__ = "0.1.0"

import ssmvlm.backbones.timm_register  # noqa: F401  (SSM backbones as timm models once timm is imported)
