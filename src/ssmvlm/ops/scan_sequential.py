"""The selective scan for CPU training: a loop over time steps in time-major memory, with a hand-written backward.

On a CPU the chunked scan under autograd (``scan_torch``) costs several dozen passes over (batch, channels, N, L)
tensors, each a fresh allocation, plus autograd's bookkeeping for every one; on 2 cores that was 4–5× the time of
the arithmetic a scan needs (``benchmarks/RESULTS.md``, "CPU training step"). This path lays the work out
time-major, (batch, L, groups, channels per group, N), so that one step's states are one contiguous slice, and
runs the recurrence h_t = exp(Δ_t·A)·h_{t-1} + Δ_t·B_t·u_t as one in-place ``addcmul`` per step: exact
step-by-step arithmetic, as the reference does it, with no range limit and no fallback. Everything else is a few
whole-tensor passes, in the forward and in the backward alike:

- the backward's state gradients are the reverse-time recurrence g_t = C_t·dy_t + exp(Δ_{t+1}·A)·g_{t+1}, one
  ``addcmul`` per step as well;
- with q_t = g_t·exp(Δ_t·A)·h_{t-1}: dA = Σ Δ·q, dΔ = Σ_n (A·q + g·B·u), du = Δ·Σ_n g·B, dB = Σ g·Δ·u, dC = Σ dy·h;
- softplus is :func:`softplus`, since torch's CPU kernel (a scalar ``log1p``) took as long as the scan itself.

A step costs a few µs of dispatch whatever its size, so the path pays where a step holds enough states
(``SEQUENTIAL_MIN_STEP_STATES``); smaller problems keep the chunked path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ssmvlm.ops.scan_reference import compute_dtype, group_count

# batch x channels x N per time step from which the step loop beats the chunked scan under autograd (a step's
# dispatch, about 5 µs, is then small next to the chunked path's ~40 ns per state and step, fwd+bwd, on 2 cores)
SEQUENTIAL_MIN_STEP_STATES = 512
_LOG2E = math.log2(math.e)


def softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(x)) to a few ulp, in vectorized passes.

    torch's CPU softplus calls a scalar ``log1p`` (about 5 ns an element on the 2-core machine, where ``log`` and
    ``exp2`` take 0.3–0.7). Here log1p(e) for e = exp(−|x|) is e·log(w)/(w − 1) with w = 1 + e rounded, exact to a
    few ulp (Goldberg's formula; w − 1 is exact), and e itself where w rounds to 1.
    """
    e = torch.abs(x).neg_().exp_()  # not exp2 of x·log2(e): that product's rounding grows with |x|
    w = e + 1.0
    log1p = torch.log(w)
    log1p.div_(w.sub_(1.0)).nan_to_num_(nan=1.0).mul_(e)  # 0/0 where w == 1: log1p(e) = e there
    return torch.clamp_min(x, 0.0).add_(log1p)


def use_sequential(device: torch.device, step_states: int) -> bool:
    """Whether a scan under autograd takes this path: on a CPU, with batch × channels × N = ``step_states`` at least
    ``SEQUENTIAL_MIN_STEP_STATES``. Callers that can lay their inputs out time-major (SS2D) ask this first."""
    return device.type == "cpu" and step_states >= SEQUENTIAL_MIN_STEP_STATES


