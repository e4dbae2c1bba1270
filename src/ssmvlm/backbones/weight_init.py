"""Weight initialization shared by the families written in ssmvlm."""

from __future__ import annotations

from torch import nn


def init_linear_and_layernorm(module: nn.Module) -> None:
    """The ViT convention the releases use: truncated-normal (std 0.02) Linear weights, zero biases, unit norms.

    Apply with ``model.apply(init_linear_and_layernorm)``.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
