"""The selective scan as fused Triton kernels, forward and backward (imported only where Triton exists).

One program owns a block of BLOCK_D channels of one batch row and walks L in tiles of BLOCK_L steps, as
mamba's CUDA kernel does: the tile's u and Δ are loaded once, then the N states are visited one after
another, each a linear recurrence h_t = a_t·h_{t-1} + x_t over the tile computed by ``tl.associative_scan``
over (a, x) pairs (in one-channel, one-warp programs on aligned rows: per run of steps a thread holds, then
over the runs, ``_scan_tile``), its output contribution C_t·h_t summed into the tile's y. The state at each
tile's end is carried to the next tile in a (BLOCK_D, N) register block. Tiles are 2-D (channels × steps)
whatever N is; what N = 16 costs, and why, is in benchmarks/notes_scan.md. Everything is computed in float32
from inputs of any float dtype; the output is stored in the input dtype. Where a small batch of long sequences
leaves too few programs, L is split into segments scanned in parallel (two passes, see ``launch_config``); at
inference Δ may come as a :class:`LowRankDelta`, projected per tile inside the kernel (or first written out by
one GEMM, see MATERIALIZE_DELTA_RANK), and u as :class:`MirroredRows`, whose second half is read backwards.

The forward saves, only when a gradient is needed, the state at the start of every tile, or of every shorter tile
the backward walks (the checkpoints), and, with z, the output before gating. The backward walks the tiles in
reverse: per state it recomputes the tile's states from its checkpoint, runs the adjoint recurrence λ_t =
a_{t+1}·λ_{t+1} + C_t·g_t as a reverse scan (carrying λ between tiles, starting from the last state's gradient;
``_reverse_scan``), and forms every input gradient in the same pass. Gradients that sum over programs (A's, D's,
the Δ bias's and fixed B/C's over batch rows, variable B/C's over channel blocks) are added atomically into zeroed
buffers, or, under ``torch.use_deterministic_algorithms(True)``, written per batch row or channel block for torch
to sum (deterministic).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ssmvlm.ops.low_rank_delta import LowRankDelta
from ssmvlm.ops.mirrored_rows import MirroredRows
from ssmvlm.ops.triton_launch import CachedLaunch

# Offsets are int32 inside the kernels.
_MAX_ELEMENTS = 2**31 - 1
LOG2_E = tl.constexpr(1.4426950408889634)  # exp(Δ·A) = exp2(Δ·A·log2 e)
# One-warp programs need this many times the programs that keep larger blocks busy (4 per SM of 2-8 warps);
# where L is split to make them, SPLIT_ONE_WARP_PROGRAMS times (16 beat 8 by 7-8% on 4096² batch-1 parts).
ONE_WARP_PROGRAMS = 8
SPLIT_ONE_WARP_PROGRAMS = 16
# A one-channel program reads a low-rank Δ's R input rows at every step, shared with no other channel; from this
# rank on, Δ written and read once (one GEMM) costs less (benchmarks/RESULTS.md, batch-1 VMamba-S at 4096²).
MATERIALIZE_DELTA_RANK = 16
# Launch tiles (BLOCK_D, BLOCK_L, warps) from the H100 sweeps (benchmarks/notes_scan.md), by kind of launch,
# N > 1 and L ≤ 256: training (both passes, the backward's tile length aside), one-warp inference, and inference
# in blocks of several warps.
_TILES = {
    ("training", False, True): (2, 128, 1), ("training", False, False): (1, 256, 1),
    ("training", True, True): (2, 128, 1), ("training", True, False): (1, 512, 1),
    ("one warp", False, True): (4, 128, 1), ("one warp", False, False): (1, 256, 1),
    ("one warp", True, True): (2, 128, 1), ("one warp", True, False): (1, 512, 1),
    ("blocks", False, True): (32, 32, 8), ("blocks", False, False): (8, 128, 8),
    ("blocks", True, True): (16, 32, 4), ("blocks", True, False): (8, 64, 4),
}
# The backward's tile length where it differs from the forward's (checkpoints at the forward's run boundaries).
_BACKWARD_BLOCK_L = {("training", True, False): 256}


@triton.jit
def _combine(a_first, x_first, a_second, x_second):
    return a_first * a_second, a_second * x_first + x_second


@triton.jit
def _softplus(x):
    # As torch's softplus: x itself above 20. log(1 + e) loses every digit when e < 1 ulp of 1; the series
    # is exact to e^3 there.
    e = tl.exp(x)
    small = e * (1.0 - 0.5 * e)
    return tl.where(x > 20.0, x, tl.where(e < 1e-4, small, tl.log(1.0 + e)))


@triton.jit
def _program_tile(dim, n_state, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr):
    """This program's batch row, first channel, channel offsets (BLOCK_D, 1), state and step offsets (1, ·)."""
    batch_id = tl.program_id(1)
    d_start = tl.program_id(0) * BLOCK_D
    offs_d = d_start + tl.arange(0, BLOCK_D)[:, None]
    offs_n = tl.arange(0, BLOCK_N)[None, :]
    offs_t = tl.arange(0, BLOCK_L)[None, :]
    mask_d = offs_d < dim
    mask_dn = mask_d & (offs_n < n_state)
    return batch_id, d_start, offs_d, offs_n, offs_t, mask_d, mask_dn


