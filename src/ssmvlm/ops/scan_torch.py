"""The selective scan in plain PyTorch, chunked: a few whole-tensor passes instead of a loop over steps.

The recurrence h_t = exp(Δ_t·A)·h_{t-1} + Δ_t·B_t·u_t is solved per chunk of ``chunk_size`` steps in log
space: with c_t the running sum of Δ·A inside the chunk, h_t = exp(c_t)·Σ_{s≤t} exp(−c_s)·x_s, one
``cumsum``. That is exact arithmetic but needs |c| small enough for exp to stay finite, so each call checks
the chunk sums and, where they are too large, solves the chunk with a log-depth doubling scan on the
decays themselves (products of numbers ≤ 1, always stable). Chunks are then joined by a doubling scan over
the chunk-end states. Autograd differentiates through all of it.

The scan runs in float32 (float64 for float64 inputs); float32 has the tighter range limit and shorter chunks.

Inference on a CPU (no autograd graph) has a path of its own: the same arithmetic in fewer, cheaper passes
over (batch, channels, N, L), each choice measured on a 2-core CPU.

- Blocks of channels, each done before the next starts, in three work tensors kept per thread from one call
  to the next: fresh multi-MB tensors cost page faults that take as long as the arithmetic on them.
- The chunk length is chosen per block from the running sums of Δ, halved from ``chunk_size`` until the
  log-space range fits; only a block where single steps overflow takes the general path.
- Running sums inside a chunk are a matrix product with a triangle of ones (BLAS runs it about twice as fast
  as ``cumsum``); decays are exp2 of A·log2(e)·ΣΔ (exp2 is about 1.7× cheaper than exp).
- Chunk ends are joined in float64 as P·cumsum(x/P), P the running product of the chunk decays, wherever P
  stays in range (else by the doubling scan), and y = Σ_n C·h is summed into y one state at a time.

Under autograd the intermediates are kept for the backward anyway, and blocks only add overhead (measured);
on a GPU one launch over everything is better. Both take the general path above, except CPU training steps with
enough states a step, which take the step loop with a hand-written backward of ``scan_sequential`` (unless a
``chunk_size`` is asked for).
"""

from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F

from ssmvlm.ops.scan_reference import compute_dtype, group_count, prepare_delta
from ssmvlm.ops.scan_sequential import selective_scan_sequential, softplus, use_sequential

# Largest |running sum of Δ·A| inside a chunk for which exp(±sum) and products of them stay finite.
_LOG_SPACE_LIMIT = {torch.float64: 600.0, torch.float32: 60.0}
_CHUNK_SIZE = {torch.float64: 32, torch.float32: 16}
# batch x channels x N x L per block of a CPU inference call, whose three float32 work tensors then take 12 MB:
# smaller blocks were slower (some 40 small ops per block), larger ones too (out of the cache)
_CPU_BLOCK_ELEMENTS = 2**20
_MAX_CPU_BLOCKS = 64  # fewer, larger blocks beyond this: Python overhead per block outweighs the cache
_WORKSPACE_MAX_BYTES = 32 * 2**20  # three float64 work tensors of a default block: 24 MB


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
        sums = _pad_end(log_decay, pad).unflatten(-1, (-1, chunk_size)).sum(-1)
        if decay_scale is not None:
            sums = sums * decay_scale
        return float(-sums.min())


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
    tensors = (u, delta, A, B, C, D, z, delta_bias)
    recording = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    if recording and chunk_size is None and use_sequential(u.device, u.shape[0] * u.shape[1] * A.shape[1]):
        return selective_scan_sequential(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if recording or u.device.type != "cpu":
        return _scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, chunk_size)
    return _scan_cpu_inference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, chunk_size)


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
    groups = group_count(B, C)
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


