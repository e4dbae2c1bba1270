"""The selective scan as a plain sequential loop: the ground truth every fast path is tested against.

Same semantics and shapes as mamba-ssm's ``selective_scan_ref``. Computes in float32, or in float64 when
the inputs are float64, so tests can compare fast paths against a float64 reference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def expand_bc(bc: torch.Tensor, dim: int) -> torch.Tensor:
    """Bring B or C to a per-channel (batch, dim, N, L) view, or keep (dim, N) when it is fixed.

    Grouped (batch, G, N, L) gives channel d the group d // (dim / G); (batch, N, L) is one group.
    """
    if bc.dim() == 2:
        return bc
    if bc.dim() == 3:
        bc = bc.unsqueeze(1)
    groups = bc.shape[1]
    if dim % groups:
        raise ValueError(f"dim {dim} is not divisible by the number of B/C groups {groups}")
    return bc.repeat_interleave(dim // groups, dim=1)


def prepare_delta(
    delta: torch.Tensor, delta_bias: torch.Tensor | None, delta_softplus: bool, dtype: torch.dtype
) -> torch.Tensor:
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def group_count(*bcs: torch.Tensor) -> int:
    """The finest grouping of channels that B and C share: the lcm of their group counts (1 for fixed/variable)."""
    groups = 1
    for bc in bcs:
        if bc.dim() == 4:
            groups = math.lcm(groups, bc.shape[1])
    return groups


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def selective_scan_reference(
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
    dtype_in = u.dtype
    dtype = compute_dtype(u, delta, A)
    dim = u.shape[1]
    u_c = u.to(dtype)
    delta_c = prepare_delta(delta, delta_bias, delta_softplus, dtype)
    A_c = A.to(dtype)
    B_c = expand_bc(B.to(dtype), dim)
    C_c = expand_bc(C.to(dtype), dim)

    # dA[b, d, l, n] = exp(delta[b, d, l] * A[d, n]); dBu[b, d, l, n] = delta * B * u
    dA = torch.exp(delta_c.unsqueeze(-1) * A_c[:, None, :])
    if B_c.dim() == 2:
        dBu = (delta_c * u_c).unsqueeze(-1) * B_c[:, None, :]
    else:
        dBu = (delta_c * u_c).unsqueeze(-1) * B_c.transpose(2, 3)

    state = u_c.new_zeros(u.shape[0], dim, A.shape[1])
    outputs = []
    for i in range(u.shape[2]):
        state = dA[:, :, i] * state + dBu[:, :, i]
        c_i = C_c if C_c.dim() == 2 else C_c[..., i]
        outputs.append((state * c_i).sum(-1))
    y = torch.stack(outputs, dim=-1)
    if D is not None:
        y = y + u_c * D.to(dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(dtype))
    y = y.to(dtype_in)
    return (y, state) if return_last_state else y
