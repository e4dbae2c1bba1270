"""LayerNorm over the last axis as one Triton kernel, forward only (imported only where Triton exists).

A program normalises a block of rows at once (BLOCK_R rows × BLOCK_C channels in registers, float32 math,
float32 weights), reading the input in its own dtype and writing the requested one.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ssmvlm.ops.triton_launch import CachedLaunch

_TILE_ELEMENTS = 4096  # rows per program: this many elements (fp32) in flight per tile


@triton.jit
def _layer_norm_fwd_kernel(x_ptr, weight_ptr, bias_ptr, y_ptr, rows, cols, x_row_stride, eps,
                           HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
                           BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    row = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]
    col = tl.arange(0, BLOCK_C)[None, :]
    mask_c = col < cols
    mask = (row < rows) & mask_c
    x = tl.load(x_ptr + row.to(tl.int64) * x_row_stride + col, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1)[:, None] / cols
    centred = tl.where(mask, x - mean, 0.0)
    y = centred * tl.rsqrt(tl.sum(centred * centred, axis=1)[:, None] / cols + eps)
    if HAS_WEIGHT:
        y *= tl.load(weight_ptr + col, mask=mask_c, other=0.0).to(tl.float32)
    if HAS_BIAS:
        y += tl.load(bias_ptr + col, mask=mask_c, other=0.0).to(tl.float32)
    tl.store(y_ptr + row.to(tl.int64) * cols + col, y.to(y_ptr.dtype.element_ty), mask=mask)


_launch_layer_norm = CachedLaunch(_layer_norm_fwd_kernel)


def layer_norm_triton(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float, out_dtype: torch.dtype
) -> torch.Tensor:
    """LayerNorm of x over its last axis, stored as ``out_dtype`` (no autograd)."""
    cols = x.shape[-1]
    rows_view = x.reshape(-1, cols)
    if rows_view.stride(1) != 1:
        rows_view = rows_view.contiguous()
    rows = rows_view.shape[0]
    out = torch.empty(x.shape, device=x.device, dtype=out_dtype)
    block_c = triton.next_power_of_2(cols)
    block_r = max(1, min(_TILE_ELEMENTS // block_c, triton.next_power_of_2(rows)))
    _launch_layer_norm(
        (-(-rows // block_r),), rows_view, weight if weight is not None else rows_view,
        bias if bias is not None else rows_view, out, rows, cols, rows_view.stride(0), eps,
        HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, BLOCK_R=block_r, BLOCK_C=block_c,
        num_warps=4 if block_r * block_c <= 2048 else 8,
    )
    return out
