"""VMamba's SS2D cross-scan: four scan orders of a 2-D map, and the merge that sums them back.

``cross_scan``: (B, C, H, W) → (B, 4, C, H·W) in the orders row-major, column-major, reversed row-major,
reversed column-major. ``cross_merge``: (B, 4, C, H·W) → (B, C, H·W), mapping each order back to row-major
and summing. The two are adjoint (each one's backward is the other). On CUDA with Triton, ``cross_merge``
runs a fused kernel (one pass; 1.6–4× faster than the tensor ops on an H100), while ``cross_scan`` keeps
the tensor ops, which were as fast or faster there except at 14×14 (``benchmarks/notes_scan.md``).
``fused=True/False`` forces either path.
"""

from __future__ import annotations

import torch


def _fused_available(t: torch.Tensor) -> bool:
    if not t.is_cuda:
        return False
    try:
        import ssmvlm.ops.cross_scan_triton  # noqa: F401
    except ImportError:
        return False
    return True


def cross_scan(x: torch.Tensor, *, fused: bool = False) -> torch.Tensor:
    """(B, C, H, W) → (B, 4, C, H·W); ``fused=True`` uses the Triton kernel (CUDA only)."""
    if fused:
        from ssmvlm.ops.cross_scan_triton import CrossScanFused

        return CrossScanFused.apply(x)
    batch, channels, height, width = x.shape
    row_major = x.flatten(2)
    col_major = x.transpose(2, 3).flatten(2)
    forward = torch.stack([row_major, col_major], dim=1)
    return torch.cat([forward, forward.flip(-1)], dim=1).view(batch, 4, channels, height * width)


def cross_merge(y: torch.Tensor, height: int, width: int, *, fused: bool | None = None) -> torch.Tensor:
    """(B, 4, C, H·W) → (B, C, H·W), the sum of the four orders mapped back to row-major.

    ``fused=None`` uses the Triton kernel on CUDA when Triton imports; True forces it, False forbids it.
    """
    batch, directions, channels, length = y.shape
    if directions != 4 or length != height * width:
        raise ValueError(f"cross_merge expects (B, 4, C, {height}*{width}); got {tuple(y.shape)}")
    if fused if fused is not None else _fused_available(y):
        from ssmvlm.ops.cross_scan_triton import CrossMergeFused

        return CrossMergeFused.apply(y, height, width)
    row = y[:, 0] + y[:, 2].flip(-1)
    col = y[:, 1] + y[:, 3].flip(-1)
    col = col.view(batch, channels, width, height).transpose(2, 3).reshape(batch, channels, length)
    return row + col
