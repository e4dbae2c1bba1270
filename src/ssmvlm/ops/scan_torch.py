"""The selective scan in plain PyTorch, chunked: a few whole-tensor passes instead of a loop over steps.

The recurrence h_t = exp(Δ_t·A)·h_{t-1} + Δ_t·B_t·u_t is solved per chunk of ``chunk_size`` steps in log
space: with c_t the running sum of Δ·A inside the chunk, h_t = exp(c_t)·Σ_{s≤t} exp(−c_s)·x_s, one
``cumsum``. That is exact arithmetic but needs |c| small enough for exp to stay finite, so each call checks
the chunk sums and, where they are too large, solves the chunk with a log-depth doubling scan on the
decays themselves (products of numbers ≤ 1, always stable). Chunks are then joined by a doubling scan over
the chunk-end states. Autograd differentiates through all of it.

The scan runs in float32 (float64 for float64 inputs); float32 has the tighter range limit and shorter chunks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ssmvlm.ops.scan_reference import compute_dtype, prepare_delta

# Largest |running sum of Δ·A| inside a chunk for which exp(±sum) and products of them stay finite.
_LOG_SPACE_LIMIT = {torch.float64: 600.0, torch.float32: 60.0}
_CHUNK_SIZE = {torch.float64: 32, torch.float32: 16}


def doubling_scan(decay: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """h_t = decay_t·h_{t-1} + x_t along the last axis in log2(L) passes; returns (h, cumulative decay)."""
    length = x.shape[-1]
    step = 1
    while step < length:
        x = x + decay * F.pad(x[..., :-step], (step, 0))
        decay = decay * F.pad(decay[..., :-step], (step, 0), value=1.0)
        step *= 2
    return x, decay


def chunked_linear_scan(log_decay: torch.Tensor, x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """h_t = exp(log_decay_t)·h_{t-1} + x_t along the last axis, h_{-1} = 0 (same shapes in and out)."""
    length = x.shape[-1]
    pad = (-length) % chunk_size
    if pad:  # padded steps keep the state (decay 1, input 0) and are cut off again below
        log_decay = F.pad(log_decay, (0, pad))
        x = F.pad(x, (0, pad))
    chunks = x.shape[-1] // chunk_size
    log_decay = log_decay.unflatten(-1, (chunks, chunk_size))
    x = x.unflatten(-1, (chunks, chunk_size))

    running = log_decay.cumsum(-1)
    low, high = torch.aminmax(running)
    if bool(torch.maximum(-low, high) <= _LOG_SPACE_LIMIT[running.dtype]):
        decay_from_start = running.exp()
        local = decay_from_start * (x / decay_from_start).cumsum(-1)
    else:
        local, decay_from_start = doubling_scan(log_decay.exp(), x)

    if chunks > 1:
        chunk_ends, _ = doubling_scan(decay_from_start[..., -1], local[..., -1])
        chunk_starts = F.pad(chunk_ends[..., :-1], (1, 0))
        local = local + decay_from_start * chunk_starts.unsqueeze(-1)
    return local.flatten(-2)[..., :length]


def _group_count(*bcs: torch.Tensor) -> int:
    groups = 1
    for bc in bcs:
        if bc.dim() == 4:
            groups = math.lcm(groups, bc.shape[1])
    return groups


def _as_grouped(bc: torch.Tensor, groups: int, per_group: int, dtype: torch.dtype) -> torch.Tensor:
    """B or C as a tensor that broadcasts against (batch, groups, per_group, N, L)."""
    bc = bc.to(dtype)
    if bc.dim() == 2:
        return bc.view(1, groups, per_group, bc.shape[1], 1)
    if bc.dim() == 3:
        return bc[:, None, None]
    return bc.repeat_interleave(groups // bc.shape[1], dim=1)[:, :, None]


def selective_scan_torch(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """mamba-ssm ``selective_scan_ref`` semantics, computed chunk-parallel (see the module docstring)."""
    dtype_in = u.dtype
    scan_dtype = compute_dtype(u, delta, A)
    batch, dim, length = u.shape
    n_state = A.shape[1]
    groups = _group_count(B, C)
    per_group = dim // groups
    grouped_shape = (batch, groups, per_group, 1, length)

    u_c = u.to(scan_dtype)
    delta_c = prepare_delta(delta, delta_bias, delta_softplus, scan_dtype).view(grouped_shape)
    A_c = A.to(scan_dtype).view(1, groups, per_group, n_state, 1)
    B_c = _as_grouped(B, groups, per_group, scan_dtype)
    C_c = _as_grouped(C, groups, per_group, scan_dtype)

    states = chunked_linear_scan(
        (delta_c * A_c).expand(batch, groups, per_group, n_state, length),
        (delta_c * u_c.view(grouped_shape)) * B_c,
        chunk_size or _CHUNK_SIZE[scan_dtype],
    )
    y = (states * C_c).sum(3).reshape(batch, dim, length)
    if D is not None:
        y = y + u_c * D.to(scan_dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(scan_dtype))
    y = y.to(dtype_in)
    if not return_last_state:
        return y
    return y, states[..., -1].reshape(batch, dim, n_state)
