"""The selective scan as fused Triton kernels, forward and backward (imported only where Triton exists).

One program owns (a block of BLOCK_D channels × all N states) of one batch row and walks L in tiles of
BLOCK_L steps. Inside a tile the linear recurrence h_t = a_t·h_{t-1} + x_t is one ``tl.associative_scan``
over (a, x) pairs; the state at the tile's end is carried to the next tile. Everything is computed in
float32 from inputs of any float dtype, and the output is stored in the input dtype.

The forward saves, only when a gradient is needed, the state at the start of every tile (the checkpoints).
The backward walks the tiles in reverse: it recomputes the tile's states from its checkpoint, runs the
adjoint recurrence λ_t = a_{t+1}·λ_{t+1} + C_t·g_t as a reverse scan (carrying λ between tiles, starting from
the last state's gradient), and forms every input gradient in the same pass. Per-channel parameters (A, D,
delta_bias, fixed B/C) accumulate in registers over L and are added across batch rows atomically; variable
B/C gradients are summed over the block's channels and added atomically across channel blocks.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Offsets are int32 inside the kernels.
_MAX_ELEMENTS = 2**31 - 1


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
def _load_delta(delta_ptrs, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """Δ after bias and softplus (0 outside the sequence, so padded steps keep the state); raw Δ + bias."""
    raw = tl.load(delta_ptrs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw = raw + bias
    dt = raw
    if SOFTPLUS:
        dt = _softplus(raw)
    return tl.where(mask, dt, 0.0), raw


@triton.jit
def _load_bc(ptr, offs_d, offs_n, t, mask_dn, mask_t, batch_id, group_id, n_groups, n_state, length,
             VARIABLE: tl.constexpr):
    if VARIABLE:
        base = ((batch_id * n_groups + group_id) * n_state + offs_n) * length
        values = tl.load(ptr + base + t, mask=(offs_n < n_state) & mask_t, other=0.0).to(tl.float32)
    else:
        values = tl.load(ptr + offs_d * n_state + offs_n, mask=mask_dn, other=0.0).to(tl.float32)
    return values


@triton.jit
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
    y_ptr, last_ptr, ckpt_ptr,
    dim, length, n_state, n_groups_b, n_groups_c, n_tiles,
    B_VARIABLE: tl.constexpr, C_VARIABLE: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, SAVE_CKPT: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):
    pid_d = tl.program_id(0)
    batch_id = tl.program_id(1)
    d_start = pid_d * BLOCK_D
    offs_d = d_start + tl.arange(0, BLOCK_D)[:, None, None]
    offs_n = tl.arange(0, BLOCK_N)[None, :, None]
    offs_t = tl.arange(0, BLOCK_L)[None, None, :]
    mask_d = offs_d < dim
    mask_dn = mask_d & (offs_n < n_state)
    group_b = d_start // (dim // n_groups_b)
    group_c = d_start // (dim // n_groups_c)

    A = tl.load(A_ptr + offs_d * n_state + offs_n, mask=mask_dn, other=0.0).to(tl.float32)
    A2 = A * 1.4426950408889634  # exp(Δ·A) = exp2(Δ·A·log2 e)
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_D:
        skip = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    row = (batch_id * dim + offs_d) * length
    state = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    for tile in range(0, n_tiles):
        t = tile * BLOCK_L + offs_t
        mask_t = t < length
        mask = mask_d & mask_t
        if SAVE_CKPT:
            ckpt_offs = ((batch_id * dim + offs_d) * n_tiles + tile) * n_state + offs_n
            tl.store(ckpt_ptr + tl.reshape(ckpt_offs, (BLOCK_D, BLOCK_N)), state,
                     mask=tl.reshape(mask_dn, (BLOCK_D, BLOCK_N)))
        u = tl.load(u_ptr + row + t, mask=mask, other=0.0).to(tl.float32)
        dt, _ = _load_delta(delta_ptr + row + t, mask, bias, HAS_BIAS, SOFTPLUS)
        Bt = _load_bc(B_ptr, offs_d, offs_n, t, mask_dn, mask_t, batch_id, group_b, n_groups_b, n_state,
                      length, B_VARIABLE)
        Ct = _load_bc(C_ptr, offs_d, offs_n, t, mask_dn, mask_t, batch_id, group_c, n_groups_c, n_state,
                      length, C_VARIABLE)
        decay = tl.exp2(dt * A2)
        x = dt * u * Bt
        decay_prod, h_local = tl.associative_scan((decay, x), 2, _combine)
        h = h_local + decay_prod * state[:, :, None]
        y = tl.sum(h * Ct, axis=1)[:, None, :]
        if HAS_D:
            y += skip * u
        if HAS_Z:
            zt = tl.load(z_ptr + row + t, mask=mask, other=0.0).to(tl.float32)
            y *= zt * tl.sigmoid(zt)
        tl.store(y_ptr + row + t, y.to(y_ptr.dtype.element_ty), mask=mask)
        # Padded steps hold the state, so the tile's last column is the state after its last real step.
        state = tl.sum(tl.where(offs_t == BLOCK_L - 1, h, 0.0), axis=2)
    last_offs = (batch_id * dim + offs_d) * n_state + offs_n
    tl.store(last_ptr + tl.reshape(last_offs, (BLOCK_D, BLOCK_N)), state,
             mask=tl.reshape(mask_dn, (BLOCK_D, BLOCK_N)))


@triton.jit
def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, ckpt_ptr, dy_ptr, dlast_ptr,
    du_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dz_ptr, dbias_ptr,
    dim, length, n_state, n_groups_b, n_groups_c, n_tiles,
    B_VARIABLE: tl.constexpr, C_VARIABLE: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_DLAST: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):
    pid_d = tl.program_id(0)
    batch_id = tl.program_id(1)
    d_start = pid_d * BLOCK_D
    offs_d = d_start + tl.arange(0, BLOCK_D)[:, None, None]
    offs_n = tl.arange(0, BLOCK_N)[None, :, None]
    offs_t = tl.arange(0, BLOCK_L)[None, None, :]
    mask_d = offs_d < dim
    mask_n = offs_n < n_state
    mask_dn = mask_d & mask_n
    group_b = d_start // (dim // n_groups_b)
    group_c = d_start // (dim // n_groups_c)
    dn_offs = tl.reshape(offs_d * n_state + offs_n, (BLOCK_D, BLOCK_N))
    dn_mask = tl.reshape(mask_dn, (BLOCK_D, BLOCK_N))

    A = tl.load(A_ptr + offs_d * n_state + offs_n, mask=mask_dn, other=0.0).to(tl.float32)
    A2 = A * 1.4426950408889634  # exp(Δ·A) = exp2(Δ·A·log2 e)
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_D:
        skip = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    row = (batch_id * dim + offs_d) * length
    adjoint = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    if HAS_DLAST:
        adjoint = tl.load(dlast_ptr + (batch_id * dim * n_state) + dn_offs, mask=dn_mask, other=0.0)
    dA_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dB_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dC_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dD_acc = tl.zeros((BLOCK_D, 1, 1), dtype=tl.float32)
    dbias_acc = tl.zeros((BLOCK_D, 1, 1), dtype=tl.float32)
    for step in range(0, n_tiles):
        tile = n_tiles - 1 - step
        t = tile * BLOCK_L + offs_t
        mask_t = t < length
        mask = mask_d & mask_t
        u = tl.load(u_ptr + row + t, mask=mask, other=0.0).to(tl.float32)
        dt, raw = _load_delta(delta_ptr + row + t, mask, bias, HAS_BIAS, SOFTPLUS)
        dt_next, _ = _load_delta(delta_ptr + row + t + 1, mask_d & (t + 1 < length), bias, HAS_BIAS, SOFTPLUS)
        Bt = _load_bc(B_ptr, offs_d, offs_n, t, mask_dn, mask_t, batch_id, group_b, n_groups_b, n_state,
                      length, B_VARIABLE)
        Ct = _load_bc(C_ptr, offs_d, offs_n, t, mask_dn, mask_t, batch_id, group_c, n_groups_c, n_state,
                      length, C_VARIABLE)
        start = tl.load(ckpt_ptr + ((batch_id * dim + offs_d) * n_tiles + tile) * n_state + offs_n,
                        mask=mask_dn, other=0.0)
        x = dt * u * Bt
        decay_prod, h_local = tl.associative_scan((tl.exp2(dt * A2), x), 2, _combine)
        h = h_local + decay_prod * start

        g = tl.load(dy_ptr + row + t, mask=mask, other=0.0).to(tl.float32)
        if HAS_Z:
            zt = tl.load(z_ptr + row + t, mask=mask, other=0.0).to(tl.float32)
            y = tl.sum(h * Ct, axis=1)[:, None, :]
            if HAS_D:
                y += skip * u
            gate = tl.sigmoid(zt)
            dz = g * y * gate * (1.0 + zt * (1.0 - gate))
            tl.store(dz_ptr + row + t, dz.to(dz_ptr.dtype.element_ty), mask=mask)
            g = g * zt * gate

        # λ_t = a_{t+1}·λ_{t+1} + C_t·g_t, with a = 1 past the end and λ_L = d(last state).
        decay_next_prod, adj_local = tl.associative_scan((tl.exp2(dt_next * A2), Ct * g), 2, _combine,
                                                         reverse=True)
        lam = adj_local + decay_next_prod * adjoint[:, :, None]
        adjoint = tl.sum(tl.where(offs_t == 0, lam, 0.0), axis=2)

        decayed_prev = h - x  # a_t·h_{t-1}
        ddt = tl.sum(lam * (Bt * u + decayed_prev * A), axis=1)[:, None, :]
        du = tl.sum(lam * Bt, axis=1)[:, None, :] * dt
        if HAS_D:
            du += g * skip
            dD_acc += tl.sum(g * u, axis=2)[:, :, None]
        tl.store(du_ptr + row + t, du.to(du_ptr.dtype.element_ty), mask=mask)
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(raw)
        ddt = tl.where(mask, ddt, 0.0)
        tl.store(ddelta_ptr + row + t, ddt.to(ddelta_ptr.dtype.element_ty), mask=mask)
        if HAS_BIAS:
            dbias_acc += tl.sum(ddt, axis=2)[:, :, None]
        dA_acc += tl.sum(lam * decayed_prev * dt, axis=2)

        grad_b = lam * (dt * u)
        grad_c = h * g
        if B_VARIABLE:
            base_b = ((batch_id * n_groups_b + group_b) * n_state + offs_n) * length
            tl.atomic_add(dB_ptr + tl.reshape(base_b + t, (BLOCK_N, BLOCK_L)),
                          tl.sum(grad_b, axis=0), mask=tl.reshape(mask_n & mask_t, (BLOCK_N, BLOCK_L)))
        else:
            dB_acc += tl.sum(grad_b, axis=2)
        if C_VARIABLE:
            base_c = ((batch_id * n_groups_c + group_c) * n_state + offs_n) * length
            tl.atomic_add(dC_ptr + tl.reshape(base_c + t, (BLOCK_N, BLOCK_L)),
                          tl.sum(grad_c, axis=0), mask=tl.reshape(mask_n & mask_t, (BLOCK_N, BLOCK_L)))
        else:
            dC_acc += tl.sum(grad_c, axis=2)

    tl.atomic_add(dA_ptr + dn_offs, dA_acc, mask=dn_mask)
    if not B_VARIABLE:
        tl.atomic_add(dB_ptr + dn_offs, dB_acc, mask=dn_mask)
    if not C_VARIABLE:
        tl.atomic_add(dC_ptr + dn_offs, dC_acc, mask=dn_mask)
    d_offs = tl.reshape(offs_d, (BLOCK_D,))
    d_mask = tl.reshape(mask_d, (BLOCK_D,))
    if HAS_D:
        tl.atomic_add(dD_ptr + d_offs, tl.reshape(dD_acc, (BLOCK_D,)), mask=d_mask)
    if HAS_BIAS:
        tl.atomic_add(dbias_ptr + d_offs, tl.reshape(dbias_acc, (BLOCK_D,)), mask=d_mask)


def _next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def launch_config(
    dim: int, length: int, n_state: int, groups: tuple[int, ...], *, training: bool
) -> dict[str, int]:
    """Tile sizes and warps, the fastest of a sweep on an H100 (benchmarks/notes_scan.md).

    Forward alone and forward+backward prefer different tiles; the backward must reuse the forward's BLOCK_L
    (its checkpoints are per tile), so ``training`` (a gradient will be needed) picks the pair for both.
    A channel block must not straddle two B/C groups (the kernels read one group's B/C per block), so
    BLOCK_D is halved until it divides every grouped operand's channels per group.
    """
    block_n = _next_pow2(n_state)
    short = length <= 256
    if block_n > 1:
        block_l = 16 if training else 32
        block_d, warps = max(1, 1024 // (block_n * block_l)), 4
    elif training:
        block_l, block_d, warps = (256, 2, 4) if short else (64, 8, 4)
    else:
        block_l, block_d, warps = (32, 32, 8) if short else (128, 8, 8)
    block_l = max(16, min(block_l, _next_pow2(length)))
    for g in groups:
        while g > 1 and (dim // g) % block_d:
            block_d //= 2
    return {"BLOCK_D": block_d, "BLOCK_N": block_n, "BLOCK_L": block_l, "num_warps": warps, "bwd_num_warps": warps}


def _tiles(cfg: dict[str, int]) -> dict[str, int]:
    return {key: cfg[key] for key in ("BLOCK_D", "BLOCK_N", "BLOCK_L")}


class _Operands:
    """The inputs in the layouts the kernels index: contiguous rows, B/C as (d, N) or (batch, G, N, L)."""

    def __init__(self, u, delta, A, B, C, D, z, delta_bias):
        self.u = u.contiguous()
        self.delta = delta.contiguous()
        self.A = A.contiguous()
        self.B = (B.unsqueeze(1) if B.dim() == 3 else B).contiguous()
        self.C = (C.unsqueeze(1) if C.dim() == 3 else C).contiguous()
        self.D = D.contiguous() if D is not None else None
        self.z = z.contiguous() if z is not None else None
        self.delta_bias = delta_bias.contiguous() if delta_bias is not None else None

    def groups(self, bc: torch.Tensor) -> int:
        return bc.shape[1] if bc.dim() == 4 else 1

    def kernel_args(self) -> list:
        dummy = self.u
        return [self.u, self.delta, self.A, self.B, self.C, self.D if self.D is not None else dummy,
                self.z if self.z is not None else dummy,
                self.delta_bias if self.delta_bias is not None else dummy]

    def flags(self) -> dict[str, bool]:
        return {"B_VARIABLE": self.B.dim() == 4, "C_VARIABLE": self.C.dim() == 4, "HAS_D": self.D is not None,
                "HAS_Z": self.z is not None, "HAS_BIAS": self.delta_bias is not None}


class _SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, config):
        ops = _Operands(u, delta, A, B, C, D, z, delta_bias)
        batch, dim, length = u.shape
        n_state = A.shape[1]
        save = any(ctx.needs_input_grad)
        groups = (ops.groups(ops.B), ops.groups(ops.C))
        cfg = launch_config(dim, length, n_state, groups, training=save) | (config or {})
        n_tiles = triton.cdiv(length, cfg["BLOCK_L"])
        y = torch.empty_like(ops.u)
        last = torch.empty(batch, dim, n_state, device=u.device, dtype=torch.float32)
        if max(u.numel(), ops.B.numel(), batch * dim * n_tiles * n_state) > _MAX_ELEMENTS:
            raise ValueError(f"selective_scan triton backend: {tuple(u.shape)} with N={n_state} exceeds int32 "
                             "offsets; use backend='torch'")
        ckpt = last  # not written unless a gradient is needed
        if save:
            ckpt = torch.empty(batch, dim, n_tiles, n_state, device=u.device, dtype=torch.float32)
        grid = (triton.cdiv(dim, cfg["BLOCK_D"]), batch)
        _scan_fwd_kernel[grid](
            *ops.kernel_args(), y, last, ckpt,
            dim, length, n_state, ops.groups(ops.B), ops.groups(ops.C), n_tiles,
            SOFTPLUS=delta_softplus, SAVE_CKPT=save, **ops.flags(), **_tiles(cfg), num_warps=cfg["num_warps"],
        )
        if save:
            ctx.save_for_backward(*[t for t in ops.kernel_args()], ckpt)
            ctx.flags = ops.flags()
            ctx.original_bc = (B.dim(), C.dim())
            ctx.dtypes = [t.dtype if t is not None else None for t in (A, B, C, D, delta_bias)]
            ctx.softplus = delta_softplus
            ctx.cfg = cfg
            ctx.n_tiles = n_tiles
        return y, last

    @staticmethod
    def backward(ctx, dy, dlast):
        u, delta, A, B, C, D, z, delta_bias, ckpt = ctx.saved_tensors
        flags = ctx.flags
        batch, dim, length = u.shape
        n_state = A.shape[1]
        f32 = {"device": u.device, "dtype": torch.float32}
        du = torch.empty_like(u)
        ddelta = torch.empty_like(delta)
        dz = torch.empty_like(z) if flags["HAS_Z"] else du
        dA = torch.zeros(A.shape, **f32)
        dB = torch.zeros(B.shape, **f32)
        dC = torch.zeros(C.shape, **f32)
        dD = torch.zeros(dim, **f32)
        dbias = torch.zeros(dim, **f32)
        cfg = ctx.cfg
        grid = (triton.cdiv(dim, cfg["BLOCK_D"]), batch)
        _scan_bwd_kernel[grid](
            u, delta, A, B, C, D, z, delta_bias, ckpt, dy.contiguous(),
            dlast.contiguous() if dlast is not None else dy,
            du, ddelta, dA, dB, dC, dD, dz, dbias,
            dim, length, n_state, B.shape[1] if flags["B_VARIABLE"] else 1,
            C.shape[1] if flags["C_VARIABLE"] else 1, ctx.n_tiles,
            SOFTPLUS=ctx.softplus, HAS_DLAST=dlast is not None, **flags, **_tiles(cfg),
            num_warps=cfg["bwd_num_warps"],
        )
        a_dtype, b_dtype, c_dtype, d_dtype, bias_dtype = ctx.dtypes
        b_dims, c_dims = ctx.original_bc
        dB = (dB.squeeze(1) if b_dims == 3 else dB).to(b_dtype)
        dC = (dC.squeeze(1) if c_dims == 3 else dC).to(c_dtype)
        return (
            du, ddelta, dA.to(a_dtype), dB, dC,
            dD.to(d_dtype) if flags["HAS_D"] else None,
            dz if flags["HAS_Z"] else None,
            dbias.to(bias_dtype) if flags["HAS_BIAS"] else None,
            None, None,
        )


def selective_scan_triton(
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
    config: dict[str, int] | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Fused Triton selective scan; ``config`` overrides entries of ``launch_config`` (tiles, warps)."""
    y, last = _SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, config)
    return (y, last) if return_last_state else y
