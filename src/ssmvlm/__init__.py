"""ssmvlm: controlled vision-encoder studies for LLaVA-style VLMs, with SSM encoders first-class."""

import sys

__version__ = "0.1.0"


def register_with_timm() -> None:
    """Make the SSM and hybrid zoo backbones timm models (``timm.create_model("vmamba_small_s2l15")``).

    Idempotent. ``import ssmvlm`` calls it when timm is already imported; otherwise call it once yourself:
    importing timm and the backbone families costs seconds, which ``import ssmvlm`` does not pay.
    """
    from ssmvlm.backbones.timm_export import register_with_timm as register

    register()


if "timm" in sys.modules:
    register_with_timm()