def _scan_cpu_inference(
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
    """The scan for CPU inference, a block of channels at a time (see the module docstring)."""
    scan_dtype = compute_dtype(u, delta, A)
    batch, dim, length = u.shape
    n_state = A.shape[1]
    groups = group_count(B, C)
    per_group = dim // groups
    block = _channel_block(u, per_group, n_state, recording=False)
    # a block is all channels or lies inside one group (of the finest grouping B and C share)
    block_groups, block_per_group = (groups, per_group) if block == dim else (1, block)
    limit = _LOG_SPACE_LIMIT[scan_dtype]
    chunk_max = chunk_size or _CHUNK_SIZE[scan_dtype]
    log2_decay = (A.double() * math.log2(math.e)).to(scan_dtype)  # rounded once, from the float64 product
    a_max = A.to(scan_dtype).abs().amax(1)
    padded = length + (-length) % chunk_max
    work = _WORKSPACE.tensors(3, batch * block * n_state * padded, scan_dtype)
    y = u.new_empty(batch, dim, length, dtype=scan_dtype)
    last = u.new_empty(batch, dim, n_state, dtype=scan_dtype) if return_last_state else None

    for start in range(0, dim, block):
        blk = slice(start, start + block)
        y_blk = y[:, blk]
        # Δ of the block, in the decays' space until they are computed
        delta_c = work[0][: batch * block * length].view(batch, block, length)
        if delta_bias is None:
            delta_c.copy_(delta[:, blk])
        else:
            torch.add(delta[:, blk], delta_bias[blk, None].to(scan_dtype), out=delta_c)
        if delta_softplus:
            delta_c.copy_(softplus(delta_c))  # not F.softplus: its CPU kernel takes 4× the scan (scan_sequential)
        chunk, running = _running_sums(delta_c, a_max[blk], chunk_max, limit, delta_softplus, space=work[1])
        if chunk == 0:  # one step's |Δ·A| is beyond exp's range: the doubling scan on the decays themselves
            bc = _block_bc(B, start, start + block, dim), _block_bc(C, start, start + block, dim)
            d_blk = None if D is None else D[blk]
            bias = None if delta_bias is None else delta_bias[blk]
            out, last_blk = _scan(
                u[:, blk], delta[:, blk], A[blk], *bc, d_blk, None, bias, delta_softplus, True, chunk_size
            )
            y_blk.copy_(out)
        else:
            u_c = u[:, blk].to(scan_dtype)
            pad = (-length) % chunk
            chunks = (length + pad) // chunk
            per_step = (batch, block_groups, block_per_group, 1, chunks, chunk)
            full = (batch, block_groups, block_per_group, n_state, chunks, chunk)
            x = work[2][: math.prod(per_step)].view(per_step)  # in the states' space, free until they are summed
            torch.mul(_pad_end(delta_c, pad).view(per_step), _pad_end(u_c, pad).reshape(per_step), out=x)
            decay, product, states = (w[: math.prod(full)].view(full) for w in work)
            scale = log2_decay[blk].view(1, block_groups, block_per_group, n_state, 1, 1)
            torch.mul(running.view(per_step), scale, out=decay).exp2_()  # running is in the products' space
            chunk_decay = (running[..., -1:].view(per_step[:-1]) * scale[..., 0]).exp2_()  # = decay[..., -1]
            torch.mul(x, _block_bc_view(B, start, dim, full, pad, scan_dtype), out=product).div_(decay)
            _sums_within_chunks(product, out=states)
            ends = _join_chunks(chunk_decay, chunk_decay * states[..., -1])  # the state at each chunk's end
            states.add_(F.pad(ends[..., :-1], (1, 0)).unsqueeze(-1))

            decay.mul_(_block_bc_view(C, start, dim, full, pad, scan_dtype))
            if pad:
                y_blk.copy_(decay.mul_(states).sum(3).view(batch, block, -1)[..., :length])
            else:  # y = Σ_n C·decay·states, one state at a time into y: no (…, N, L) product tensor
                y_view = y_blk.view(per_step)
                torch.mul(decay[:, :, :, :1], states[:, :, :, :1], out=y_view)
                for n in range(1, n_state):
                    y_view.addcmul_(decay[:, :, :, n : n + 1], states[:, :, :, n : n + 1])
            if D is not None:
                y_blk.addcmul_(u_c, D[blk].to(scan_dtype)[:, None])
            last_blk = ends[..., -1].reshape(batch, block, n_state)
        if z is not None:
            gate = work[1][: batch * block * length].view(batch, block, length)
            y_blk.mul_(F.silu(gate.copy_(z[:, blk]), inplace=True))
        if last is not None:
            last[:, blk] = last_blk
    y = y.to(u.dtype)
    return (y, last) if return_last_state else y


class _Workspace(threading.local):
    """Work memory of CPU inference scans, kept per thread from one call to the next.

    Fresh multi-MB tensors cost a page fault per 4 kB page at first touch (about 2 µs each here, as long as the
    scan's arithmetic on them) whenever the allocator has given the memory back to the system, which glibc
    does after a call's tensors are freed. Memory over ``_WORKSPACE_MAX_BYTES`` is not kept.
    """

    def __init__(self) -> None:
        self.buffer = torch.empty(0, dtype=torch.uint8)

    def tensors(self, count: int, numel: int, dtype: torch.dtype) -> list[torch.Tensor]:
        """``count`` 1-d tensors of ``numel`` elements, valid until the next call on this thread."""
        nbytes = count * numel * dtype.itemsize
        buffer = self.buffer
        if buffer.numel() < nbytes:
            with torch.inference_mode(False):  # a normal tensor serves inside inference mode and outside alike
                buffer = torch.empty(nbytes, dtype=torch.uint8)
            if nbytes <= _WORKSPACE_MAX_BYTES:
                self.buffer = buffer
        return list(buffer[:nbytes].view(dtype).view(count, numel))


_WORKSPACE = _Workspace()


def _pad_end(t: torch.Tensor, pad: int) -> torch.Tensor:
    """``t`` with ``pad`` zeros appended along the last axis; ``t`` itself (no copy) when there are none."""
    return F.pad(t, (0, pad)) if pad else t


def _running_sums(
    delta: torch.Tensor, a_max: torch.Tensor, chunk: int, limit: float, nonnegative: bool, space: torch.Tensor
) -> tuple[int, torch.Tensor]:
    """Running sums of Δ (batch, channels, L) inside chunks, as (batch, channels, chunks, chunk) in ``space``,
    for the longest chunk (``chunk`` halved as often as needed) where max|A|·|running sum| stays within
    ``limit``; chunk 0 (and an empty tensor) when not even single steps do. ``nonnegative``: Δ ≥ 0 (softplus)."""
    batch, channels, length = delta.shape
    while chunk:
        pad = (-length) % chunk
        running = space[: batch * channels * (length + pad)].view(batch, channels, -1, chunk)
        _sums_within_chunks(_pad_end(delta, pad).reshape(running.shape), out=running)
        # the largest |running sum| per channel: at a chunk's end where Δ ≥ 0
        reach = (running[..., -1:] if nonnegative else running.abs()).amax((0, 2, 3))
        if float((reach * a_max).max()) <= limit:
            return chunk, running
        chunk //= 2
    return 0, space[:0]


def _sums_within_chunks(x: torch.Tensor, *, out: torch.Tensor) -> None:
    """Running sums of ``x`` along its last axis (one chunk) into contiguous ``out``, as x @ triu(ones).

    The product is exact whenever float32 matrix products are (the default); where the user let them round
    through bfloat16 or TF32, ``cumsum`` keeps the scan's accuracy instead.
    """
    chunk = x.shape[-1]
    if x.dtype == torch.float64 or torch.backends.mkldnn.matmul.fp32_precision in ("none", "ieee"):
        triangle = torch.ones(chunk, chunk, dtype=x.dtype, device=x.device).triu()
        torch.mm(x.reshape(-1, chunk), triangle, out=out.view(-1, chunk))
    else:
        torch.cumsum(x, -1, out=out)


def _join_chunks(decay: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """s_k = decay_k·s_{k-1} + x_k along the last axis (the chunk ends), s_{-1} = 0, from contiguous tensors.

    Usually as s = P·cumsum(x / P) with P the running product of the decays, in float64: three native scans,
    where the log-depth doubling scan takes a dozen ops on small strided slices (measured 2-4× slower). P
    leaves float64's range only when Σ|Δ·A| over the whole sequence passes about 550; then the doubling scan.
    """
    total = decay.double().cumprod(-1)
    low, high = torch.aminmax(total)
    if low > 2.0**-800 and high < 2.0**800:  # x/P and P·Σ stay finite
        return (total * (x.double() / total).cumsum(-1)).to(x.dtype)
    length = x.shape[-1]
    step = 1
    while step < length:  # in place; the right-hand sides are new tensors, so the slices read old values
        x[..., step:] += decay[..., step:] * x[..., :-step]
        if 2 * step < length:
            decay[..., step:] = decay[..., step:] * decay[..., :-step]
        step *= 2
    return x


def _block_bc_view(
    bc: torch.Tensor, start: int, dim: int, full: tuple[int, ...], pad: int, dtype: torch.dtype
) -> torch.Tensor:
    """B or C for the block of channels from ``start``, broadcasting against ``full`` (batch, groups, per_group,
    N, chunks, chunk)."""
    _, groups, per_group, n_state, chunks, chunk = full
    fixed = bc.dim() == 2
    if groups == 1:  # the block lies in one of the finest groups, so in one of bc's
        bc = _block_bc(bc, start, start + per_group, dim)
    grouped = _as_grouped(bc, groups, per_group, dtype)  # (·, groups, per_group or 1, N, L or 1)
    if fixed:
        return grouped.unsqueeze(-1)
    return _pad_end(grouped, pad).reshape(*grouped.shape[:2], 1, n_state, chunks, chunk)
