"""The torch backend's CPU inference path (no autograd graph) against the float64 reference and its own
autograd path: every B/C layout, chunk padding, channel blocks, the per-block chunk choice and its fallback."""

from __future__ import annotations

import pytest
import torch

from ssmvlm.ops import scan_torch, selective_scan
from ssmvlm.ops.scan_testing import ScanCase, compare_backend, shape_variants

# L = 1, odd L, L a multiple of the chunk (no padding), N = 1 and N = 16.
INFERENCE_CASES = [case for length, n in [(1, 1), (45, 1), (64, 16), (77, 16)] for case in shape_variants(length, n)]


def _assert_close(errors: dict[str, float], tolerance: float) -> None:
    assert set(errors) <= {"y", "last_state"}, "the inference path should have been taken (no gradients)"
    bad = {name: err for name, err in errors.items() if not err < tolerance}
    assert not bad, f"relative errors over {tolerance}: {bad}"


@pytest.mark.parametrize("case", INFERENCE_CASES, ids=lambda c: c.label())
def test_inference_matches_reference_float64_and_float32(case: ScanCase) -> None:
    _assert_close(compare_backend(case, "torch", dtype=torch.float64, seed=21, gradients=False), 1e-10)
    _assert_close(compare_backend(case, "torch", dtype=torch.float32, seed=22, gradients=False), 1e-6)


BLOCK_CASES = shape_variants(77, 16, dim=12) + shape_variants(64, 1, dim=12)


