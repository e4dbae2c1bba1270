"""The selective scan in plain PyTorch, chunked: a few whole-tensor passes instead of a loop over steps.

The recurrence h_t = exp(Δ_t·A)·h_{t-1} + Δ_t·B_t·u_t is solved per chunk of ``chunk_size`` steps in log
space: with c_t the running sum of Δ·A inside the chunk, h_t = exp(c_t)·Σ_{s≤t} exp(−c_s)·x_s, one
``cumsum``. That is exact arithmetic but needs |c| small enough for exp to stay finite, so each call checks
the chunk sums and, where they are too large, solves the chunk with a log-depth doubling scan on the
decays themselves (products of numbers ≤ 1, always stable). Chunks are then joined by a doubling scan over
the chunk-end states. Autograd differentiates through all of it.

The scan runs in float32 (float64 for float64 inputs); float32 has the tighter range limit and shorter chunks.

On a CPU those dozen whole-tensor passes over (batch, channels, N, L) are bound by memory traffic, so an
inference call (no autograd graph) scans a block of channels at a time, each block's passes staying in cache.
Under autograd the intermediates are kept for the backward anyway, and blocks only add overhead (measured);
on a GPU one launch over everything is better.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ssmvlm.ops.scan_reference import compute_dtype, prepare_delta

# Largest |running sum of Δ·A| inside a chunk for which exp(±sum) and products of them stay finite.
_LOG_SPACE_LIMIT = {torch.float64: 600.0, torch.float32: 60.0}
_CHUNK_SIZE = {torch.float64: 32, torch.float32: 16}
_CPU_BLOCK_ELEMENTS = 2**19  # batch x channels x N x L per block: 2 MB of float32, about what a core caches
_MAX_CPU_BLOCKS = 64  # fewer, larger blocks beyond this: Python overhead per block outweighs the cache


def doubling_scan(decay: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """h_t = decay_t·h_{t-1} + x_t along the last axis in log2(L) passes; returns (h, cumulative decay)."""
    length = x.shape[-1]
    step = 1
    while step < length:  # the first `step` entries are final; the rest take in the entry `step` back
        x = torch.cat([x[..., :step], torch.addcmul(x[..., step:], decay[..., step:], x[..., :-step])], dim=-1)
        decay = torch.cat([decay[..., :step], decay[..., step:] * decay[..., :-step]], dim=-1)
        step *= 2
    return x, decay


def chunked_linear_scan(
    log_decay: torch.Tensor,
    x: torch.Tensor,
    chunk_size: int,
    *,
    decay_scale: torch.Tensor | None = None,
    nonpositive: bool = False,
) -> torch.Tensor:
    """h_t = exp(a_t)·h_{t-1} + x_t along the last axis, h_{-1} = 0; returns h with x's shape.

    a_t is ``log_decay`` broadcast to x, times ``decay_scale`` when given (size 1 along the last axis): the
    selective scan passes Δ and A apart, so the running sum is one cumsum over Δ instead of over Δ·A for every
    state. ``nonpositive``: the caller guarantees a_t <= 0 (Δ >= 0, A <= 0); each chunk's running sum is then
    largest in magnitude at its end, so the range is known from the chunk sums alone, and chunks are halved
    until the log-space path fits (cheaper than the doubling fallback inside the chunk).
    """
    length = x.shape[-1]
    limit = _LOG_SPACE_LIMIT[x.dtype]
    if nonpositive:
        while chunk_size > 1 and _largest_chunk_sum(log_decay, decay_scale, chunk_size) > limit:
            chunk_size //= 2
    pad = (-length) % chunk_size
    if pad:  # padded steps keep the state (decay 1, input 0) and are cut off again below
        log_decay = F.pad(log_decay, (0, pad))
        x = F.pad(x, (0, pad))
    chunks = x.shape[-1] // chunk_size
    log_decay = log_decay.unflatten(-1, (chunks, chunk_size))
    x = x.unflatten(-1, (chunks, chunk_size))
    if decay_scale is not None:
        decay_scale = decay_scale.unsqueeze(-1)

    running = log_decay.cumsum(-1)
    if decay_scale is not None:
        running = running * decay_scale
    running = running.expand_as(x)
    if nonpositive:  # the halving above left chunk_size > 1 only where the range fits
        fits = chunk_size > 1
    else:
        low, high = torch.aminmax(running)
        fits = chunk_size > 1 and bool(torch.maximum(-low, high) <= limit)
    if fits:
        decay_from_start = running.exp()
        local = decay_from_start * (x / decay_from_start).cumsum(-1)
    else:
        step_decay = (log_decay if decay_scale is None else log_decay * decay_scale).exp().expand_as(x)
        local, decay_from_start = doubling_scan(step_decay, x)

    if chunks > 1:
        chunk_ends, _ = doubling_scan(decay_from_start[..., -1], local[..., -1])
        chunk_starts = F.pad(chunk_ends[..., :-1], (1, 0))
        local = torch.addcmul(local, decay_from_start, chunk_starts.unsqueeze(-1))
    return local.flatten(-2)[..., :length]


def _largest_chunk_sum(log_decay: torch.Tensor, decay_scale: torch.Tensor | None, chunk_size: int) -> float:
    """max |sum of a_t over a chunk| for nonpositive a_t, computed on the chunk sums only."""
    with torch.no_grad():
        pad = (-log_decay.shape[-1]) % chunk_size
        sums = F.pad(log_decay, (0, pad)).unflatten(-1, (-1, chunk_size)).sum(-1)
        if decay_scale is not None:
            sums = sums * decay_scale
        return float(-sums.min())


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


def _channel_block(u: torch.Tensor, per_group: int, n_state: int, recording: bool) -> int:
    """Channels per block: all of them on a GPU, under autograd or when small, else a divisor of ``per_group``."""
    batch, dim, length = u.shape
    per_channel = batch * n_state * length
    if recording or u.device.type != "cpu" or dim * per_channel <= _CPU_BLOCK_ELEMENTS:
        return dim
    wanted = max(_CPU_BLOCK_ELEMENTS // per_channel, -(-dim // _MAX_CPU_BLOCKS))
    return max(d for d in range(1, min(wanted, per_group) + 1) if per_group % d == 0)


def _block_bc(bc: torch.Tensor, start: int, stop: int, dim: int) -> torch.Tensor:
    """B or C for channels [start, stop); a block never straddles one of its groups."""
    if bc.dim() == 2:  # fixed (dim, N)
        return bc[start:stop]
    if bc.dim() == 3:  # variable (batch, N, L): shared by every channel
        return bc
    group = start // (dim // bc.shape[1])
    return bc[:, group : group + 1]


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
    dim = u.shape[1]
    tensors = (u, delta, A, B, C, D, z, delta_bias)
    recording = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    block = _channel_block(u, dim // _group_count(B, C), A.shape[1], recording)
    if block == dim:
        return _scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, chunk_size)
    outputs, last_states = [], []
    for start in range(0, dim, block):
        stop = start + block
        out = _scan(
            u[:, start:stop],
            delta[:, start:stop],
            A[start:stop],
            _block_bc(B, start, stop, dim),
            _block_bc(C, start, stop, dim),
            None if D is None else D[start:stop],
            None if z is None else z[:, start:stop],
            None if delta_bias is None else delta_bias[start:stop],
            delta_softplus,
            return_last_state,
            chunk_size,
        )
        if return_last_state:
            out, last = out
            last_states.append(last)
        outputs.append(out)
    y = torch.cat(outputs, dim=1)
    return (y, torch.cat(last_states, dim=1)) if return_last_state else y


def _scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
    return_last_state: bool,
    chunk_size: int | None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
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
        delta_c,
        (delta_c * u_c.view(grouped_shape)) * B_c,
        chunk_size or _CHUNK_SIZE[scan_dtype],
        decay_scale=A_c,
        nonpositive=bool((A_c <= 0).all()) and (delta_softplus or bool((delta_c >= 0).all())),
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
