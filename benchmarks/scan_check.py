"""GPU correctness check of the selective-scan backends (exit status 1 on any mismatch or NaN).

Every case draws fresh random inputs, runs the backend on CUDA (forward and backward, float32 and bfloat16
inputs) and compares the output, the last state and every input gradient with the float64 CPU reference.
The issue's benchmark shapes are scaled down in batch and channels where the sequential float64 reference
would be too slow, but keep their L, N and B/C layout (at batch 1 their few channels make the Triton kernels
split L into segments); the short ones run again under deterministic algorithms. Then the full-size shapes
are run once more, checked against the ``torch`` backend on the GPU (forward, with and without autograd: the
two launch different tiles) and for finite gradients, and a low-rank Δ projected inside the kernel (and mirrored
rows read backwards) against the materialized inputs, at the parts of a 4096² batch-1 VMamba-S forward too.

    PYTHONPATH=src python3 benchmarks/scan_check.py [--backends triton torch] [--quick] [--full-size-only]
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from ssmvlm.ops import LowRankDelta, MirroredRows, available_backends, selective_scan
from ssmvlm.ops.scan_testing import ScanCase, compare_backend, shape_variants
from ssmvlm.ops.selective_scan import register_scan_backend

TOLERANCE = {torch.float32: 1e-6, torch.bfloat16: 2e-2}
# Long sequences accumulate float32 rounding over thousands of steps (the issue's bound is for test shapes).
LONG_TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def scaled_issue_cases() -> list[ScanCase]:
    return [
        ScanCase(4, 64, 196, 1, "grouped", groups=4, with_z=False),      # VMamba-S stage 3, 224²
        ScanCase(1, 32, 4096, 1, "grouped", groups=4, with_z=False),     # VMamba-S stage 3, 1024²
        ScanCase(2, 32, 197, 16, "variable"),                            # Vim-S
        ScanCase(1, 16, 16384, 16, "variable", with_z=False),            # long sequence
    ]


def small_cases(quick: bool) -> list[ScanCase]:
    grid = [(1, 1), (7, 1), (129, 1), (300, 16), (65, 256)] if not quick else [(7, 1), (129, 16), (33, 256)]
    return [case for length, n in grid for case in shape_variants(length, n, dim=8 if n < 256 else 4)]


def full_size_checks(backend: str) -> list[str]:
    """The issue's shapes at full size: forward against the torch backend, gradients finite."""
    failures = []
    # the issue's four and a batch-1 stage-1 part of VMamba-S at 4096² (few channels: L split into segments)
    shapes = [(128, 1536, 196, 1, 4), (8, 1536, 4096, 1, 4), (1, 16, 1 << 20, 1, 4), (64, 768, 197, 16, 1),
              (4, 1536, 16384, 16, 1)]
    for batch, dim, length, n, groups in shapes:
        gen = torch.Generator(device="cuda").manual_seed(batch + length)
        u = torch.randn(batch, dim, length, device="cuda", generator=gen, requires_grad=True)
        delta = (torch.randn(batch, dim, length, device="cuda", generator=gen) - 1).requires_grad_()
        A = -torch.exp(torch.randn(dim, n, device="cuda", generator=gen) * 0.5).requires_grad_()
        B = torch.randn(batch, groups, n, length, device="cuda", generator=gen, requires_grad=True)
        C = torch.randn(batch, groups, n, length, device="cuda", generator=gen, requires_grad=True)
        D = torch.randn(dim, device="cuda", generator=gen, requires_grad=True)
        bias = (torch.randn(dim, device="cuda", generator=gen) * 0.5).requires_grad_()
        args = dict(D=D, delta_bias=bias, delta_softplus=True)
        y = selective_scan(u, delta, A, B, C, **args, backend=backend)
        with torch.no_grad():
            # without autograd the forward takes the inference launch (other tiles and warps, no checkpoints)
            y_inference = selective_scan(u, delta, A, B, C, **args, backend=backend)
            try:
                expected = selective_scan(u, delta, A, B, C, **args, backend="torch")
            except torch.OutOfMemoryError:
                print(f"  (torch backend out of memory at {batch}x{dim}x{length}; inference checked against "
                      "training)")
                expected = y if torch.isfinite(y).all() else torch.full_like(y, float("nan"))
            err, err_inference = (float((out.double() - expected.double()).norm() / expected.double().norm())
                                  for out in (y, y_inference))
            del y_inference, expected
            torch.cuda.empty_cache()
        grads = torch.autograd.grad(y, [u, delta, A, B, C, D, bias], torch.randn_like(y))
        finite = all(bool(torch.isfinite(g).all()) for g in grads)
        ok = max(err, err_inference) < LONG_TOLERANCE[torch.float32] and finite
        label = f"full {batch}x{dim}x{length} N{n} G{groups}"
        status = "ok  " if ok else "FAIL"
        print(f"{status} {backend:8s} {label:40s} fwd vs torch {err:.1e} (inference {err_inference:.1e}) "
              f"grads finite {finite}", flush=True)
        if not ok:
            failures.append(label)
        del y, grads
        torch.cuda.empty_cache()
    return failures


