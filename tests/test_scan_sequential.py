"""The CPU training scan (``scan_sequential``) against the float64 reference, forward and every input gradient; its
softplus; and the time-major layouts SS2D hands it (cross-scan, merge, low-rank Δ)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ssmvlm.ops import LowRankDelta, cross_merge, cross_scan, scan_sequential, selective_scan
from ssmvlm.ops.scan_testing import ScanCase, compare_backend, shape_variants

# L = 1 and 2, odd L, N = 1 (VMamba) and N = 4, 16.
CASES = [case for length, n in [(1, 1), (2, 4), (45, 1), (64, 16), (77, 4)] for case in shape_variants(length, n)]


@pytest.fixture
def sequential(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every CPU scan under autograd takes the sequential path, however small."""
    monkeypatch.setattr(scan_sequential, "SEQUENTIAL_MIN_STEP_STATES", 0)


def _assert_close(errors: dict[str, float], tolerance: float) -> None:
    assert any(name.startswith("grad_") for name in errors)
    bad = {name: err for name, err in errors.items() if not err < tolerance}
    assert not bad, f"relative errors over {tolerance}: {bad}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.label())
def test_matches_reference_with_gradients(case: ScanCase, sequential: None) -> None:
    _assert_close(compare_backend(case, "torch", dtype=torch.float64, seed=31), 1e-10)
    _assert_close(compare_backend(case, "torch", dtype=torch.float32, seed=32), 1e-5)
    _assert_close(compare_backend(case, "torch", dtype=torch.bfloat16, seed=33), 2e-2)


def _problem(gen: torch.Generator, batch: int = 3, dim: int = 8, length: int = 37, n_state: int = 2) -> dict:
    return {
        "u": torch.randn(batch, dim, length, generator=gen, dtype=torch.float64),
        "delta": torch.randn(batch, dim, length, generator=gen, dtype=torch.float64),
        "A": -torch.rand(dim, n_state, generator=gen, dtype=torch.float64) - 0.5,
        "B": torch.randn(batch, 4, n_state, length, generator=gen, dtype=torch.float64),
        "C": torch.randn(batch, 2, n_state, length, generator=gen, dtype=torch.float64),
        "D": torch.randn(dim, generator=gen, dtype=torch.float64),
        "z": torch.randn(batch, dim, length, generator=gen, dtype=torch.float64),
        "delta_bias": torch.randn(dim, generator=gen, dtype=torch.float64),
    }


def _run(inputs: dict, backend: str, **kwargs) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    leaves = {name: t.detach().clone().requires_grad_() for name, t in inputs.items()}
    y, last = selective_scan(**leaves, return_last_state=True, backend=backend, **kwargs)
    weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
    ((y * weights).sum() + last.sum()).backward()
    return [y, last], [leaves[name].grad for name in inputs]


def _relative_error(fast: torch.Tensor, ref: torch.Tensor) -> float:
    return float((fast.detach().double() - ref.detach()).norm() / ref.detach().norm().clamp_min(1.0))


@pytest.mark.parametrize("softplus", [True, False])
def test_time_major_inputs_give_time_major_results(softplus: bool, sequential: None) -> None:
    # (batch, L, dim) memory as SS2D lays u and Δ out: the same values, and results and gradients in that memory
    inputs = _problem(torch.Generator().manual_seed(34))
    ref_out, ref_grads = _run(inputs, "reference", delta_softplus=softplus)
    strided = {
        name: t.transpose(1, 2).contiguous().transpose(1, 2) if name in ("u", "delta") else t
        for name, t in inputs.items()
    }
    leaves = {name: t.detach().requires_grad_() for name, t in strided.items()}
    y, last = selective_scan(**leaves, delta_softplus=softplus, return_last_state=True, backend="torch")
    assert y.transpose(1, 2).is_contiguous()
    weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
    ((y * weights).sum() + last.sum()).backward()
    for fast, ref in zip([y, last], ref_out, strict=True):
        assert _relative_error(fast, ref) < 1e-12
    for name, ref in zip(inputs, ref_grads, strict=True):
        assert _relative_error(leaves[name].grad, ref) < 1e-12, name
    assert leaves["u"].grad.transpose(1, 2).is_contiguous() and leaves["delta"].grad.transpose(1, 2).is_contiguous()


def test_large_decays_and_positive_A(sequential: None) -> None:
    # |Δ·A| ≈ 100 a step (beyond exp's float32 range in log space) and A > 0 on some channels: the step loop is
    # the reference's arithmetic, with no range limit
    inputs = _problem(torch.Generator().manual_seed(35), n_state=1)
    inputs["delta"] = inputs["delta"].abs() * 100.0
    inputs["A"][:2] = 0.01
    ref_out, ref_grads = _run(inputs, "reference")
    out, grads = _run({name: t.float() for name, t in inputs.items()}, "torch")
    for fast, ref in [*zip(out, ref_out, strict=True), *zip(grads, ref_grads, strict=True)]:
        assert torch.isfinite(fast).all() and _relative_error(fast, ref) < 1e-5