@pytest.mark.parametrize("case", BLOCK_CASES, ids=lambda c: c.label())
def test_inference_in_small_channel_blocks(case: ScanCase, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan_torch, "_CPU_BLOCK_ELEMENTS", case.batch * case.n_state * case.length)
    u = torch.empty(case.batch, case.dim, case.length)
    assert scan_torch._channel_block(u, case.dim // max(case.groups, 1), case.n_state, False) == 1
    _assert_close(compare_backend(case, "torch", dtype=torch.float32, seed=23, gradients=False), 1e-6)


def _random_problem(gen: torch.Generator, dim: int = 8, length: int = 50, n_state: int = 4) -> dict:
    return {
        "u": torch.randn(2, dim, length, generator=gen),
        "delta": torch.rand(2, dim, length, generator=gen),
        "A": -torch.rand(dim, n_state, generator=gen) - 0.5,
        "B": torch.randn(2, 2, n_state, length, generator=gen),
        "C": torch.randn(2, n_state, length, generator=gen),
        "D": torch.randn(dim, generator=gen),
        "z": torch.randn(2, dim, length, generator=gen),
    }


def _relative_error(fast: torch.Tensor, ref: torch.Tensor) -> float:
    return float((fast.double() - ref).norm() / ref.norm())


def test_blocks_choose_their_own_chunks_and_overflowing_ones_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    # float32, one channel per block: channel 0 has |Δ·A| ≈ 100 a step (beyond exp's range even for one step:
    # the doubling scan), channel 1 ≈ 10 a step (4-step chunks), the rest ≈ 0.5 (full 16-step chunks).
    monkeypatch.setattr(scan_torch, "_CPU_BLOCK_ELEMENTS", 2 * 4 * 50)
    inputs = _random_problem(torch.Generator().manual_seed(24))
    inputs["delta"][:, 0] = 100.0 + inputs["delta"][:, 0]
    inputs["delta"][:, 1] = 10.0 + inputs["delta"][:, 1]
    inputs["A"] = -torch.ones(8, 4)
    chunks = [
        scan_torch._running_sums(
            inputs["delta"][:, c : c + 1], inputs["A"][c : c + 1].abs().amax(1), 16, 60.0, False, torch.empty(200)
        )[0]
        for c in range(3)
    ]
    assert chunks == [0, 4, 16]
    ref, ref_last = selective_scan(
        **{k: v.double() for k, v in inputs.items()}, return_last_state=True, backend="reference"
    )
    fast, fast_last = selective_scan(**inputs, return_last_state=True, backend="torch")
    assert torch.isfinite(fast).all()
    assert _relative_error(fast, ref) < 1e-6
    assert _relative_error(fast_last, ref_last) < 1e-6


def test_inference_and_autograd_paths_agree_with_options() -> None:
    gen = torch.Generator().manual_seed(25)
    inputs = _random_problem(gen, dim=12, length=100, n_state=16)
    kwargs = {"delta_bias": torch.randn(12, generator=gen), "delta_softplus": True, "return_last_state": True}
    for chunk_size in (None, 8):
        options = {"chunk_size": chunk_size} if chunk_size else None
        with torch.no_grad():
            y, last = selective_scan(**inputs, **kwargs, backend="torch", backend_options=options)
        leaf = inputs["u"].clone().requires_grad_()
        y_grad, last_grad = selective_scan(**(inputs | {"u": leaf}), **kwargs, backend="torch", backend_options=options)
        assert y_grad.requires_grad and not y.requires_grad
        torch.testing.assert_close(y, y_grad.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(last, last_grad.detach(), rtol=1e-5, atol=1e-5)


def test_inference_takes_strided_inputs() -> None:
    gen = torch.Generator().manual_seed(26)
    inputs = _random_problem(gen, length=48)
    strided = inputs | {
        "u": inputs["u"].transpose(1, 2).contiguous().transpose(1, 2),
        "delta": inputs["delta"].transpose(1, 2).contiguous().transpose(1, 2),
        "B": inputs["B"].transpose(2, 3).contiguous().transpose(2, 3),
    }
    assert not strided["delta"].is_contiguous()
    expected = selective_scan(**inputs, backend="torch")
    torch.testing.assert_close(selective_scan(**strided, backend="torch"), expected, rtol=0, atol=0)


def test_running_sums_avoid_matmuls_that_may_round(monkeypatch: pytest.MonkeyPatch) -> None:
    # Where float32 matrix products may round through bfloat16, the running sums are a cumsum instead.
    x = torch.randn(6, 16, generator=torch.Generator().manual_seed(27))
    matmuls = []
    mm = torch.mm
    monkeypatch.setattr(torch, "mm", lambda *args, **kwargs: matmuls.append(args) or mm(*args, **kwargs))
    original = torch.backends.mkldnn.matmul.fp32_precision
    try:
        for precision in ("ieee", "bf16"):
            torch.backends.mkldnn.matmul.fp32_precision = precision
            out = torch.empty_like(x)
            scan_torch._sums_within_chunks(x, out=out)
            torch.testing.assert_close(out, x.cumsum(-1), rtol=1e-6, atol=1e-6)
            assert len(matmuls) == 1, precision  # the product for "ieee" only
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = original
    scan_torch._sums_within_chunks(x.double(), out=torch.empty_like(x.double()))  # float64: always exact
    assert len(matmuls) == 2


@pytest.mark.parametrize("per_chunk", [0.3, 40.0])  # Σ|Δ·A| over 64 chunks: ≈ 19 (float64 products), ≈ 2560 (doubling)
def test_join_chunks_matches_a_loop(per_chunk: float) -> None:
    gen = torch.Generator().manual_seed(28)
    decay = torch.exp(-per_chunk * torch.rand(3, 5, 64, generator=gen))
    x = torch.randn(3, 5, 64, generator=gen)
    expected, state = [], torch.zeros(3, 5)
    for k in range(64):
        state = decay[..., k] * state + x[..., k]
        expected.append(state)
    result = scan_torch._join_chunks(decay.clone(), x.clone())
    torch.testing.assert_close(result, torch.stack(expected, -1), rtol=1e-5, atol=1e-6)


def test_long_sequence_whose_decays_leave_float64_range() -> None:
    # Σ Δ·A ≈ −2000 over the sequence: the chunk products underflow float64, the join takes the doubling scan.
    gen = torch.Generator().manual_seed(29)
    inputs = _random_problem(gen, length=2000)
    inputs["delta"] = 0.5 + inputs["delta"]
    inputs["A"] = -torch.ones(8, 4) - torch.rand(8, 4, generator=gen)
    ref = selective_scan(**{k: v.double() for k, v in inputs.items()}, backend="reference")
    assert _relative_error(selective_scan(**inputs, backend="torch"), ref) < 1e-6


def test_workspace_serves_inference_mode_no_grad_and_dtypes() -> None:
    gen = torch.Generator().manual_seed(30)
    inputs = _random_problem(gen)
    bias = torch.randn(8, generator=gen, dtype=torch.float64)  # promoted float64 bias, float32 scan
    kwargs = {"delta_bias": bias, "delta_softplus": True}
    ref = selective_scan(**{k: v.double() for k, v in inputs.items()}, **kwargs, backend="reference")
    with torch.inference_mode():
        first = selective_scan(**inputs, **kwargs, backend="torch")
    with torch.no_grad():
        second = selective_scan(**inputs, **kwargs, backend="torch")
    wide = selective_scan(**{k: v.double() for k, v in inputs.items()}, **kwargs, backend="torch")
    with torch.inference_mode():
        third = selective_scan(**inputs, **kwargs, backend="torch")
    assert wide.dtype == torch.float64 and _relative_error(wide, ref) < 1e-12
    for y in (first, second, third):
        assert y.dtype == torch.float32 and _relative_error(y, ref) < 1e-6
    torch.testing.assert_close(first, third, rtol=0, atol=0)