def lazy_input_checks(backend: str) -> list[str]:
    """Δ given as dt_proj's weight and inputs (projected inside the kernel at inference, or written out by a GEMM
    from rank 16 on one-channel programs), and u as mirrored rows (read backwards), against the same scan of the
    materialized inputs: VMamba-S shapes, then the parts of a 4096² batch-1 forward as SS2D hands them over
    (float32 inputs, so both sides see the same Δ up to float32 rounding)."""
    failures = []
    cases = [(8, 1536, 4096, 24, False), (1, 16, 1 << 20, 6, False), (2, 64, 196, 6, False),
             (1, 64, 1 << 20, 6, True), (1, 128, 1 << 18, 12, True), (1, 512, 1 << 16, 24, True),
             (1, 2048, 1 << 14, 48, True)]
    groups = 4
    for batch, dim, length, rank, mirrored in cases:
        gen = torch.Generator(device="cuda").manual_seed(length + dim)
        u = torch.randn(batch, dim // 2 if mirrored else dim, length, device="cuda", generator=gen)
        u = MirroredRows(u) if mirrored else u
        x_dbl = torch.randn(batch, groups, rank + 2, length, device="cuda", generator=gen)  # Δ rows, B, C
        delta = LowRankDelta(torch.randn(dim, rank, device="cuda", generator=gen) * rank**-0.5, x_dbl[:, :, :rank])
        A = -torch.exp(torch.randn(dim, 1, device="cuda", generator=gen) * 0.5)
        B, C = x_dbl[:, :, rank : rank + 1].contiguous(), x_dbl[:, :, rank + 1 :].contiguous()
        args = dict(D=torch.randn(dim, device="cuda", generator=gen), delta_softplus=True,
                    delta_bias=torch.randn(dim, device="cuda", generator=gen) * 0.5 - 2)
        with torch.no_grad():
            fused = selective_scan(u, delta, A, B, C, **args, backend=backend)
            plain_u = u.materialize() if mirrored else u
            expected = selective_scan(plain_u, delta.materialize(), A, B, C, **args, backend=backend)
        err = float((fused.double() - expected.double()).norm() / expected.double().norm())
        ok = err < LONG_TOLERANCE[torch.float32] and math.isfinite(err)
        label = f"low-rank delta{', mirrored u' if mirrored else ''} {batch}x{dim}x{length} R{rank} G{groups}"
        print(f"{'ok  ' if ok else 'FAIL'} {backend:8s} {label:52s} fused vs materialized {err:.1e}", flush=True)
        if not ok:
            failures.append(label)
        torch.cuda.empty_cache()
    return failures


def check_case(
    backend: str, case: ScanCase, dtype: torch.dtype, tolerance: float, seed: int, tag: str = ""
) -> list[str]:
    """One case against the float64 reference: prints a line, returns the failure (if any)."""
    errors = compare_backend(case, backend, dtype=dtype, device="cuda", seed=seed)
    worst_name, worst = max(errors.items(), key=lambda kv: math.inf if math.isnan(kv[1]) else kv[1])
    ok = all(not math.isnan(v) and v < tolerance for v in errors.values())
    label = f"{backend} {tag or str(dtype).removeprefix('torch.')}"
    print(f"{'ok  ' if ok else 'FAIL'} {label:22s} {case.label():48s} worst {worst_name}={worst:.1e}", flush=True)
    return [] if ok else [f"{label} {case.label()}: {errors}"]


def deterministic_checks(backend: str, seed: int) -> list[str]:
    """The short scaled issue cases once more under deterministic algorithms (variable B/C gradients then come
    from per-block partials summed by torch instead of atomic adds)."""
    failures = []
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        for index, case in enumerate(c for c in scaled_issue_cases() if c.length < 4096):
            failures += check_case(backend, case, torch.float32, LONG_TOLERANCE[torch.float32], seed + index,
                                   "deterministic")
    finally:
        torch.use_deterministic_algorithms(False)
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["triton", "torch"])
    parser.add_argument("--quick", action="store_true", help="fewer small cases")
    parser.add_argument("--full-size-only", action="store_true",
                        help="only the issue's shapes at full size (a fresh machine compiles every small case's "
                             "kernels, so the two parts fit separate calls)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("scan_check: CUDA is not available", file=sys.stderr)
        return 2
    # Training launches are one-warp programs; blocks of several warps (a tile's B/C gradient summed across
    # warps before the atomic add) are checked through an explicit launch.
    if "triton" in args.backends:
        from ssmvlm.ops.scan_triton import selective_scan_triton

        blocks = {"BLOCK_D": 8, "BLOCK_L": 64, "num_warps": 4, "BWD_BLOCK_D": 8, "bwd_num_warps": 4}
        register_scan_backend("triton_blocks", lambda *a, **k: selective_scan_triton(*a, **k, config=blocks))
    missing = [b for b in args.backends if b not in available_backends()]
    if missing:
        print(f"scan_check: backends not registered: {missing} ({available_backends()})", file=sys.stderr)
        return 2
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    failures: list[str] = []
    start = time.perf_counter()
    cases = [] if args.full_size_only else [(c, TOLERANCE) for c in small_cases(args.quick)]
    cases += [(c, LONG_TOLERANCE) for c in scaled_issue_cases()]
    for backend in args.backends:
        for index, (case, tolerance) in enumerate(cases):
            # The float64 CPU reference of a long case takes a minute; one dtype is enough there.
            for dtype in (torch.float32, torch.bfloat16) if case.length < 4096 else (torch.bfloat16,):
                failures += check_case(backend, case, dtype, tolerance[dtype], args.seed + index)
        if backend == "triton":
            for index, case in enumerate(scaled_issue_cases()[::2]):
                failures += check_case("triton_blocks", case, torch.float32, LONG_TOLERANCE[torch.float32], index)
            failures += deterministic_checks(backend, args.seed)
            failures += lazy_input_checks(backend)
            failures += full_size_checks(backend)
    print(f"checked in {time.perf_counter() - start:.0f} s")
    if failures:
        print(f"\nSCAN CHECK FAILED: {len(failures)} mismatches", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    print("SCAN CHECK PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
