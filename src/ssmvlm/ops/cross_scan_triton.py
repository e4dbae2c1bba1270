"""Fused cross-scan / cross-merge for CUDA: one read and four writes (or four reads and one write).

Each program owns an (BLOCK_H × BLOCK_W) tile of one (batch, channel) map. The row-major order and its
reverse are written from the tile as loaded; the column-major order and its reverse from the same registers,
so the transposition costs no extra pass over memory. Each op's backward is the other op (they are adjoint).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_BLOCK = 32


@triton.jit
def _tile_positions(pid_h, pid_w, height, width, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    h = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]
    w = pid_w * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]
    return h * width + w, w * height + h, (h < height) & (w < width)


@triton.jit
def _cross_scan_kernel(x_ptr, out_ptr, channels, height, width,
                       BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    plane = tl.program_id(0)  # batch * channels + channel
    row_major, col_major, mask = _tile_positions(tl.program_id(1), tl.program_id(2), height, width,
                                                 BLOCK_H, BLOCK_W)
    length = height * width
    batch = plane // channels
    channel = plane % channels
    tile = tl.load(x_ptr + plane * length + row_major, mask=mask)
    direction = (batch * 4 * channels + channel) * length  # offset of (batch, 0, channel)
    stride = channels * length
    tl.store(out_ptr + direction + row_major, tile, mask=mask)
    tl.store(out_ptr + direction + stride + col_major, tile, mask=mask)
    tl.store(out_ptr + direction + 2 * stride + (length - 1 - row_major), tile, mask=mask)
    tl.store(out_ptr + direction + 3 * stride + (length - 1 - col_major), tile, mask=mask)


@triton.jit
def _cross_merge_kernel(y_ptr, out_ptr, channels, height, width,
                        BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, ACC_DTYPE: tl.constexpr):
    plane = tl.program_id(0)
    row_major, col_major, mask = _tile_positions(tl.program_id(1), tl.program_id(2), height, width,
                                                 BLOCK_H, BLOCK_W)
    length = height * width
    batch = plane // channels
    channel = plane % channels
    direction = (batch * 4 * channels + channel) * length
    stride = channels * length
    total = tl.load(y_ptr + direction + row_major, mask=mask).to(ACC_DTYPE)
    total += tl.load(y_ptr + direction + stride + col_major, mask=mask).to(ACC_DTYPE)
    total += tl.load(y_ptr + direction + 2 * stride + (length - 1 - row_major), mask=mask).to(ACC_DTYPE)
    total += tl.load(y_ptr + direction + 3 * stride + (length - 1 - col_major), mask=mask).to(ACC_DTYPE)
    tl.store(out_ptr + plane * length + row_major, total.to(out_ptr.dtype.element_ty), mask=mask)


def _grid(batch: int, channels: int, height: int, width: int) -> tuple[int, int, int]:
    return (batch * channels, triton.cdiv(height, _BLOCK), triton.cdiv(width, _BLOCK))


def _scan(x: torch.Tensor) -> torch.Tensor:
    batch, channels, height, width = x.shape
    x = x.contiguous()
    out = torch.empty(batch, 4, channels, height * width, device=x.device, dtype=x.dtype)
    _cross_scan_kernel[_grid(batch, channels, height, width)](
        x, out, channels, height, width, BLOCK_H=_BLOCK, BLOCK_W=_BLOCK)
    return out


def _merge(y: torch.Tensor, height: int, width: int) -> torch.Tensor:
    batch, _, channels, length = y.shape
    y = y.contiguous()
    out = torch.empty(batch, channels, length, device=y.device, dtype=y.dtype)
    _cross_merge_kernel[_grid(batch, channels, height, width)](
        y, out, channels, height, width, BLOCK_H=_BLOCK, BLOCK_W=_BLOCK,
        ACC_DTYPE=tl.float64 if y.dtype == torch.float64 else tl.float32)
    return out


class CrossScanFused(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.hw = x.shape[2:]
        return _scan(x)

    @staticmethod
    def backward(ctx, grad):
        height, width = ctx.hw
        return _merge(grad, height, width).view(grad.shape[0], grad.shape[2], height, width)


class CrossMergeFused(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, height, width):
        ctx.hw = (height, width)
        return _merge(y, height, width)

    @staticmethod
    def backward(ctx, grad):
        height, width = ctx.hw
        return _scan(grad.view(grad.shape[0], grad.shape[1], height, width)), None, None
