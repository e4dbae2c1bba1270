"""Where a host-bound selective scan's time goes: the host's time per call of the Triton backend, decomposed.

At the VMamba-S stage-3 shapes the GPU finishes a forward+backward in ~0.5–0.7 ms, so the call's wall time is the
host's. Each call is timed alone (``time.perf_counter`` around it) while the GPU sleeps, so no launch waits on the
queue; the variants alternate call by call and the median of 100 calls is reported, which is steadier than a mean
on the lent machines' hosts. Variants, each through ``selective_scan`` (forward+backward by
``torch.autograd.grad`` on every input, as ``scan_bench.py`` times it; and the no-grad forward):

- ``triton``: the backend as shipped (kernels launched through ``CachedLaunch``);
- ``triton launch``: the same with every launch through Triton's ``kernel[grid](...)``;
- ``no launches``: the same Python, allocations and torch ops with the kernel launches left out (not a result);
- ``floor``: an autograd Function with the same inputs that allocates its output and gradients and launches
  nothing: what autograd itself costs such a call on this host.

    PYTHONPATH=src python3 benchmarks/scan_host.py --out scan_host.json
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import torch
from scan_bench import GPU_SHAPES, make_inputs

from ssmvlm.ops.selective_scan import register_scan_backend, selective_scan
from ssmvlm.utils.io import atomic_write_json

LAUNCHES = ("_launch_scan_fwd", "_launch_scan_bwd", "_launch_segment_starts")


def _module_copy():
    """A second instance of the Triton backend's module, whose launches can be replaced without touching ours."""
    spec = importlib.util.find_spec("ssmvlm.ops.scan_triton")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _TritonLaunch:
    def __init__(self, cached) -> None:
        self.kernel = cached.kernel

    def __call__(self, grid, *args, num_warps, **constexprs) -> None:
        self.kernel[grid](*args, num_warps=num_warps, **constexprs)


class _Floor(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias):
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        return torch.empty_like(u)

    @staticmethod
    def backward(ctx, dy):
        return tuple(None if t is None else torch.empty_like(t) for t in ctx.saved_tensors)


def _floor(u, delta, A, B, C, D=None, z=None, delta_bias=None, **_) -> torch.Tensor:
    return _Floor.apply(u, delta, A, B, C, D, z, delta_bias)


def register_variants() -> list[str]:
    from ssmvlm.ops import scan_triton

    triton_launch, no_launches = _module_copy(), _module_copy()
    for name in LAUNCHES:
        setattr(triton_launch, name, _TritonLaunch(getattr(triton_launch, name)))
        setattr(no_launches, name, lambda *args, **kwargs: None)
    variants = {"triton": scan_triton.selective_scan_triton, "triton launch": triton_launch.selective_scan_triton,
                "no launches": no_launches.selective_scan_triton}
    for name, fn in variants.items():
        register_scan_backend(name, fn, lazy_inputs=True)
    register_scan_backend("floor", _floor)
    return [*variants, "floor"]


def host_times(shape, variants: list[str], rounds: int = 25, calls: int = 4) -> list[dict]:
    inputs = make_inputs(shape, "cuda", torch.bfloat16, requires_grad=True)
    frozen = make_inputs(shape, "cuda", torch.bfloat16, requires_grad=False)
    leaves = [t for t in inputs.values() if isinstance(t, torch.Tensor)]
    dy = torch.randn_like(inputs["u"])
    steps = {}
    for name in variants:
        steps[name, "forward+backward"] = lambda b=name: torch.autograd.grad(
            selective_scan(**inputs, backend=b), leaves, dy)
        steps[name, "forward (no grad)"] = lambda b=name: selective_scan(**frozen, backend=b)
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in steps}
    for _ in range(rounds):
        for key, step in steps.items():  # warm: every launch specialized and compiled before timing
            with torch.set_grad_enabled(key[1] == "forward+backward"):
                step()
        torch.cuda.synchronize()
        torch.cuda._sleep(int(4e8))  # ~0.2 s: the calls below are enqueued behind it, none waits on the GPU
        for _ in range(calls):
            for key, step in steps.items():
                with torch.set_grad_enabled(key[1] == "forward+backward"):
                    start = time.perf_counter()
                    step()
                    samples[key].append(time.perf_counter() - start)
        torch.cuda.synchronize()
    rows = []
    for (variant, call), values in samples.items():
        values.sort()
        rows.append({"shape": shape.name, "variant": variant, "call": call, "calls": len(values),
                     "median_us": 1e6 * statistics.median(values), "p20_us": 1e6 * values[len(values) // 5]})
    return rows


def markdown(rows: list[dict], device: str) -> str:
    lines = [f"host time per call, {device} (median of single calls; 20th percentile in brackets)", "",
             "| shape | call | " + " | ".join(dict.fromkeys(r["variant"] for r in rows)) + " |",
             "|---|---|" + "---|" * len(dict.fromkeys(r["variant"] for r in rows))]
    for shape in dict.fromkeys(r["shape"] for r in rows):
        for call in dict.fromkeys(r["call"] for r in rows):
            cells = [f"{r['median_us']:.0f} µs ({r['p20_us']:.0f})" for r in rows
                     if r["shape"] == shape and r["call"] == call]
            lines.append(f"| {shape} | {call} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("scan_host needs CUDA")
    variants = register_variants()
    rows = [row for shape in GPU_SHAPES[:2] for row in host_times(shape, variants)]
    device = torch.cuda.get_device_name()
    table = markdown(rows, device)
    print(table)
    if args.out:
        atomic_write_json(args.out, {"device": device, "torch": torch.__version__, "rows": rows,
                                     "markdown": table})


if __name__ == "__main__":
    main()
