"""Random selective-scan problems and their comparison against the float64 reference.

Shared by the CPU tests and the GPU check script (``benchmarks/scan_check.py``) so both check the same
thing: every output and every input gradient, as ‖fast − ref‖ / ‖ref‖. Also how the CPU tests run the Triton
kernels: in Triton's interpreter, in a fresh process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import torch

from ssmvlm.ops.scan_reference import selective_scan_reference
from ssmvlm.ops.selective_scan import selective_scan

INPUT_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


@dataclass(frozen=True)
class ScanCase:
    batch: int
    dim: int
    length: int
    n_state: int
    bc_layout: str  # "fixed" (dim, N), "variable" (batch, N, L) or "grouped" (batch, G, N, L)
    groups: int = 1
    with_d: bool = True
    with_z: bool = True
    with_bias: bool = True
    softplus: bool = True
    last_state: bool = True

    def label(self) -> str:
        extras = "".join(
            flag for flag, on in (("D", self.with_d), ("z", self.with_z), ("b", self.with_bias),
                                  ("s", self.softplus), ("h", self.last_state)) if on
        )
        return (f"b{self.batch} d{self.dim} L{self.length} N{self.n_state} {self.bc_layout}"
                f"{self.groups if self.bc_layout == 'grouped' else ''} [{extras}]")


def random_inputs(case: ScanCase, generator: torch.Generator) -> dict[str, torch.Tensor | None]:
    """float64 CPU inputs with realistic magnitudes (Δ ≈ softplus(N(−1, 1)), A < 0 like −exp(A_log))."""

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    b, d, L, n = case.batch, case.dim, case.length, case.n_state
    bc_shape = {"fixed": (d, n), "variable": (b, n, L), "grouped": (b, case.groups, n, L)}[case.bc_layout]
    uniform = torch.rand(b, d, L, generator=generator, dtype=torch.float64)
    delta = randn(b, d, L) - 1.0 if case.softplus else uniform
    return {
        "u": randn(b, d, L),
        "delta": delta,
        "A": -torch.exp(randn(d, n) * 0.5),
        "B": randn(*bc_shape),
        "C": randn(*bc_shape),
        "D": randn(d) if case.with_d else None,
        "z": randn(b, d, L) if case.with_z else None,
        "delta_bias": randn(d) * 0.5 if case.with_bias else None,
    }


def _relative_error(fast: torch.Tensor, ref: torch.Tensor) -> float:
    fast = fast.detach().double().cpu()
    ref = ref.detach().double().cpu()
    if not torch.isfinite(fast).all():
        return float("nan")
    # Inputs are O(1), so real outputs and gradients have norms ≥ 1; one that is exactly zero (A's gradient at
    # L = 1) is compared absolutely instead of dividing rounding noise by zero.
    return float((fast - ref).norm() / ref.norm().clamp_min(1.0))


def _placed(t: torch.Tensor, offset: int) -> torch.Tensor:
    """A contiguous copy of ``t`` starting ``offset`` elements into its storage."""
    storage = torch.empty(t.numel() + offset, dtype=t.dtype, device=t.device)
    return storage[offset:].view(t.shape).copy_(t)


def compare_backend(
    case: ScanCase,
    backend: str,
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    seed: int = 0,
    gradients: bool = True,
    offset: int = 0,
) -> dict[str, float]:
    """Relative errors of ``backend`` (inputs cast to ``dtype`` on ``device``) against the float64 reference.

    The reference sees the same values (the low-precision inputs upcast), so only the backend's arithmetic is
    measured. ``offset`` places the inputs that many elements into their storage (rows that start off the
    allocation's alignment). Keys: ``y``, ``last_state`` and ``grad_<input>`` for every input present.
    """
    generator = torch.Generator().manual_seed(seed)
    inputs = random_inputs(case, generator)
    # Parameters stay float32 or float64, as in the models; activations take the tested dtype.
    param_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    low = {
        name: None if t is None else t.to(device=device, dtype=param_dtype if name in ("A", "D", "delta_bias")
                                           or (name in ("B", "C") and t.dim() == 2) else dtype)
        for name, t in inputs.items()
    }
    if offset:
        low = {name: None if t is None else _placed(t, offset) for name, t in low.items()}
    ref_in = {name: None if t is None else t.detach().cpu().double() for name, t in low.items()}
    present = [name for name in INPUT_NAMES if low[name] is not None]
    for name in present:
        low[name].requires_grad_(gradients)
        ref_in[name].requires_grad_(gradients)

    kwargs = {"delta_softplus": case.softplus, "return_last_state": True}
    y_ref, last_ref = selective_scan_reference(**ref_in, **kwargs)
    y, last = selective_scan(**low, **kwargs, backend=backend)
    errors = {"y": _relative_error(y, y_ref)}
    if y.dtype != low["u"].dtype:
        errors["y"] = float("nan")
    if case.last_state:
        errors["last_state"] = _relative_error(last, last_ref)
    if not gradients:
        return errors

    weights = torch.randn(y_ref.shape, generator=generator, dtype=torch.float64)
    loss_ref = (y_ref * weights).sum()
    loss = (y.double() * weights.to(y.device)).sum()
    if case.last_state:
        last_weights = torch.randn(last_ref.shape, generator=generator, dtype=torch.float64)
        loss_ref = loss_ref + (last_ref * last_weights).sum()
        loss = loss + (last.double() * last_weights.to(last.device)).sum()
    grads_ref = torch.autograd.grad(loss_ref, [ref_in[name] for name in present])
    grads = torch.autograd.grad(loss, [low[name] for name in present])
    for name, grad, grad_ref in zip(present, grads, grads_ref, strict=True):
        errors[f"grad_{name}"] = _relative_error(grad, grad_ref)
    return errors


def shape_variants(length: int, n_state: int, batch: int = 2, dim: int = 8) -> list[ScanCase]:
    """Every B/C layout, each optional input on and off, at one (length, N)."""
    cases = [
        ScanCase(batch, dim, length, n_state, "fixed"),
        ScanCase(batch, dim, length, n_state, "variable"),
        ScanCase(batch, dim, length, n_state, "grouped", groups=2),
        ScanCase(batch, dim, length, n_state, "grouped", groups=4, with_d=False, with_z=False),
        ScanCase(batch, dim, length, n_state, "variable", with_bias=False, softplus=False, last_state=False),
    ]
    return cases


def run_in_triton_interpreter(script: str, timeout: float = 300) -> str:
    """Run a Python ``script`` with Triton's CPU interpreter on (it must be set before Triton is imported, so in a
    fresh process) and return its stdout; an AssertionError with the end of its stderr if it fails."""
    env = os.environ | {"TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
