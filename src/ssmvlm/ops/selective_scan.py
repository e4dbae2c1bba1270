"""``selective_scan``: one function, several backends, mamba-ssm's ``selective_scan_fn`` semantics.

Shapes (as in mamba-ssm): u, delta (batch, dim, L); A (dim, N) real; B, C (dim, N) fixed, (batch, N, L)
variable, or (batch, G, N, L) grouped, channel d using group d // (dim / G); D (dim,); z (batch, dim, L),
gated with SiLU; delta_bias (dim,). The output has the input dtype and is computed in float32 (float64 for
float64 inputs). With ``return_last_state`` the final state (batch, dim, N) is returned too.

Backends are registered by name; ``backend=None`` picks the fastest one available for the inputs' device.
``delta`` may also be a :class:`LowRankDelta` (dt_proj's weight and inputs) and ``u`` a :class:`MirroredRows` (rows
and the same rows reversed): backends registered with ``lazy_inputs=True`` fuse the projection and the reversal,
the others get them materialized.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ssmvlm.ops.flops import record_scan
from ssmvlm.ops.low_rank_delta import LowRankDelta
from ssmvlm.ops.mirrored_rows import MirroredRows
from ssmvlm.ops.scan_reference import selective_scan_reference
from ssmvlm.ops.scan_torch import selective_scan_torch

ScanFn = Callable[..., torch.Tensor | tuple[torch.Tensor, torch.Tensor]]

_BACKENDS: dict[str, ScanFn] = {"reference": selective_scan_reference, "torch": selective_scan_torch}
_LAZY_INPUTS: set[str] = set()  # backends that take a LowRankDelta and MirroredRows as they are
# Preference order per device type when no backend is named.
_PREFERENCE: dict[str, tuple[str, ...]] = {
    "cuda": ("triton", "torch", "reference"),
    "cpu": ("torch", "reference"),
}


def register_scan_backend(name: str, fn: ScanFn, *, lazy_inputs: bool = False) -> None:
    _BACKENDS[name] = fn
    if lazy_inputs:
        _LAZY_INPUTS.add(name)
    else:
        _LAZY_INPUTS.discard(name)


def _register_triton() -> None:
    """The Triton kernels need a CUDA device; without one (CI) the module is never imported."""
    if not torch.cuda.is_available():
        return
    try:
        from ssmvlm.ops.scan_triton import selective_scan_triton
    except ImportError:
        return
    register_scan_backend("triton", selective_scan_triton, lazy_inputs=True)


_register_triton()


def available_backends() -> list[str]:
    return list(_BACKENDS)


def default_backend(device: torch.device) -> str:
    for name in _PREFERENCE.get(device.type, ("torch", "reference")):
        if name in _BACKENDS:
            return name
    return "reference"


def selective_scan(
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
    backend: str | None = None,
    backend_options: dict | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Run the selective scan with the named backend (or the best available one).

    ``backend_options`` go to the backend as keywords (``torch``: ``chunk_size``; ``triton``: ``config``).
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    batch, dim, length = u.shape
    record_scan(batch, dim, length, A.shape[1], with_d=D is not None, with_z=z is not None)
    rows = u.rows if isinstance(u, MirroredRows) else u
    name = backend or default_backend(rows.device)
    if name not in _BACKENDS:
        raise ValueError(f"unknown selective-scan backend {name!r} (available: {', '.join(_BACKENDS)})")
    # Materialized on the meta device too, so that FLOP counts include the projection; and under torch.compile,
    # whose graph then holds the matmul and the scan as in the uncompiled training path.
    native = name in _LAZY_INPUTS and not rows.is_meta and not torch.compiler.is_compiling()
    if isinstance(delta, LowRankDelta) and not native:
        delta = delta.materialize()
    if isinstance(u, MirroredRows) and not native:
        u = u.materialize()
    if rows.is_meta:  # shape-only passes (FLOP counting, size checks) need no arithmetic
        out = torch.empty_like(u)
        return (out, u.new_empty(batch, dim, A.shape[1], dtype=torch.float32)) if return_last_state else out
    return _BACKENDS[name](
        u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
        delta_softplus=delta_softplus, return_last_state=return_last_state, **(backend_options or {}),
    )


def _check_shapes(u, delta, A, B, C, D, z, delta_bias) -> None:
    if len(u.shape) != 3 or delta.shape != u.shape:
        raise ValueError(
            f"u and delta must both be (batch, dim, L); got {tuple(u.shape)} and {tuple(delta.shape)}"
        )
    batch, dim, length = u.shape
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"A must be (dim={dim}, N); got {tuple(A.shape)}")
    n = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        ok = (
            (t.dim() == 2 and t.shape == (dim, n))
            or (t.dim() == 3 and t.shape == (batch, n, length))
            or (t.dim() == 4 and t.shape[0] == batch and t.shape[2:] == (n, length) and dim % t.shape[1] == 0)
        )
        if not ok:
            raise ValueError(
                f"{name} must be (dim, N), (batch, N, L) or (batch, G, N, L) with dim % G == 0; "
                f"got {tuple(t.shape)} for u {tuple(u.shape)} and N={n}"
            )
    if D is not None and D.shape != (dim,):
        raise ValueError(f"D must be (dim={dim},); got {tuple(D.shape)}")
    if delta_bias is not None and delta_bias.shape != (dim,):
        raise ValueError(f"delta_bias must be (dim={dim},); got {tuple(delta_bias.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z must match u {tuple(u.shape)}; got {tuple(z.shape)}")