def test_dispatch_by_step_size_and_chunk_option(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = scan_sequential.selective_scan_sequential
    monkeypatch.setattr(
        "ssmvlm.ops.scan_torch.selective_scan_sequential", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    inputs = _problem(torch.Generator().manual_seed(36), batch=2, dim=8, n_state=2)  # 32 states a step
    monkeypatch.setattr(scan_sequential, "SEQUENTIAL_MIN_STEP_STATES", 32)
    _run(inputs, "torch")
    with torch.no_grad():  # inference keeps its own path
        selective_scan(**inputs, backend="torch")
    _run(inputs, "torch", backend_options={"chunk_size": 8})  # an explicit chunk size asks for the chunked scan
    monkeypatch.setattr(scan_sequential, "SEQUENTIAL_MIN_STEP_STATES", 33)
    _run(inputs, "torch")
    assert len(calls) == 1
    assert not scan_sequential.use_sequential(torch.device("meta"), 10**9)


def test_softplus_to_a_few_ulp() -> None:
    x = torch.linspace(-100, 100, 400_001, dtype=torch.float64)
    exact = torch.log1p(torch.exp(x))  # torch's own softplus returns x itself above 20
    for dtype, ulps in ((torch.float32, 4), (torch.float64, 4)):
        wide = x.to(dtype)
        expected = torch.log1p(torch.exp(wide.double())).to(dtype).double()
        got = scan_sequential.softplus(wide).double()
        # where e^x is a handful of ulp below the smallest normal number, ulps are absolute
        scale = expected.abs().clamp_min(torch.finfo(dtype).tiny * 2**10)
        # exp(x) is off by up to |x|·ε/2 relatively from x's own rounding: measured against the rounded x's value
        assert float(((got - expected).abs() / scale).max()) <= ulps * torch.finfo(dtype).eps, dtype
    assert torch.equal(scan_sequential.softplus(torch.tensor([0.0, 1e4, -1e4])), torch.tensor([math.log(2), 1e4, 0.0]))
    torch.testing.assert_close(scan_sequential.softplus(x[::97]), exact[::97], rtol=1e-15, atol=0)
    normal = x[x > -80].float()  # torch's softplus, for results above float32's subnormals
    torch.testing.assert_close(scan_sequential.softplus(normal), F.softplus(normal), rtol=1e-6, atol=0)


@pytest.mark.parametrize("height,width", [(3, 5), (4, 4)])
def test_time_major_cross_scan_and_merge(height: int, width: int) -> None:
    gen = torch.Generator().manual_seed(37)
    x = torch.randn(2, 8, height, width, generator=gen).contiguous(memory_format=torch.channels_last)
    for grouped in (False, True):
        plain, fast = cross_scan(x, grouped=grouped), cross_scan(x, grouped=grouped, time_major=True)
        assert fast.permute(0, 3, 1, 2).is_contiguous() and torch.equal(fast, plain)
    y = torch.randn(2, 4, 8, height * width, generator=gen)
    y_tm = y.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1).requires_grad_()
    weights = torch.randn(2, 8, height * width, generator=gen)
    plain_grad = torch.autograd.grad((cross_merge(y.requires_grad_(), height, width) * weights).sum(), y)[0]
    for channels_last in (False, True):
        merged = cross_merge(y_tm, height, width, channels_last=channels_last)
        torch.testing.assert_close(merged, cross_merge(y, height, width), rtol=1e-6, atol=1e-6)
        assert merged.transpose(1, 2).is_contiguous() == channels_last
        # the backward is the adjoint, cross_scan's orders: the same gradient as the plain merge's
        torch.testing.assert_close(torch.autograd.grad((merged * weights).sum(), y_tm)[0], plain_grad)


def test_time_major_low_rank_delta() -> None:
    gen = torch.Generator().manual_seed(38)
    weight = torch.randn(12, 3, generator=gen, requires_grad=True)
    tokens = torch.randn(2, 5, 4, 3 + 2, generator=gen)  # (batch, L, G, R + 2N), a split of x_proj's output
    inputs = tokens.permute(0, 2, 3, 1)[:, :, :3]
    time_major = LowRankDelta(weight, inputs).materialize()
    expected = LowRankDelta(weight, inputs.contiguous()).materialize()
    assert time_major.transpose(1, 2).is_contiguous() and expected.is_contiguous()
    torch.testing.assert_close(time_major, expected, rtol=1e-6, atol=1e-6)


def test_vmamba_training_step_matches_the_chunked_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    # the nano model in float64: time-major orders and the sequential scan against the chunked scan's layout
    from ssmvlm.backbones import create_vision_backbone

    torch.manual_seed(39)
    backbone = create_vision_backbone("vmamba_nano", image_size=32).double()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    results = []
    for threshold in (0, math.inf):
        monkeypatch.setattr(scan_sequential, "SEQUENTIAL_MIN_STEP_STATES", threshold)
        backbone.zero_grad()
        out = backbone.forward_stages(images)[-1]
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in backbone.parameters() if p.grad is not None]))
    (out, grads), (out_ref, grads_ref) = results
    assert _relative_error(out, out_ref) < 1e-12 and len(grads) == len(grads_ref) > 100
    for grad, grad_ref in zip(grads, grads_ref, strict=True):
        assert float((grad - grad_ref).norm()) <= 1e-10 * float(grad_ref.norm()) + 1e-300
