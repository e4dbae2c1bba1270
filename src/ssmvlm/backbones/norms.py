"""Norm layers shared by the families written in ssmvlm."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


@functools.cache
def _triton_layer_norm() -> Callable[..., torch.Tensor] | None:
    """The Triton LayerNorm kernel where CUDA and Triton exist."""
    if not torch.cuda.is_available():
        return None
    try:
        from ssmvlm.ops.layer_norm_triton import layer_norm_triton
    except ImportError:
        return None
    return layer_norm_triton


class AutocastLayerNorm(nn.LayerNorm):
    """nn.LayerNorm whose output stays in the autocast dtype (bf16, fp16) when autocast is on.

    Autocast runs every layer_norm in float32 and returns float32, which the GEMM a norm usually feeds casts
    straight back: on a large map that is three float32 passes where one low-precision pass would do, and a
    float32 map held in memory. Here input and weights are cast to the autocast dtype (as timm's
    ``fast_layer_norm`` does; CUDA's kernel takes no float32 weights with bf16 input) and the kernel normalises
    in float32 arithmetic, returning the low-precision result. Use it where the output only feeds low-precision
    work anyway (a projection, a convolution, a gate before one), not where it starts a residual stream.
    Without autocast (and on the meta device, which has none) and under torch.compile (whose graphs fuse norm
    and casts) it is nn.LayerNorm; parameters and state-dict keys are nn.LayerNorm's.

    Inference on CUDA (no autograd) runs :mod:`ssmvlm.ops.layer_norm_triton` instead: float32 weights, any input
    dtype, one pass (torch's bf16 kernel moved about 210 GB/s on 96–192-channel rows: 20 ms of a 4096² VMamba-S
    forward on an H100, 5 ms with this one).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Compiled graphs fuse norm and casts themselves (and torch 2.11 cannot trace is_autocast_available).
        if torch.compiler.is_compiling():
            return super().forward(x)
        device = x.device.type
        if not (torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)):
            return super().forward(x)
        dtype = torch.get_autocast_dtype(device)
        if x.is_cuda and not torch.is_grad_enabled():
            fused = _triton_layer_norm()
            if fused is not None:
                return fused(x, self.weight, self.bias, self.eps, dtype)
        weight, bias = (p.to(dtype) if p is not None else None for p in (self.weight, self.bias))
        with torch.autocast(device, enabled=False):
            return F.layer_norm(x.to(dtype), self.normalized_shape, weight, bias, self.eps)
