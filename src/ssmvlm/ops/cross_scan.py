"""VMamba's SS2D cross-scan: four scan orders of a 2-D map, and the merge that sums them back.

``cross_scan``: (B, C, H, W) → (B, 4, C, H·W) in the orders row-major, column-major, reversed row-major,
reversed column-major. ``cross_merge``: (B, 4, C, H, W)-shaped sequences (B, 4, C, H·W) → (B, C, H·W),
mapping each order back to row-major and summing. Both are plain differentiable tensor ops.
"""

from __future__ import annotations

import torch


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    batch, channels, height, width = x.shape
    row_major = x.flatten(2)
    col_major = x.transpose(2, 3).flatten(2)
    forward = torch.stack([row_major, col_major], dim=1)
    return torch.cat([forward, forward.flip(-1)], dim=1).view(batch, 4, channels, height * width)


def cross_merge(y: torch.Tensor, height: int, width: int) -> torch.Tensor:
    batch, directions, channels, length = y.shape
    if directions != 4 or length != height * width:
        raise ValueError(f"cross_merge expects (B, 4, C, {height}*{width}); got {tuple(y.shape)}")
    row = y[:, 0] + y[:, 2].flip(-1)
    col = y[:, 1] + y[:, 3].flip(-1)
    col = col.view(batch, channels, width, height).transpose(2, 3).reshape(batch, channels, length)
    return row + col