@triton.jit
def _load_channel(ptr, offs_d, mask_d, HAS: tl.constexpr):
    """A per-channel parameter as (BLOCK_D, 1) float32 (0 when absent)."""
    if HAS:
        values = tl.load(ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    else:
        values = tl.zeros(offs_d.shape, dtype=tl.float32)
    return values


@triton.jit
def _project_delta(inputs_ptr, weight_ptr, offs_d, mask_d, t, mask_t, length,
                   DT_RANK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    """Raw Δ of a tile from its low-rank form: weight (dim, R) times the group's R input rows (stride L)."""
    raw = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)
    for r in tl.static_range(DT_RANK):
        weight = tl.load(weight_ptr + offs_d * DT_RANK + r, mask=mask_d, other=0.0).to(tl.float32)
        raw += weight * tl.load(inputs_ptr + r * length + t, mask=mask_t, other=0.0).to(tl.float32)
    return raw


@triton.jit
def _delta(raw, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """Δ after bias and softplus (0 outside the sequence, so padded steps keep the state); raw Δ + bias."""
    if HAS_BIAS:
        raw = raw + bias
    dt = raw
    if SOFTPLUS:
        dt = _softplus(raw)
    return tl.where(mask, dt, 0.0), raw


@triton.jit
def _load_bc(ptr, offs_d, mask_d, n, t, mask_t, batch_id, group, n_groups, n_state, length,
             VARIABLE: tl.constexpr):
    """State n's B or C as stored (the caller converts): (1, BLOCK_L) over the tile's steps if variable, else
    (BLOCK_D, 1) per channel."""
    if VARIABLE:
        values = tl.load(ptr + ((batch_id * n_groups + group) * n_state + n) * length + t, mask=mask_t, other=0.0)
    else:
        values = tl.load(ptr + offs_d * n_state + n, mask=mask_d, other=0.0)
    return values


@triton.jit
def _load_steps(ptr, t, mask_d, mask_t, length, start, reverse, RUN: tl.constexpr):
    """The tile's steps ``t`` (from ``start``) of the rows at ``ptr`` (BLOCK_D, 1), as float32; where ``reverse``
    (one flag per program) the rows are read backwards, step t at L - 1 - t: in vectors of RUN consecutive steps
    loaded ascending and flipped, which stays within threads (no data moves) when a thread holds RUN consecutive
    steps of the tile; step by step with RUN = 1."""
    if reverse:
        if RUN == 1:
            values = tl.load(ptr + (length - 1 - t), mask=mask_d & mask_t, other=0.0)
        else:
            BLOCK_D: tl.constexpr = ptr.shape[0]
            BLOCK_L: tl.constexpr = t.shape[1]
            # vector r holds steps start + RUN·r + i at L - 1 - (start + RUN·r + i): ascending in RUN - 1 - i
            at = length - RUN - start - RUN * tl.arange(0, BLOCK_L // RUN)[:, None] + tl.arange(0, RUN)[None, :]
            values = tl.load(ptr[:, :, None] + at[None, :, :], mask=mask_d[:, :, None] & (at >= 0)[None, :, :],
                             other=0.0)
            values = tl.reshape(tl.flip(values, 2), (BLOCK_D, BLOCK_L))
    else:
        values = tl.load(ptr + t, mask=mask_d & mask_t, other=0.0)
    return values.to(tl.float32)


@triton.jit
def _column(block, select):
    """The column ``select`` marks in a (BLOCK_D, ·) block, as (BLOCK_D, 1)."""
    return tl.sum(tl.where(select, block, 0.0), axis=1)[:, None]


@triton.jit
def _scan_tile(decay, value, carry, RUNS: tl.constexpr):
    """h_t = decay_t·h_{t-1} + value_t over a (BLOCK_D, BLOCK_L) tile, from h = ``carry`` (BLOCK_D, 1) before its
    first step. Returns h, h at the tile's last step (BLOCK_D, 1) and, with runs, the state entering each run
    (BLOCK_D, RUNS).

    With RUNS = 0, one scan along the tile. Otherwise the tile is scanned as a one-warp program holds it: RUNS
    runs of consecutive steps (one per thread where each thread holds one vector load of them), each scanned
    within its thread, then one scan over the runs' totals with the carry folded into the first; each step
    then applies the state entering its run. This spares the pass that applies the carry to every step and the
    full-tile reduction that would find the last state. The result does not depend on the layout, only the
    speed does.
    """
    BLOCK_D: tl.constexpr = decay.shape[0]
    BLOCK_L: tl.constexpr = decay.shape[1]
    if RUNS == 0:
        decay_prod, h = tl.associative_scan((decay, value), 1, _combine)
        h += decay_prod * carry
        last = _column(h, tl.arange(0, BLOCK_L)[None, :] == BLOCK_L - 1)
        entering = last  # no runs: never used
    else:
        RUN: tl.constexpr = BLOCK_L // RUNS
        run_decay, run_value = tl.associative_scan(
            (tl.reshape(decay, (BLOCK_D, RUNS, RUN)), tl.reshape(value, (BLOCK_D, RUNS, RUN))), 2, _combine)
        final = tl.arange(0, RUN)[None, None, :] == RUN - 1
        runs = tl.arange(0, RUNS)[None, :]
        total_decay = tl.sum(tl.where(final, run_decay, 0.0), axis=2)
        total_value = tl.sum(tl.where(final, run_value, 0.0), axis=2)
        total_value = tl.where(runs == 0, total_decay * carry + total_value, total_value)
        _, leaving = tl.associative_scan((total_decay, total_value), 1, _combine)
        entering = tl.gather(leaving, tl.broadcast_to(tl.maximum(runs - 1, 0), (BLOCK_D, RUNS)), 1)
        entering = tl.where(runs == 0, carry, entering)
        h = tl.reshape(run_value + run_decay * entering[:, :, None], (BLOCK_D, BLOCK_L))
        last = _column(leaving, runs == RUNS - 1)
    return h, last, entering


@triton.jit
def _reverse_scan(decay, value, carry, RUNS: tl.constexpr):
    """λ_t = decay_t·λ_{t+1} + value_t over a (BLOCK_D, BLOCK_L) tile, from λ = ``carry`` (BLOCK_D, 1) past its
    last step. Returns λ and λ at the tile's first step (BLOCK_D, 1).

    As ``_scan_tile`` mirrored. Triton lowers a reverse scan by flipping the lanes with five shuffles per value
    before and after, even along an axis held within threads; so the runs are flipped within their threads (no
    data movement) and scanned forwards, and the runs' totals are reversed by one gather, scanned forwards and
    shifted by one run by a second gather (one shuffle each).
    """
    BLOCK_D: tl.constexpr = decay.shape[0]
    BLOCK_L: tl.constexpr = decay.shape[1]
    if RUNS == 0:
        decay_prod, lam = tl.associative_scan((decay, value), 1, _combine, reverse=True)
        lam += decay_prod * carry
        start = _column(lam, tl.arange(0, BLOCK_L)[None, :] == 0)
    else:
        RUN: tl.constexpr = BLOCK_L // RUNS
        run_decay, run_value = tl.associative_scan(
            (tl.flip(tl.reshape(decay, (BLOCK_D, RUNS, RUN)), 2), tl.flip(tl.reshape(value, (BLOCK_D, RUNS, RUN)), 2)),
            2, _combine)
        run_decay, run_value = tl.flip(run_decay, 2), tl.flip(run_value, 2)
        first = tl.arange(0, RUN)[None, None, :] == 0
        runs = tl.arange(0, RUNS)[None, :]
        from_last = tl.broadcast_to(RUNS - 1 - runs, (BLOCK_D, RUNS))
        total_decay = tl.gather(tl.sum(tl.where(first, run_decay, 0.0), axis=2), from_last, 1)
        total_value = tl.gather(tl.sum(tl.where(first, run_value, 0.0), axis=2), from_last, 1)
        total_value = tl.where(runs == 0, total_decay * carry + total_value, total_value)
        # entering[k]: λ at the first step of run RUNS - 1 - k; λ just past run r is λ entering run r + 1
        _, entering = tl.associative_scan((total_decay, total_value), 1, _combine)
        past = tl.gather(entering, tl.broadcast_to(tl.maximum(RUNS - 2 - runs, 0), (BLOCK_D, RUNS)), 1)
        past = tl.where(runs == RUNS - 1, carry, past)
        lam = tl.reshape(run_value + run_decay * past[:, :, None], (BLOCK_D, BLOCK_L))
        start = _column(entering, runs == RUNS - 1)
    return lam, start


@triton.jit
def _step_later(x, after, RUNS: tl.constexpr):
    """x one step later along a (BLOCK_D, K) tile (x_{t+1}), with ``after`` (BLOCK_D, 1) past its last step.

    For tiles laid out in RUNS runs as ``_scan_tile`` has them: the tile splits into even and odd steps (within
    threads: free), x_{t+1} of an even step is the odd one, of an odd step the next even one (the same problem
    on half the steps), down to one step per run, which one gather moves across the runs.
    """
    BLOCK_D: tl.constexpr = x.shape[0]
    K: tl.constexpr = x.shape[1]
    if K == RUNS:
        runs = tl.arange(0, RUNS)[None, :]
        later = tl.gather(x, tl.broadcast_to(tl.minimum(runs + 1, RUNS - 1), (BLOCK_D, RUNS)), 1)
        later = tl.where(runs == RUNS - 1, after, later)
    else:
        even, odd = tl.split(tl.reshape(x, (BLOCK_D, K // 2, 2)))
        later = tl.reshape(tl.join(odd, _step_later(even, after, RUNS)), (BLOCK_D, K))
    return later


@triton.jit
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
    y_ptr, ypre_ptr, last_ptr, ckpt_ptr, segment_end_ptr, segment_dt_ptr, segment_start_ptr, dt_weight_ptr,
    dim, length, n_state, n_groups_b, n_groups_c, n_tiles, segment_tiles, n_segments,
    n_groups_dt, dt_batch_stride, dt_group_stride,
    B_VARIABLE: tl.constexpr, C_VARIABLE: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, SAVE_CKPT: tl.constexpr,
    SEGMENT_ENDS: tl.constexpr, CARRY: tl.constexpr, DT_RANK: tl.constexpr, MIRRORED: tl.constexpr,
    MIRROR_RUN: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr, RUNS: tl.constexpr,
    CKPT_PER_TILE: tl.constexpr,
):
    """Program (channel block, batch row, segment) scans the segment's tiles. With SEGMENT_ENDS it only writes
    the segment's end state from a zero start and its Σ Δ per channel (the first of the split-L passes); with
    CARRY it starts from the state ``_segment_starts_kernel`` composed from the earlier segments' (the second).
    With DT_RANK > 0, delta_ptr holds Δ's low-rank inputs (batch, G, R, L), projected here by dt_weight (dim, R).
    With SAVE_CKPT the state is saved every BLOCK_L / CKPT_PER_TILE steps (at run boundaries, for a backward on
    shorter tiles). With MIRRORED, u_ptr holds the first half of the rows (batch, dim / 2, L), which the second
    half reads backwards, MIRROR_RUN steps at a time."""
    batch_id, d_start, offs_d, offs_n, offs_t, mask_d, mask_dn = _program_tile(
        dim, n_state, BLOCK_D, BLOCK_N, BLOCK_L)
    segment = tl.program_id(2)
    group_b = d_start // (dim // n_groups_b)
    group_c = d_start // (dim // n_groups_c)
    dt_inputs = delta_ptr + batch_id * dt_batch_stride + (d_start // (dim // n_groups_dt)) * dt_group_stride
    bias = _load_channel(bias_ptr, offs_d, mask_d, HAS_BIAS)
    skip = _load_channel(D_ptr, offs_d, mask_d, HAS_D)
    channel = batch_id * dim + offs_d
    row = channel * length
    u_rows = u_ptr + row
    reverse = False
    if MIRRORED:
        half = dim // 2
        reverse = d_start >= half
        u_rows = u_ptr + (batch_id * half + offs_d - tl.where(reverse, half, 0)) * length
    states = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    if CARRY:
        states = tl.load(segment_start_ptr + (channel * n_segments + segment) * n_state + offs_n, mask=mask_dn,
                         other=0.0)
    dt_sum = tl.zeros((BLOCK_D, 1), dtype=tl.float32)
    first_tile = segment * segment_tiles
    for tile in range(first_tile, tl.minimum(first_tile + segment_tiles, n_tiles)):
        t = tile * BLOCK_L + offs_t
        mask_t = t < length
        mask = mask_d & mask_t
        if SAVE_CKPT:
            tl.store(ckpt_ptr + (channel * n_tiles + tile) * CKPT_PER_TILE * n_state + offs_n, states, mask=mask_dn)
        u = _load_steps(u_rows, t, mask_d, mask_t, length, tile * BLOCK_L, reverse, MIRROR_RUN)
        if DT_RANK > 0:
            raw = _project_delta(dt_inputs, dt_weight_ptr, offs_d, mask_d, t, mask_t, length, DT_RANK,
                                 BLOCK_D, BLOCK_L)
        else:
            raw = tl.load(delta_ptr + row + t, mask=mask, other=0.0).to(tl.float32)
        dt, _ = _delta(raw, mask, bias, HAS_BIAS, SOFTPLUS)
        dtu = dt * u
        y = skip * u
        # With several states, each state's B and C are loaded while the state before is scanned: their latency
        # bound the loop over states (the last state reloads its own). The first split-L pass needs no C.
        PREFETCH: tl.constexpr = BLOCK_N > 1
        if PREFETCH:
            next_b = _load_bc(B_ptr, offs_d, mask_d, 0, t, mask_t, batch_id, group_b, n_groups_b, n_state, length,
                              B_VARIABLE)
            if not SEGMENT_ENDS:
                next_c = _load_bc(C_ptr, offs_d, mask_d, 0, t, mask_t, batch_id, group_c, n_groups_c, n_state,
                                  length, C_VARIABLE)
        for n in range(0, n_state):
            is_n = offs_n == n
            a2 = tl.load(A_ptr + offs_d * n_state + n, mask=mask_d, other=0.0).to(tl.float32) * LOG2_E
            if PREFETCH:
                later = tl.minimum(n + 1, n_state - 1)
                Bn = next_b.to(tl.float32)
                next_b = _load_bc(B_ptr, offs_d, mask_d, later, t, mask_t, batch_id, group_b, n_groups_b, n_state,
                                  length, B_VARIABLE)
            else:
                Bn = _load_bc(B_ptr, offs_d, mask_d, n, t, mask_t, batch_id, group_b, n_groups_b, n_state, length,
                              B_VARIABLE).to(tl.float32)
            if not SEGMENT_ENDS:
                if PREFETCH:
                    Cn = next_c.to(tl.float32)
                    next_c = _load_bc(C_ptr, offs_d, mask_d, later, t, mask_t, batch_id, group_c, n_groups_c,
                                      n_state, length, C_VARIABLE)
                else:
                    Cn = _load_bc(C_ptr, offs_d, mask_d, n, t, mask_t, batch_id, group_c, n_groups_c, n_state,
                                  length, C_VARIABLE).to(tl.float32)
            # Padded steps hold the state, so the tile's last state is the state after its last real step.
            h, last, entering = _scan_tile(tl.exp2(dt * a2), dtu * Bn, _column(states, is_n), RUNS)
            states = tl.where(is_n, last, states)
            if SAVE_CKPT and CKPT_PER_TILE > 1:  # the later checkpoints of the tile: states entering runs
                RUNS_PER_CKPT: tl.constexpr = RUNS // CKPT_PER_TILE
                runs = tl.arange(0, RUNS)[None, :]
                at = (channel * n_tiles + tile) * CKPT_PER_TILE + runs // RUNS_PER_CKPT
                boundary = (runs % RUNS_PER_CKPT == 0) & (runs > 0)
                tl.store(ckpt_ptr + at * n_state + n, entering, mask=mask_d & boundary)
            if not SEGMENT_ENDS:
                y += h * Cn
        if SEGMENT_ENDS:
            dt_sum += tl.sum(dt, axis=1)[:, None]
        else:
            if HAS_Z:
                if SAVE_CKPT:
                    tl.store(ypre_ptr + row + t, y.to(ypre_ptr.dtype.element_ty), mask=mask)
                zt = tl.load(z_ptr + row + t, mask=mask, other=0.0).to(tl.float32)
                y *= zt * tl.sigmoid(zt)
            tl.store(y_ptr + row + t, y.to(y_ptr.dtype.element_ty), mask=mask)
    if SEGMENT_ENDS:
        at = channel * n_segments + segment
        tl.store(segment_end_ptr + at * n_state + offs_n, states, mask=mask_dn)
        tl.store(segment_dt_ptr + at, dt_sum, mask=mask_d)
    else:
        tl.store(last_ptr + channel * n_state + offs_n, states, mask=mask_dn & (segment == n_segments - 1))


@triton.jit
def _segment_starts_kernel(end_ptr, dt_ptr, A_ptr, start_ptr, dim, n_state, n_segments,
                           BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr):
    """Between the split-L passes: the state entering each segment, from the segments' end states (each scanned
    from zero) and Σ Δ, h ← exp(A·ΣΔ)·h + end, as an exclusive scan along the segments of BLOCK_R (channel,
    state) rows of one batch row. One pass over the segments, however many there are."""
    batch_id = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]  # channel * n_state + state
    mask_r = rows < dim * n_state
    channel, state = rows // n_state, rows % n_state
    a2 = tl.load(A_ptr + rows, mask=mask_r, other=0.0).to(tl.float32) * LOG2_E
    carry = tl.zeros((BLOCK_R, 1), dtype=tl.float32)
    tl.store(start_ptr + (batch_id * dim + channel) * n_segments * n_state + state, carry, mask=mask_r)
    for first in range(0, n_segments, BLOCK_S):
        segment = first + tl.arange(0, BLOCK_S)[None, :]
        at = (batch_id * dim + channel) * n_segments + segment
        mask = mask_r & (segment < n_segments)
        decay = tl.exp2(a2 * tl.load(dt_ptr + at, mask=mask, other=0.0))
        end = tl.load(end_ptr + at * n_state + state, mask=mask, other=0.0)
        # padded segments (decay 1, end 0) keep the state, so ``carry`` is the state after the last real one
        h, carry, _ = _scan_tile(decay, end, carry, 0)
        tl.store(start_ptr + (at + 1) * n_state + state, h, mask=mask & (segment + 1 < n_segments))


@triton.jit
def _write_grad(ptrs, values, mask, ATOMIC: tl.constexpr):
    """A program's share of a gradient summed over programs: added atomically, or stored as its own partial."""
    if ATOMIC:
        tl.atomic_add(ptrs, values, mask=mask, sem="relaxed")
    else:
        tl.store(ptrs, values, mask=mask)


@triton.jit
def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, ckpt_ptr, ypre_ptr, dy_ptr, dlast_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
    dim, length, n_state, n_groups_b, n_groups_c, n_tiles, ckpt_row, batch,
    B_VARIABLE: tl.constexpr, C_VARIABLE: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_DLAST: tl.constexpr, ATOMIC: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr, RUNS: tl.constexpr,
):
    """Gradients: du, dΔ, dz as inputs; with ATOMIC, dA, dD, dΔ-bias and fixed dB/dC added into (dim, ·) and
    variable dB/dC into (batch, G, N, L) zeroed buffers; without, each program's share written as its own partial:
    the parameters' per batch row (batch, dim, ·), variable dB/dC per channel block (blocks per group, batch, G, N,
    L)."""
    batch_id, d_start, offs_d, offs_n, offs_t, mask_d, mask_dn = _program_tile(
        dim, n_state, BLOCK_D, BLOCK_N, BLOCK_L)
    channels_b = dim // n_groups_b
    channels_c = dim // n_groups_c
    group_b = d_start // channels_b
    group_c = d_start // channels_c
    # Variable-B/C gradient rows of this channel block: its slot within its group (one shared slot when adding
    # atomically), then as the B/C layout.
    slot_b = 0 if ATOMIC else (d_start % channels_b) // BLOCK_D
    slot_c = 0 if ATOMIC else (d_start % channels_c) // BLOCK_D
    rows_db = ((slot_b * batch + batch_id) * n_groups_b + group_b) * n_state
    rows_dc = ((slot_c * batch + batch_id) * n_groups_c + group_c) * n_state
    bias = _load_channel(bias_ptr, offs_d, mask_d, HAS_BIAS)
    skip = _load_channel(D_ptr, offs_d, mask_d, HAS_D)
    channel = batch_id * dim + offs_d
    row = channel * length
    adjoints = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    if HAS_DLAST:
        adjoints = tl.load(dlast_ptr + channel * n_state + offs_n, mask=mask_dn, other=0.0)
    dA_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dB_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dC_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dD_acc = tl.zeros((BLOCK_D, 1), dtype=tl.float32)
    dbias_acc = tl.zeros((BLOCK_D, 1), dtype=tl.float32)
    dt_after = tl.zeros((BLOCK_D, 1), dtype=tl.float32)  # Δ past the end: 0, the state is kept
    for step in range(0, n_tiles):
        tile = n_tiles - 1 - step
        t = tile * BLOCK_L + offs_t
        mask_t = t < length
        mask = mask_d & mask_t
        u = tl.load(u_ptr + row + t, mask=mask, other=0.0).to(tl.float32)
        dt, raw = _delta(tl.load(delta_ptr + row + t, mask=mask, other=0.0).to(tl.float32), mask, bias, HAS_BIAS,
                         SOFTPLUS)
        if RUNS > 0:  # Δ_{t+1} from this tile's Δ and the first of the tile after (the previous one walked)
            dt_next = _step_later(dt, dt_after, RUNS)
            dt_after = _column(dt, offs_t == 0)
        else:
            mask_next = mask_d & (t + 1 < length)
            dt_next, _ = _delta(tl.load(delta_ptr + row + t + 1, mask=mask_next, other=0.0).to(tl.float32),
                                mask_next, bias, HAS_BIAS, SOFTPLUS)
        g = tl.load(dy_ptr + row + t, mask=mask, other=0.0).to(tl.float32)
        if HAS_Z:
            zt = tl.load(z_ptr + row + t, mask=mask, other=0.0).to(tl.float32)
            y = tl.load(ypre_ptr + row + t, mask=mask, other=0.0).to(tl.float32)
            gate = tl.sigmoid(zt)
            tl.store(dz_ptr + row + t, (g * y * gate * (1.0 + zt * (1.0 - gate))).to(dz_ptr.dtype.element_ty),
                     mask=mask)
            g = g * zt * gate
        dtu = dt * u
        ddt = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)
        du = tl.zeros((BLOCK_D, BLOCK_L), dtype=tl.float32)
        for n in range(0, n_state):
            is_n = offs_n == n
            a = tl.load(A_ptr + offs_d * n_state + n, mask=mask_d, other=0.0).to(tl.float32)
            Bn = _load_bc(B_ptr, offs_d, mask_d, n, t, mask_t, batch_id, group_b, n_groups_b, n_state, length,
                          B_VARIABLE).to(tl.float32)
            Cn = _load_bc(C_ptr, offs_d, mask_d, n, t, mask_t, batch_id, group_c, n_groups_c, n_state, length,
                          C_VARIABLE).to(tl.float32)
            start = tl.load(ckpt_ptr + (channel * ckpt_row + tile) * n_state + n, mask=mask_d, other=0.0)
            x = dtu * Bn
            h = _scan_tile(tl.exp2(dt * (a * LOG2_E)), x, start, RUNS)[0]
            # λ_t = a_{t+1}·λ_{t+1} + C_t·g_t, with a = 1 past the end and λ_L = d(last state).
            lam, lam_start = _reverse_scan(tl.exp2(dt_next * (a * LOG2_E)), Cn * g, _column(adjoints, is_n), RUNS)
            adjoints = tl.where(is_n, lam_start, adjoints)
            decayed_prev = h - x  # a_t·h_{t-1}
            ddt += lam * (Bn * u + decayed_prev * a)
            du += lam * Bn
            dA_acc += tl.where(is_n, tl.sum(lam * decayed_prev * dt, axis=1)[:, None], 0.0)
            grad_b = lam * dtu
            grad_c = h * g
            if B_VARIABLE:
                _write_grad(dB_ptr + (rows_db + n) * length + t, tl.sum(grad_b, axis=0)[None, :], mask_t,
                            ATOMIC)
            else:
                dB_acc += tl.where(is_n, tl.sum(grad_b, axis=1)[:, None], 0.0)
            if C_VARIABLE:
                _write_grad(dC_ptr + (rows_dc + n) * length + t, tl.sum(grad_c, axis=0)[None, :], mask_t,
                            ATOMIC)
            else:
                dC_acc += tl.where(is_n, tl.sum(grad_c, axis=1)[:, None], 0.0)
        du *= dt
        if HAS_D:
            du += g * skip
            dD_acc += tl.sum(g * u, axis=1)[:, None]
        tl.store(du_ptr + row + t, du.to(du_ptr.dtype.element_ty), mask=mask)
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(raw)
        ddt = tl.where(mask, ddt, 0.0)
        tl.store(ddelta_ptr + row + t, ddt.to(ddelta_ptr.dtype.element_ty), mask=mask)
        if HAS_BIAS:
            dbias_acc += tl.sum(ddt, axis=1)[:, None]

    parameter_row = offs_d if ATOMIC else channel  # one row for all batch rows, or a partial per batch row
    per_state = parameter_row * n_state + offs_n
    _write_grad(dA_ptr + per_state, dA_acc, mask_dn, ATOMIC)
    if not B_VARIABLE:
        _write_grad(dB_ptr + per_state, dB_acc, mask_dn, ATOMIC)
    if not C_VARIABLE:
        _write_grad(dC_ptr + per_state, dC_acc, mask_dn, ATOMIC)
    if HAS_D:
        _write_grad(dD_ptr + parameter_row, dD_acc, mask_d, ATOMIC)
    if HAS_BIAS:
        _write_grad(dbias_ptr + parameter_row, dbias_acc, mask_d, ATOMIC)


_launch_scan_fwd = CachedLaunch(_scan_fwd_kernel)
_launch_segment_starts = CachedLaunch(_segment_starts_kernel)
_launch_scan_bwd = CachedLaunch(_scan_bwd_kernel)


def _next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def launch_config(
    dim: int, length: int, n_state: int, groups: tuple[int, ...], *, training: bool, batch: int = 1,
    min_programs: int = 0, low_rank_delta: bool = False, overrides: dict[str, int] | None = None,
) -> dict[str, int]:
    """Tile sizes and warps, the fastest of a sweep on an H100 (benchmarks/notes_scan.md), then ``overrides``.

    Forward alone and forward+backward prefer different tiles; the backward starts each of its tiles from a
    checkpoint the forward saved, so ``training`` (a gradient will be needed) picks the pair for both: one-warp
    programs of one or two channels (their many partial B/C gradients are why the backward adds them atomically).
    The backward's channel block and warps (BWD_BLOCK_D, bwd_num_warps) may differ: checkpoints are per channel;
    so may its tile length (BWD_BLOCK_L, a power-of-two fraction of BLOCK_L) where the forward scans in runs and
    saves a checkpoint at the runs that begin the backward's tiles (else the backward takes the forward's tiles).
    Inference runs one-warp programs where there are enough of them (ONE_WARP_PROGRAMS × ``min_programs``): a
    warp's tile of 128–512 steps gives each thread 8 consecutive steps and keeps the scan inside the warp (no
    layout conversions, no barriers); not for long sequences with a low-rank Δ, whose R input rows per tile
    blocks of 8 channels share, unless rows are too few for that (a small batch): one-channel one-warp programs
    then split L into segments until there are SPLIT_ONE_WARP_PROGRAMS × ``min_programs``. Fewer than
    ``min_programs`` programs (a small batch of long sequences) leave the GPU idle while each one walks L:
    channel blocks then become single channels and tiles lengthen by the same factor, and where that still
    leaves too few, L is split into SEGMENTS scanned in parallel (a first pass writes each segment's end state,
    a small kernel composes the state entering each segment, the second pass starts from it: u, Δ and B are
    read twice). A channel block must not straddle two B/C (or low-rank Δ) groups (the kernels read one
    group's rows per block), so BLOCK_D is halved until it divides every grouped operand's channels per group.
    """
    several, short = n_state > 1, length <= 256
    kind = "training" if training else "one warp"
    busy = min_programs  # programs that keep the GPU busy
    if not training:
        few_rows = -(-dim // _TILES[kind, several, short][0]) * batch < ONE_WARP_PROGRAMS * min_programs
        if low_rank_delta and not short and few_rows:
            busy = SPLIT_ONE_WARP_PROGRAMS * min_programs
        elif few_rows or (low_rank_delta and not short):
            kind = "blocks"
    block_d, block_l, warps = _TILES[kind, several, short]
    if -(-dim // block_d) * batch < busy:
        block_d, block_l = 1, block_l * block_d
    block_l = max(16, min(block_l, _next_pow2(length)))
    cfg = {"BLOCK_D": block_d, "BLOCK_L": block_l, "num_warps": warps, "BWD_BLOCK_D": block_d,
           "bwd_num_warps": warps, "BWD_BLOCK_L": _BACKWARD_BLOCK_L.get((kind, several, short), block_l)}
    cfg |= overrides or {}
    for key in ("BLOCK_D", "BWD_BLOCK_D"):
        for g in groups:
            while g > 1 and (dim // g) % cfg[key]:
                cfg[key] //= 2
    programs = -(-dim // cfg["BLOCK_D"]) * batch
    tiles = -(-length // cfg["BLOCK_L"])
    # Splitting L reads u, Δ and B twice: worth it only where it multiplies the programs at least four-fold.
    split = -(-busy // programs)
    cfg.setdefault("SEGMENTS", min(tiles, split) if split >= 4 else 1)
    return cfg


def resolve_launch(
    dim: int, length: int, n_state: int, groups: tuple[int, ...], *, training: bool, batch: int,
    min_programs: int, dt_rank: int, overrides: dict[str, int] | None = None,
) -> tuple[dict[str, int], bool]:
    """The launch for a Δ of rank ``dt_rank`` (0: a full Δ), and whether that low-rank Δ is first written out by
    one GEMM: from MATERIALIZE_DELTA_RANK on, where the launch would have one-channel programs (the launch is
    then a full Δ's)."""
    def configure(low_rank: bool) -> dict[str, int]:
        return launch_config(dim, length, n_state, groups, training=training, batch=batch,
                             min_programs=min_programs, low_rank_delta=low_rank, overrides=overrides)

    cfg = configure(dt_rank > 0)
    if dt_rank >= MATERIALIZE_DELTA_RANK and cfg["BLOCK_D"] == 1:
        return configure(False), True
    return cfg, False


class _Operands:
    """The inputs in the layouts the kernels index: contiguous rows, B/C as (d, N) or (batch, G, N, L); a
    low-rank Δ as its weight (dim, R) and inputs (batch, G, R, L) with rows of stride L (any batch/group
    strides, as x_proj's output split into Δ, B and C is); mirrored u as its first half of rows."""

    def __init__(self, u, delta, A, B, C, D, z, delta_bias):
        self.mirrored = isinstance(u, MirroredRows)
        self.u = (u.rows if self.mirrored else u).contiguous()
        self.shape = u.shape
        self.dt_weight = None
        if isinstance(delta, LowRankDelta):
            inputs = delta.inputs
            if inputs.stride(-1) != 1 or inputs.stride(-2) != inputs.shape[-1]:
                inputs = inputs.contiguous()
            self.delta, self.dt_weight = inputs, delta.weight.contiguous()
        else:
            self.delta = delta.contiguous()
        self.A = A.contiguous()
        self.B = (B.unsqueeze(1) if B.dim() == 3 else B).contiguous()
        self.C = (C.unsqueeze(1) if C.dim() == 3 else C).contiguous()
        self.D = D.contiguous() if D is not None else None
        self.z = z.contiguous() if z is not None else None
        self.delta_bias = delta_bias.contiguous() if delta_bias is not None else None

    def materialize_delta(self) -> None:
        """Δ written out by one GEMM (in the inputs' dtype) in place of its low-rank form."""
        self.delta = LowRankDelta(self.dt_weight.to(self.delta.dtype), self.delta).materialize()
        self.dt_weight = None

    def kernel_args(self) -> list:
        dummy = self.u
        return [self.u, self.delta, self.A, self.B, self.C, self.D if self.D is not None else dummy,
                self.z if self.z is not None else dummy,
                self.delta_bias if self.delta_bias is not None else dummy]

    @property
    def dt_rank(self) -> int:
        return 0 if self.dt_weight is None else self.dt_weight.shape[1]

    @property
    def dt_groups(self) -> int:
        return 1 if self.dt_weight is None else self.delta.shape[1]

    def dt_weight_arg(self) -> torch.Tensor:
        return self.dt_weight if self.dt_weight is not None else self.u

    def dt_layout(self) -> tuple[int, int, int]:
        """Groups, batch stride and group stride of a low-rank Δ's inputs (placeholders for a full Δ)."""
        if self.dt_weight is None:
            return 1, 0, 0
        return self.dt_groups, self.delta.stride(0), self.delta.stride(1)

    def flags(self) -> dict[str, bool]:
        return {"B_VARIABLE": self.B.dim() == 4, "C_VARIABLE": self.C.dim() == 4, "HAS_D": self.D is not None,
                "HAS_Z": self.z is not None, "HAS_BIAS": self.delta_bias is not None}


@functools.cache
def _multiprocessors(device: torch.device) -> int:
    """The device's SM count (0 off CUDA, as under Triton's CPU interpreter)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 0


def _groups(bc: torch.Tensor) -> int:
    return bc.shape[1] if bc.dim() == 4 else 1


def _tiles(cfg: dict[str, int], n_state: int, block_d: str = "BLOCK_D", block_l: str = "BLOCK_L") -> dict[str, int]:
    return {"BLOCK_D": cfg[block_d], "BLOCK_N": _next_pow2(n_state), "BLOCK_L": cfg[block_l]}


def _bc_grad_shape(bc: torch.Tensor, batch: int, dim: int, block_d: int, atomic: bool) -> tuple[int, ...]:
    """Where the backward writes a B/C gradient: the B/C shape itself where every program adds into it; else its
    partials, summed over dim 0 afterwards: fixed, per batch row (batch, dim, N); variable, per channel block
    (blocks per group, batch, G, N, L)."""
    if atomic:
        return tuple(bc.shape)
    if bc.dim() == 2:
        return (batch, *bc.shape)
    blocks = -(-(dim // bc.shape[1]) // block_d)
    if blocks * bc.numel() > _MAX_ELEMENTS:
        raise ValueError(f"selective_scan triton backend: per-block B/C gradients of {blocks} channel blocks × "
                         f"{tuple(bc.shape)} (deterministic algorithms) exceed int32 offsets; use backend='torch'")
    return (blocks, *bc.shape)


def _gradient_buffers(shapes: list[tuple[int, ...]], device: torch.device, zeroed: bool) -> list[torch.Tensor]:
    """Contiguous float32 buffers for the gradients the backward writes, carved from one allocation (zeroed where
    the kernel adds into them: one launch clears them all), each starting on a 128-byte boundary, as a buffer of
    its own would (Triton specializes pointers on their alignment)."""
    offsets, strides, total = [], [], 0
    for shape in shapes:
        stride, row = [], 1
        for size in reversed(shape):
            stride.append(row)
            row *= size
        offsets.append(total)
        strides.append(stride[::-1])
        total += -(-row // 32) * 32
    flat = (torch.zeros if zeroed else torch.empty)(total, device=device, dtype=torch.float32)
    return [flat.as_strided(shape, stride, offset) for shape, stride, offset in zip(shapes, strides, offsets,
                                                                                      strict=True)]


def _rows_aligned(tiles: list[torch.Tensor]) -> bool:
    """Whether every row of these (…, L) tensors starts 16-byte aligned (L a multiple of 16, as Triton specializes
    it, and aligned addresses). While torch.compile traces, addresses are unknown and rows are taken as aligned
    (torch allocates on 512-byte boundaries): what depends on it is a layout, not a result (``_runs``)."""
    return tiles[0].shape[-1] % 16 == 0 and (
        torch.compiler.is_compiling() or all(t.data_ptr() % 16 == 0 for t in tiles))


def _runs(block_d: int, block_l: int, warps: int, tiles: list[torch.Tensor]) -> int:
    """Runs per tile for ``_scan_tile``/``_reverse_scan``: one per 16-byte load of the tile's steps, which is how
    Triton lays out the tile of a one-warp, one-channel program when every row it loads or stores starts 16-byte
    aligned (``_rows_aligned``). 0, Triton's scans along the tile, otherwise: unaligned rows load one step per
    thread at a time (no runs within threads), and blocks of several channels or warps compiled with layout
    conversions through shared memory. Runs on rows that turn out misaligned still scan correctly (the kernel's
    reshapes then compile to layout conversions), only slower."""
    one_row = block_d == 1 and warps == 1
    return max(1, block_l // max(1, 16 // tiles[0].element_size())) if one_row and _rows_aligned(tiles) else 0


def _mirror_run(cfg: dict[str, int], runs: int, element_size: int) -> int:
    """Steps per vector in which mirrored rows are read backwards: a run of ``_scan_tile``'s, or in one-channel
    blocks of several warps the consecutive steps each thread holds (up to one 16-byte load, as Triton lays such
    a tile out); 1 (step by step) in blocks of several channels."""
    if runs:
        return cfg["BLOCK_L"] // runs
    if cfg["BLOCK_D"] > 1:
        return 1
    return max(1, min(16 // element_size, cfg["BLOCK_L"] // (32 * cfg["num_warps"])))


def _checkpoints_per_tile(cfg: dict[str, int], runs: int) -> int:
    """Checkpoints the forward saves per tile so that the backward can walk tiles of BWD_BLOCK_L steps: the
    forward's runs must split evenly into them (else one per tile, and the backward takes the forward's tiles)."""
    per_tile = cfg["BLOCK_L"] // cfg["BWD_BLOCK_L"]
    even = per_tile >= 1 and (per_tile & (per_tile - 1)) == 0 and runs > 0 and runs % per_tile == 0
    return per_tile if even else 1


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t.to(dtype)`` without its dispatch where the dtype already matches (~3 µs a call: host time, which sets
    the wall time of a small scan's backward)."""
    return t if t.dtype == dtype else t.to(dtype)


def _scan_forward(ops: _Operands, delta_softplus: bool, config: dict[str, int] | None, save: bool):
    """Launch the forward (in two split-L passes where the launch config asks for segments). Returns y, the last
    state, and what a backward needs: the checkpoints (batch, dim, checkpoints per row, N), the pre-gate output
    and the launch config, whose BWD_BLOCK_L is the checkpoints' spacing."""
    u = ops.u
    batch, dim, length = ops.shape
    n_state = ops.A.shape[1]
    groups = (_groups(ops.B), _groups(ops.C))

    # mirrored rows: no channel block may straddle the two halves either
    cfg, write_delta = resolve_launch(dim, length, n_state, (*groups, ops.dt_groups, 2 if ops.mirrored else 1),
                                      training=save, batch=batch, min_programs=4 * _multiprocessors(u.device),
                                      dt_rank=ops.dt_rank, overrides=config)
    if write_delta:
        ops.materialize_delta()
    n_tiles = -(-length // cfg["BLOCK_L"])
    segment_tiles = -(-n_tiles // cfg["SEGMENTS"])
    segments = -(-n_tiles // segment_tiles)
    y = u.new_empty(ops.shape)
    last = torch.empty(batch, dim, n_state, device=u.device, dtype=torch.float32)
    ckpt = ypre = last  # written only when a gradient is needed (ypre: only with z)
    if save and ops.z is not None:
        ypre = torch.empty_like(y)
    runs = _runs(cfg["BLOCK_D"], cfg["BLOCK_L"], cfg["num_warps"], [u, ops.delta, ops.B, ops.C, y, ypre])
    per_tile = _checkpoints_per_tile(cfg, runs) if save else 1
    mirror_run = _mirror_run(cfg, runs, u.element_size()) if ops.mirrored else 1
    cfg["BWD_BLOCK_L"] = cfg["BLOCK_L"] // per_tile
    delta_span = sum((size - 1) * stride for size, stride in zip(ops.delta.shape, ops.delta.stride(), strict=True))
    checkpoints = batch * dim * n_tiles * per_tile * n_state
    if max(y.numel(), delta_span + 1, checkpoints, ops.B.numel(), ops.C.numel()) > _MAX_ELEMENTS:
        raise ValueError(f"selective_scan triton backend: {tuple(ops.shape)} with N={n_state} exceeds int32 "
                         "offsets; use backend='torch'")
    if save:
        ckpt = torch.empty(batch, dim, n_tiles * per_tile, n_state, device=u.device, dtype=torch.float32)
    segment_ends = segment_dt = segment_starts = last  # the split-L passes' exchange, only with several segments
    if segments > 1:
        segment_ends = torch.empty(batch, dim, segments, n_state, device=u.device, dtype=torch.float32)
        segment_starts = torch.empty_like(segment_ends)
        segment_dt = torch.empty(batch, dim, segments, device=u.device, dtype=torch.float32)
    grid = (-(-dim // cfg["BLOCK_D"]), batch, segments)

    def scan_pass(segment_ends_only: bool, carry: bool) -> None:
        _launch_scan_fwd(
            grid, *ops.kernel_args(), y, ypre, last, ckpt, segment_ends, segment_dt, segment_starts,
            ops.dt_weight_arg(), dim, length, n_state, *groups, n_tiles, segment_tiles, segments, *ops.dt_layout(),
            SOFTPLUS=delta_softplus, SAVE_CKPT=save and not segment_ends_only, SEGMENT_ENDS=segment_ends_only,
            CARRY=carry, DT_RANK=ops.dt_rank, MIRRORED=ops.mirrored, MIRROR_RUN=mirror_run, **ops.flags(),
            **_tiles(cfg, n_state), RUNS=runs, CKPT_PER_TILE=per_tile, num_warps=cfg["num_warps"],
        )

    if segments > 1:
        scan_pass(segment_ends_only=True, carry=False)
        rows = dim * n_state
        block_r = min(32, _next_pow2(rows))
        _launch_segment_starts(
            (-(-rows // block_r), batch), segment_ends, segment_dt, ops.A, segment_starts, dim, n_state, segments,
            BLOCK_R=block_r, BLOCK_S=min(128, _next_pow2(segments)), num_warps=4)
    scan_pass(segment_ends_only=False, carry=segments > 1)
    return y, last, ckpt, ypre, cfg


class _SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, config):
        ops = _Operands(u, delta, A, B, C, D, z, delta_bias)
        save = any(ctx.needs_input_grad)
        ctx.set_materialize_grads(False)  # an unused last state needs no zero gradient (one launch fewer)
        y, last, ckpt, ypre, cfg = _scan_forward(ops, delta_softplus, config, save)
        if save:
            ctx.save_for_backward(*ops.kernel_args(), ckpt, ypre)
            ctx.flags = ops.flags()
            ctx.original_bc = (B.dim(), C.dim())
            ctx.dtypes = [t.dtype if t is not None else None for t in (A, B, C, D, delta_bias)]
            ctx.softplus = delta_softplus
            ctx.cfg = cfg
        return y, last

    @staticmethod
    def backward(ctx, dy, dlast):
        u, delta, A, B, C, D, z, delta_bias, ckpt, ypre = ctx.saved_tensors
        dy = torch.zeros_like(u) if dy is None else dy.contiguous()
        flags = ctx.flags
        batch, dim, length = u.shape
        n_state = A.shape[1]
        cfg = ctx.cfg
        du = torch.empty_like(u)
        ddelta = torch.empty_like(delta)
        dz = torch.empty_like(z) if flags["HAS_Z"] else du
        # Programs add their shares of the parameter and B/C gradients atomically unless torch is asked for
        # deterministic algorithms (the order of the float additions then varies from run to run, as in mamba's
        # CUDA kernel); then each writes its own partial, summed by torch.
        atomic = not torch.are_deterministic_algorithms_enabled()
        parts = () if atomic else (batch,)
        dA, dD, dbias, dB, dC = _gradient_buffers(
            [(*parts, dim, n_state), (*parts, dim), (*parts, dim),
             _bc_grad_shape(B, batch, dim, cfg["BWD_BLOCK_D"], atomic),
             _bc_grad_shape(C, batch, dim, cfg["BWD_BLOCK_D"], atomic)], u.device, zeroed=atomic)
        grid = (-(-dim // cfg["BWD_BLOCK_D"]), batch)
        _launch_scan_bwd(
            grid, u, delta, A, B, C, D, z, delta_bias, ckpt, ypre, dy,
            dlast.contiguous() if dlast is not None else dy,
            du, ddelta, dz, dA, dB, dC, dD, dbias,
            dim, length, n_state, _groups(B), _groups(C), -(-length // cfg["BWD_BLOCK_L"]), ckpt.shape[2], batch,
            SOFTPLUS=ctx.softplus, HAS_DLAST=dlast is not None, ATOMIC=atomic, **flags,
            **_tiles(cfg, n_state, "BWD_BLOCK_D", "BWD_BLOCK_L"),
            RUNS=_runs(cfg["BWD_BLOCK_D"], cfg["BWD_BLOCK_L"], cfg["bwd_num_warps"],
                      [u, delta, B, C, z, ypre, dy, du, ddelta, dz]),
            num_warps=cfg["bwd_num_warps"],
        )
        if not atomic:
            dA, dD, dbias, dB, dC = (partials.sum(0) for partials in (dA, dD, dbias, dB, dC))
        a_dtype, b_dtype, c_dtype, d_dtype, bias_dtype = ctx.dtypes
        b_dims, c_dims = ctx.original_bc
        return (
            du, ddelta, _cast(dA, a_dtype),
            _cast(dB.squeeze(1) if b_dims == 3 else dB, b_dtype),
            _cast(dC.squeeze(1) if c_dims == 3 else dC, c_dtype),
            _cast(dD, d_dtype) if flags["HAS_D"] else None,
            dz if flags["HAS_Z"] else None,
            _cast(dbias, bias_dtype) if flags["HAS_BIAS"] else None,
            None, None,
        )


def selective_scan_triton(
    u: torch.Tensor | MirroredRows,
    delta: torch.Tensor | LowRankDelta,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    *,
    config: dict[str, int] | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Fused Triton selective scan; ``config`` overrides entries of ``launch_config`` (tiles, warps).

    When no gradient is needed the call goes straight to the forward kernel (no autograd Function), a
    :class:`LowRankDelta` is projected inside it (Δ is never written out) and :class:`MirroredRows` are read
    backwards from their first half; under autograd both are materialized (the projection differentiated as a
    matmul).
    """
    operands = [u.rows if isinstance(u, MirroredRows) else u, A, B, C, D, z, delta_bias]
    operands += [delta.weight, delta.inputs] if isinstance(delta, LowRankDelta) else [delta]
    if not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in operands)):
        # inference: straight to the kernel, without autograd's bookkeeping (its host time is the call's at 1024²)
        y, last, *_ = _scan_forward(_Operands(u, delta, A, B, C, D, z, delta_bias), delta_softplus, config, save=False)
    else:
        u = u.materialize() if isinstance(u, MirroredRows) else u
        delta = delta.materialize() if isinstance(delta, LowRankDelta) else delta
        y, last = _SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, config)
    return (y, last) if return_last_state else y