def selective_scan_sequential(
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
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """mamba-ssm ``selective_scan_ref`` semantics, differentiable, computed as in the module docstring."""
    y, last = _SequentialScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return (y, last) if return_last_state else y


def _time_major(t: torch.Tensor) -> torch.Tensor:
    """(batch, channels, L) → a (batch, L, channels) view."""
    return t.transpose(1, 2)


def _is_time_major(t: torch.Tensor) -> bool:
    """Whether a (batch, channels, L) tensor lies in (batch, L, channels) memory."""
    return _time_major(t).is_contiguous()


def _bc_time_major(bc: torch.Tensor, groups: int, per_group: int, dtype: torch.dtype) -> torch.Tensor:
    """B or C, broadcasting against (batch, L, groups, per_group, N)."""
    if bc.dim() == 2:  # fixed (dim, N)
        return bc.to(dtype).view(groups, per_group, bc.shape[1])
    if bc.dim() == 3:  # variable (batch, N, L): every channel
        return bc.to(dtype).transpose(1, 2)[:, :, None, None].contiguous()
    # grouped (batch, G, N, L): internal group k reads group k // (groups / G)
    tm = bc.to(dtype).permute(0, 3, 1, 2).repeat_interleave(groups // bc.shape[1], dim=2)
    return tm[:, :, :, None].contiguous()


def _bc_grad(grad: torch.Tensor, bc: torch.Tensor) -> torch.Tensor:
    """The gradient of B or C in its own shape, from ``grad`` (batch, L, groups, per_group, N) of the products."""
    if bc.dim() == 2:
        return grad.sum((0, 1)).reshape(bc.shape).to(bc.dtype)
    if bc.dim() == 3:
        return grad.sum((2, 3)).transpose(1, 2).to(bc.dtype)
    batch, length, groups, _, n_state = grad.shape
    per_bc_group = grad.sum(3).view(batch, length, bc.shape[1], groups // bc.shape[1], n_state).sum(3)
    return per_bc_group.permute(0, 2, 3, 1).to(bc.dtype)


def _sum_states(t: torch.Tensor) -> torch.Tensor:
    """Σ over the last axis (N); a view, not a copy, for N = 1."""
    return t.squeeze(-1) if t.shape[-1] == 1 else t.sum(-1)


def _empty(shape: torch.Size, dtype: torch.dtype, time_major: bool) -> torch.Tensor:
    """An uninitialized (batch, dim, L) tensor, in (batch, L, dim) memory if ``time_major``."""
    batch, dim, length = shape
    if time_major:
        return torch.empty(batch, length, dim, dtype=dtype).transpose(1, 2)
    return torch.empty(shape, dtype=dtype)


def _as_rows(tm: torch.Tensor) -> torch.Tensor:
    """A (batch, L, groups, per_group) tensor as a (batch, dim, L) view."""
    return tm.flatten(2).transpose(1, 2)


class _SequentialScan(torch.autograd.Function):
    """Results and gradients of (batch, dim, L) tensors are laid out as the input ``u`` (``delta`` for its own
    gradient): time-major where it is (SS2D hands over its orders so), else contiguous."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        dtype = compute_dtype(u, delta, A)
        batch, dim, length = u.shape
        n_state = A.shape[1]
        groups = group_count(B, C)
        grouped = (batch, length, groups, dim // groups)
        time_major = _is_time_major(u)
        u_tm = _time_major(u).to(dtype).reshape(grouped)  # a view where u is time-major already

        # Δ; with softplus, its input is kept for the backward's sigmoid
        dt = torch.empty(batch, length, dim, dtype=dtype)
        if delta_bias is None:
            dt.copy_(_time_major(delta))
        else:
            torch.add(_time_major(delta), delta_bias.to(dtype), out=dt)
        dt_in = dt.view(grouped) if delta_softplus else None
        dt = (softplus(dt) if delta_softplus else dt).view(grouped)
        B_tm = _bc_time_major(B, groups, grouped[3], dtype)
        C_tm = _bc_time_major(C, groups, grouped[3], dtype)

        # decays exp(Δ·A) as exp2 of Δ·(A·log2 e), rounded once from float64: exp2 is about twice as fast as exp
        log2_decay = (A.double() * _LOG2E).to(dtype).view(groups, -1, n_state)
        decay = torch.mul(dt.unsqueeze(-1), log2_decay).exp2_()
        dt_u = dt * u_tm
        states = torch.mul(dt_u.unsqueeze(-1), B_tm)  # Δ·B·u, becoming h in place
        for t in range(1, length):
            states[:, t].addcmul_(decay[:, t], states[:, t - 1])

        y = _as_rows(_sum_states(states * C_tm))
        out = _empty(u.shape, dtype, time_major)
        if D is None:
            out.copy_(y)
        else:
            torch.addcmul(y, u, D.to(dtype)[:, None], out=out)
        y_ungated = None
        if z is not None:
            y_ungated = out
            out = out * F.silu(z.to(dtype))
        ctx.save_for_backward(u, u_tm, dt_in, dt, dt_u, A, B, C, D, z, y_ungated, B_tm, C_tm, decay, states)
        ctx.time_major = time_major, _is_time_major(delta)
        ctx.delta_dtype = delta.dtype
        ctx.bias_dtype = None if delta_bias is None else delta_bias.dtype
        return out.to(u.dtype), states[:, -1].reshape(batch, dim, n_state).to(u.dtype)

    @staticmethod
    def backward(ctx, grad_out, grad_last):
        u, u_tm, dt_in, dt, dt_u, A, B, C, D, z, y_ungated, B_tm, C_tm, decay, states = ctx.saved_tensors
        dtype = dt.dtype
        batch, length, groups, per_group = grouped = dt.shape
        grad_out = grad_out.to(dtype)

        grad_z = None
        if z is not None:
            z_c = z.to(dtype)
            gate = torch.sigmoid(z_c)
            # d silu(z)/dz = σ(z)·(1 + z·(1 − σ(z)))
            dsilu = torch.rsub(gate, 1.0).mul_(z_c).add_(1.0).mul_(gate)
            grad_z = (grad_out * y_ungated).mul_(dsilu).to(z.dtype)
            grad_out = grad_out * gate.mul_(z_c)
        grad_D = None if D is None else (grad_out * u).sum((0, 2)).to(D.dtype)

        grad_y = _time_major(grad_out).reshape(grouped).unsqueeze(-1)
        grad_C = _bc_grad(grad_y * states, C) if ctx.needs_input_grad[4] else None
        grads = grad_y * C_tm  # C·dy, becoming the state gradients g in place
        grads[:, -1] += grad_last.to(dtype).view(batch, groups, per_group, -1)
        for t in range(length - 2, -1, -1):
            grads[:, t].addcmul_(decay[:, t + 1], grads[:, t + 1])

        # q_t = g_t·exp(Δ_t·A)·h_{t-1} in the decays' memory (no longer needed); q_0 = 0 as h_{-1} = 0
        q = decay
        q[:, 1:].mul_(states[:, :-1]).mul_(grads[:, 1:])
        q[:, 0] = 0.0
        grad_A = None
        if ctx.needs_input_grad[2]:
            grad_A = (q * dt.unsqueeze(-1)).sum((0, 1)).reshape(A.shape).to(A.dtype)
        grad_B = _bc_grad(grads * dt_u.unsqueeze(-1), B) if ctx.needs_input_grad[3] else None
        g_b = _sum_states(grads * B_tm)
        grad_dt = torch.addcmul(_sum_states(q * A.to(dtype).view(groups, per_group, -1)), u_tm, g_b)

        u_major, delta_major = ctx.time_major
        grad_u = _as_rows(g_b.mul_(dt))  # a fresh tensor in time-major memory: u's own layout if u is time-major
        if not u_major:
            grad_u = grad_u.contiguous()
        if D is not None:
            grad_u.addcmul_(grad_out, D.to(dtype)[:, None])
        if dt_in is not None:
            grad_dt.mul_(torch.sigmoid(dt_in))
        grad_bias = None if ctx.bias_dtype is None else grad_dt.sum((0, 1)).flatten().to(ctx.bias_dtype)
        grad_delta = _as_rows(grad_dt)
        grad_delta = (grad_delta if delta_major else grad_delta.contiguous()).to(ctx.delta_dtype)
        return grad_u.to(u.dtype), grad_delta, grad_A, grad_B, grad_C, grad_D, grad_z, grad_bias, None
