"""Selective-scan and cross-scan speed: time, bytes moved, GB/s and fraction of the measured copy bandwidth.

GPU (default): measures device-to-device copy bandwidth first, then for the issue's four shapes (bf16 inputs)
times forward and forward+backward for every registered fast backend (median of CUDA-event timings via
``triton.testing.do_bench``), and the VMamba anchors' speedups; for forward+backward also the GPU's busy time
per call (kernel durations from torch.profiler: where it is below the wall time, the call waits on the host's
launches) and the host's enqueue time per call (calls launched back to back without waiting). Bytes are the
fewest a call must move: every input read once and the output written once (for forward+backward also dy
read, every input gradient written, and the forward again). Also times cross_scan/cross_merge (torch vs
fused), batch-1 inference scans of the parts of a 4096² VMamba-S forward (as SS2D hands them over, and plain),
and optional tile sweeps.

CPU (``--cpu``): torch vs reference at L = 1024 with the machine's threads.

    PYTHONPATH=src python3 benchmarks/scan_bench.py --out scan.json
    PYTHONPATH=src python3 benchmarks/scan_bench.py --cpu --out scan_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ssmvlm.ops import LowRankDelta, available_backends, cross_merge, cross_scan, selective_scan
from ssmvlm.utils.io import atomic_write_json


@dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    dim: int
    length: int
    n_state: int
    groups: int
    with_z: bool
    anchor_fwd_ms: float | None = None
    anchor_fwdbwd_ms: float | None = None


# Anchors: VMamba's selective_scan_cuda_oflex on one H100 (issue 3), bf16 inputs.
GPU_SHAPES = [
    Shape("VMamba-S s3 224² (G=4)", 128, 1536, 196, 1, 4, False, 0.363, 1.42),
    Shape("VMamba-S s3 1024² (G=4)", 8, 1536, 4096, 1, 4, False, 0.256, 1.03),
    Shape("Vim-S (z, variable B/C)", 64, 768, 197, 16, 1, True),
    Shape("long L=16k N=16", 4, 1536, 16384, 16, 1, False, 2.16, 10.1),
]
# Batch-1 inference scans of VMamba-S on large maps, as SS2D's channel parts hand them over at 4096² (forward only):
# rows = 4 orders × the part's channels, L = the stage's tokens, Δ's rank that of the stage's dt_proj.
BATCH1_SHAPES = [
    (Shape("64 rows × 1M (stage 1)", 1, 64, 1 << 20, 1, 4, False), 6),
    (Shape("128 rows × 262k (stage 2)", 1, 128, 1 << 18, 1, 4, False), 12),
    (Shape("512 rows × 65k (stage 3)", 1, 512, 1 << 16, 1, 4, False), 24),
    (Shape("2048 rows × 16k (stage 4)", 1, 2048, 1 << 14, 1, 4, False), 48),
]
CPU_SHAPES = [
    Shape("VMamba nano-like N=1 (G=4)", 1, 192, 1024, 1, 4, False),
    Shape("VMamba N=1 (G=4)", 2, 384, 1024, 1, 4, False),
    Shape("Vim nano-like N=16", 1, 192, 1024, 16, 1, True),
]


def make_inputs(shape: Shape, device: str, dtype: torch.dtype, requires_grad: bool) -> dict:
    gen = torch.Generator(device=device).manual_seed(0)

    def rand(*size: int, dt: torch.dtype = dtype, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
        t = torch.randn(*size, device=device, generator=gen, dtype=torch.float32) * scale + shift
        return t.to(dt).requires_grad_(requires_grad)

    b, d, L, n, g = shape.batch, shape.dim, shape.length, shape.n_state, shape.groups
    a_log = torch.randn(d, n, device=device, generator=gen) * 0.5
    return {
        "u": rand(b, d, L),
        "delta": rand(b, d, L, shift=-4.0),  # softplus(Δ + bias) ≈ 0.02–0.1, as trained dt
        "A": (-torch.exp(a_log)).requires_grad_(requires_grad),
        "B": rand(b, g, n, L),
        "C": rand(b, g, n, L),
        "D": rand(d, dt=torch.float32),
        "z": rand(b, d, L) if shape.with_z else None,
        "delta_bias": rand(d, dt=torch.float32, scale=0.5),
        "delta_softplus": True,
    }


def bytes_moved(inputs: dict) -> tuple[int, int]:
    """Fewest bytes (forward, forward+backward): inputs in, y out; backward adds dy in and input grads out."""
    tensors = [t for k, t in inputs.items() if isinstance(t, torch.Tensor)]
    read = sum(t.numel() * t.element_size() for t in tensors)
    out = inputs["u"].numel() * inputs["u"].element_size()
    forward = read + out
    return forward, forward + (read + out) + read  # backward: inputs + dy in, one gradient per input out


def gpu_copy_bandwidth() -> float:
    import triton.testing

    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=50, rep=300, return_mode="median")
    return 2 * src.numel() / (ms * 1e-3)


def time_gpu(fn, warmup: int = 25, rep: int = 200) -> float:
    import triton.testing

    return triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median")


def _time_scan(
    shape: Shape, kw: dict, with_backward: bool, breakdown: bool = False
) -> tuple[float, float | None, tuple[float, float] | None, int, int]:
    """Forward and forward+backward wall times, and with ``breakdown`` the GPU's busy time and the host's enqueue
    time per forward+backward."""
    with torch.no_grad():
        inputs = make_inputs(shape, "cuda", torch.bfloat16, requires_grad=False)
        fwd_ms = time_gpu(lambda: selective_scan(**inputs, **kw))
    fwd_bytes, total_bytes = bytes_moved(inputs)
    if not with_backward:
        return fwd_ms, None, None, fwd_bytes, total_bytes
    inputs = make_inputs(shape, "cuda", torch.bfloat16, requires_grad=True)
    leaves = [t for t in inputs.values() if isinstance(t, torch.Tensor)]
    dy = torch.randn_like(inputs["u"])

    def step():
        return torch.autograd.grad(selective_scan(**inputs, **kw), leaves, dy)

    fwdbwd_ms = time_gpu(step, warmup=10, rep=100)
    busy_host = (gpu_busy_ms(step), host_enqueue_ms(step)) if breakdown else None
    return fwd_ms, fwdbwd_ms, busy_host, fwd_bytes, total_bytes


def gpu_busy_ms(fn, calls: int = 10) -> float:
    """GPU time per call: the kernels' durations summed (torch.profiler), without the gaps in which the GPU waits
    for the host to launch the next one (a short call's wall time is the host's launch time)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    return sum(event.self_device_time_total for event in prof.key_averages()) / 1e3 / calls


def host_enqueue_ms(fn, calls: int = 40) -> float:
    """Host time per call while the GPU runs behind (no synchronization inside the loop): where it exceeds the
    GPU's busy time, the host's launch path sets the call's wall time."""
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize()
    return elapsed / calls * 1e3


def bench_scan_gpu(shape: Shape, backend: str, copy_bw: float, config: dict | None = None) -> dict:
    kw = {"backend": backend, "backend_options": {"config": config} if config else None}
    result = {"shape": shape.name, "backend": backend, "config": config}
    try:
        fwd_ms, fwdbwd_ms, busy_host, fwd_bytes, total_bytes = _time_scan(
            shape, kw, with_backward=True, breakdown=config is None)
    except torch.OutOfMemoryError:
        return result | {"error": "out of memory"}
    finally:
        torch.cuda.empty_cache()
    result |= {
        "fwd_ms": fwd_ms, "fwd_bytes": fwd_bytes, "fwd_GBps": fwd_bytes / fwd_ms / 1e6,
        "fwd_frac_copy": fwd_bytes / (fwd_ms * 1e-3) / copy_bw,
    }
    if fwdbwd_ms is not None:
        result |= {
            "fwdbwd_ms": fwdbwd_ms, "fwdbwd_bytes": total_bytes, "fwdbwd_GBps": total_bytes / fwdbwd_ms / 1e6,
            "fwdbwd_frac_copy": total_bytes / (fwdbwd_ms * 1e-3) / copy_bw,
        }
        if shape.anchor_fwd_ms:
            result |= {"speedup_fwd": shape.anchor_fwd_ms / fwd_ms,
                       "speedup_fwdbwd": shape.anchor_fwdbwd_ms / fwdbwd_ms}
    if busy_host is not None:
        result["fwdbwd_gpu_busy_ms"], result["fwdbwd_host_ms"] = busy_host
    return result


def bench_cross_scan_gpu(copy_bw: float) -> list[dict]:
    """cross_scan from plain and channels-last maps, cross_merge to plain and channels-last memory: tensor ops
    against the fused kernels."""
    rows = []
    for batch, channels, size in [(128, 384, 14), (8, 384, 64), (64, 192, 56)]:
        plain = torch.randn(batch, channels, size, size, device="cuda", dtype=torch.bfloat16)
        y = torch.randn(batch, 4, channels, size * size, device="cuda", dtype=torch.bfloat16)
        nbytes = 5 * plain.numel() * plain.element_size()
        for layout, x in (("plain", plain), ("channels_last", plain.contiguous(memory_format=torch.channels_last))):
            for fused in (False, True):
                cl = layout == "channels_last"
                scan_ms = time_gpu(lambda x=x, fused=fused: cross_scan(x, fused=fused))
                merge_ms = time_gpu(
                    lambda y=y, size=size, fused=fused, cl=cl: cross_merge(y, size, size, fused=fused, channels_last=cl)
                )
                rows.append({"shape": f"{batch}x{channels}x{size}x{size}", "layout": layout, "fused": fused,
                             "scan_ms": scan_ms, "merge_ms": merge_ms,
                             "scan_frac_copy": nbytes / (scan_ms * 1e-3) / copy_bw,
                             "merge_frac_copy": nbytes / (merge_ms * 1e-3) / copy_bw})
    return rows


def tile_sweep(copy_bw: float) -> list[dict]:
    """Forward and forward+backward time of the Triton kernels for other tiles and warps (guides the default)."""
    # One-warp programs: the scan stays in the warp, 8 steps a thread from 256-step tiles (notes_scan.md, one warp).
    one_warp = [(1, 128, 1), (1, 256, 1), (1, 512, 1), (2, 128, 1), (2, 256, 1), (4, 128, 1)]
    n1 = [*one_warp, (4, 256, 4), (8, 64, 4), (32, 32, 8), (8, 128, 8)]
    n16 = [*one_warp, (8, 64, 4), (8, 32, 2), (16, 32, 4)]
    rows = []
    for shape in GPU_SHAPES:
        for block_d, block_l, warps in n1 if shape.n_state == 1 else n16:
            # both passes on the same tile (a backward block left at its default would run many channels in
            # a tile sized for one warp)
            cfg = {"BLOCK_D": block_d, "BLOCK_L": block_l, "num_warps": warps, "BWD_BLOCK_D": block_d,
                   "bwd_num_warps": warps, "BWD_BLOCK_L": block_l}
            rows.append(bench_scan_gpu(shape, "triton", copy_bw, config=cfg))
            fwd_ms, fwdbwd_ms = rows[-1].get("fwd_ms", float("nan")), rows[-1].get("fwdbwd_ms", float("nan"))
            print(f"sweep {shape.name} {cfg} fwd {fwd_ms:.4f} ms fwd+bwd {fwdbwd_ms:.4f} ms", flush=True)
    return rows


def forward_sweep() -> list[dict]:
    """Forward (inference) time for other one-warp tiles; each output's relative difference from the default
    launch's."""
    rows = []
    for shape in GPU_SHAPES:
        with torch.no_grad():
            inputs = make_inputs(shape, "cuda", torch.bfloat16, requires_grad=False)
            expected = selective_scan(**inputs, backend="triton").float()
            for block_d, block_l, warps in [(1, 256, 1), (1, 512, 1), (2, 128, 1), (4, 128, 1)]:
                options = {"config": {"BLOCK_D": block_d, "BLOCK_L": block_l, "num_warps": warps}}
                ms = time_gpu(lambda i=inputs, o=options: selective_scan(**i, backend="triton", backend_options=o))
                y = selective_scan(**inputs, backend="triton", backend_options=options).float()
                diff = float((y - expected).norm() / expected.norm())
                rows.append({"shape": shape.name, "config": options["config"], "fwd_ms": ms,
                             "rel_diff_from_default": diff,
                             "speedup_fwd": shape.anchor_fwd_ms / ms if shape.anchor_fwd_ms else None})
                print(f"fwd-sweep {shape.name} {options['config']} fwd {ms:.4f} ms (vs default output {diff:.1e})",
                      flush=True)
        torch.cuda.empty_cache()
    return rows


def backward_sweep(copy_bw: float) -> list[dict]:
    """Forward+backward time for backward channel blocks and warps of their own, at a few tile lengths."""
    n1 = {64: (8, 4), 128: (8, 8), 256: (4, 4)}  # BLOCK_L → the forward's (BLOCK_D, warps)
    n16 = {32: (8, 2), 64: (8, 4)}
    rows = []
    for shape in GPU_SHAPES:
        for block_l, (block_d, warps) in (n1 if shape.n_state == 1 else n16).items():
            for bwd_d, bwd_warps in [(2, 2), (4, 2), (4, 4), (8, 4), (16, 4), (16, 8)]:
                cfg = {"BLOCK_D": block_d, "BLOCK_L": block_l, "num_warps": warps, "BWD_BLOCK_D": bwd_d,
                       "bwd_num_warps": bwd_warps, "BWD_BLOCK_L": block_l}
                rows.append(bench_scan_gpu(shape, "triton", copy_bw, config=cfg))
                print(f"bwd-sweep {shape.name} {cfg} fwd+bwd {rows[-1].get('fwdbwd_ms', float('nan')):.4f} ms",
                      flush=True)
    return rows


# Batch-1 launch variants (--batch1-sweep), (BLOCK_D, BLOCK_L, warps) with L split into segments as by default
# unless given: one-warp programs of one channel and of eight, and one-channel blocks of eight warps.
BATCH1_SWEEP = [{"BLOCK_D": 1, "BLOCK_L": 256, "num_warps": 1}, {"BLOCK_D": 8, "BLOCK_L": 128, "num_warps": 1},
                {"BLOCK_D": 1, "BLOCK_L": 1024, "num_warps": 8}]


def batch1_inference(copy_bw: float, sweep: bool) -> list[dict]:
    """Forward time of batch-1 inference scans as SS2D hands them over: u as mirrored rows (two orders written,
    their reverses read backwards) and Δ in low-rank form (projected in the kernel, or written out by a GEMM
    from rank 16 on one-channel programs, inside the timed call) — against a plain u and a full Δ, and with
    ``sweep`` other tiles. Bytes: the fewest a plain call moves (u, Δ, B, C in, y out)."""
    from ssmvlm.ops import MirroredRows
    from ssmvlm.ops.scan_triton import resolve_launch

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    rows = []
    for shape, rank in BATCH1_SHAPES:
        with torch.no_grad():
            inputs = make_inputs(shape, "cuda", torch.bfloat16, requires_grad=False)
            fwd_bytes, _ = bytes_moved(inputs)
            x_dbl = torch.randn(1, shape.groups, rank + 2, shape.length, device="cuda", dtype=torch.bfloat16)
            weight = torch.randn(shape.dim, rank, device="cuda") * rank**-0.5
            as_ss2d = inputs | {"u": MirroredRows(inputs["u"][:, : shape.dim // 2]),
                                "delta": LowRankDelta(weight, x_dbl[:, :, :rank])}
            variants = [("full Δ, plain u", inputs, None), ("as SS2D", as_ss2d, None)]
            variants += [("as SS2D, sweep", as_ss2d, c) for c in BATCH1_SWEEP if sweep]
            for label, scan_inputs, config in variants:
                options = {"config": config} if config else None
                ms = time_gpu(lambda i=scan_inputs, o=options: selective_scan(**i, backend="triton", backend_options=o))
                ss2d = label.startswith("as SS2D")
                resolved, write_delta = resolve_launch(
                    shape.dim, shape.length, 1, (shape.groups,) * 3 + ((2,) if ss2d else ()), training=False,
                    batch=1, min_programs=4 * sms, dt_rank=rank if ss2d else 0, overrides=config)
                if write_delta:
                    resolved |= {"Δ": "written out"}
                rows.append({"shape": shape.name, "rank": rank, "launch": label, "config": resolved, "fwd_ms": ms,
                             "fwd_frac_copy": fwd_bytes / (ms * 1e-3) / copy_bw})
                print(f"batch-1 {shape.name} R={rank} {label} {resolved}: fwd {ms:.4f} ms "
                      f"({100 * rows[-1]['fwd_frac_copy']:.0f}% copy)", flush=True)
        torch.cuda.empty_cache()
    return rows


def run_gpu(args: argparse.Namespace) -> dict:
    copy_bw = gpu_copy_bandwidth()
    print(f"device {torch.cuda.get_device_name()}; copy bandwidth {copy_bw / 1e9:.0f} GB/s", flush=True)
    backends = [b for b in args.backends if b in available_backends()]
    rows = []
    for shape in GPU_SHAPES if not args.batch1_only else []:
        for backend in backends:
            row = bench_scan_gpu(shape, backend, copy_bw)
            print(json.dumps(row), flush=True)
            rows.append(row)
    cross = bench_cross_scan_gpu(copy_bw) if not args.batch1_only else []
    batch1 = batch1_inference(copy_bw, args.batch1_sweep)
    sweep = tile_sweep(copy_bw) if args.sweep else []
    bwd_sweep = backward_sweep(copy_bw) if args.bwd_sweep else []
    fwd_sweep = forward_sweep() if args.fwd_sweep else []
    return {"device": torch.cuda.get_device_name(), "copy_GBps": copy_bw / 1e9, "scan": rows,
            "cross_scan": cross, "batch1": batch1, "tile_sweep": sweep, "backward_sweep": bwd_sweep,
            "forward_sweep": fwd_sweep}


def time_cpu_pairs(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Interleaved timings (ms): one call of each function per round, so load from other processes on a shared
    machine falls on both sides of a ratio alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def run_cpu(args: argparse.Namespace) -> dict:
    rows = []
    for shape in CPU_SHAPES:
        inputs = make_inputs(shape, "cpu", torch.float32, requires_grad=False)
        with torch.no_grad():
            calls = {
                name: lambda name=name, inputs=inputs: selective_scan(**inputs, backend=name)
                for name in ("reference", "torch")
            }
            times = time_cpu_pairs(calls, args.repeats)
        ratios = [r / t for r, t in zip(times["reference"], times["torch"], strict=True)]
        row = {"shape": shape.name, "dims": asdict(shape), "threads": torch.get_num_threads(),
               "reference_ms": statistics.median(times["reference"]), "torch_ms": statistics.median(times["torch"]),
               "speedup": statistics.median(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return {"device": "cpu", "threads": torch.get_num_threads(), "scan": rows}


def markdown(report: dict) -> str:
    if report["device"] == "cpu":
        lines = ["| shape (batch, dim, L, N, G) | reference fwd ms | torch fwd ms | speedup (median of rounds) "
                 "| slowest–fastest round |", "|---|---|---|---|---|"]
        for r in report["scan"]:
            d = r["dims"]
            dims = f"({d['batch']}, {d['dim']}, {d['length']}, {d['n_state']}, {d['groups']})"
            times = (f"{r['reference_ms']:.1f} | {r['torch_ms']:.1f} | {r['speedup']:.1f}× | "
                     f"{r['speedup_min']:.1f}–{r['speedup_max']:.1f}×")
            lines.append(f"| {r['shape']} {dims} | {times} |")
        return "\n".join(lines)
    lines = [f"copy bandwidth {report['copy_GBps']:.0f} GB/s on {report['device']}", "",
             "| shape | backend | fwd ms | fwd GB/s | fwd % copy | fwd+bwd ms | fwd+bwd GB/s "
             "| fwd+bwd % copy | × anchor fwd | × anchor fwd+bwd | fwd+bwd GPU busy ms | fwd+bwd host ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["scan"]:
        if "error" in r:
            lines.append(f"| {r['shape']} | {r['backend']} | {r['error']} | | | | | | | | | |")
            continue
        speed = (f"{r['speedup_fwd']:.2f} | {r['speedup_fwdbwd']:.2f}" if "speedup_fwd" in r else "– | –")
        busy = (f"{r['fwdbwd_gpu_busy_ms']:.3f} | {r['fwdbwd_host_ms']:.3f}" if "fwdbwd_gpu_busy_ms" in r
                else "– | –")
        lines.append(f"| {r['shape']} | {r['backend']} | {r['fwd_ms']:.3f} | {r['fwd_GBps']:.0f} | "
                     f"{100 * r['fwd_frac_copy']:.0f}% | {r['fwdbwd_ms']:.3f} | {r['fwdbwd_GBps']:.0f} | "
                     f"{100 * r['fwdbwd_frac_copy']:.0f}% | {speed} | {busy} |")
    lines += ["", "| cross-scan shape | map layout | fused | scan ms | merge ms | scan % copy | merge % copy |",
              "|---|---|---|---|---|---|---|"]
    for r in report["cross_scan"]:
        lines.append(f"| {r['shape']} | {r['layout']} | {r['fused']} | {r['scan_ms']:.4f} | {r['merge_ms']:.4f} | "
                     f"{100 * r['scan_frac_copy']:.0f}% | {100 * r['merge_frac_copy']:.0f}% |")
    lines += ["", "| batch-1 inference scan | launch | config | fwd ms | fwd % copy |", "|---|---|---|---|---|"]
    for r in report["batch1"]:
        config = ", ".join(f"{k} {v}" for k, v in r["config"].items() if not k.startswith(("BWD", "bwd")))
        lines.append(f"| {r['shape']} | {r['launch']} | {config} | {r['fwd_ms']:.4f} | "
                     f"{100 * r['fwd_frac_copy']:.0f}% |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="torch vs reference on the CPU at L = 1024")
    parser.add_argument("--out", type=Path, help="write the full results as JSON here")
    parser.add_argument("--repeats", type=int, default=5, help="CPU timing repeats (median)")
    parser.add_argument("--backends", nargs="+", default=["triton", "torch"], help="GPU backends to time")
    parser.add_argument("--sweep", action="store_true", help="GPU: also sweep Triton tiles and warps")
    parser.add_argument("--bwd-sweep", action="store_true", help="GPU: also sweep the backward's own tiles")
    parser.add_argument("--fwd-sweep", action="store_true", help="GPU: also sweep one-warp inference tiles")
    parser.add_argument("--batch1-only", action="store_true",
                        help="GPU: only the batch-1 inference scans (as SS2D hands them over, and plain)")
    parser.add_argument("--batch1-sweep", action="store_true", help="GPU: batch-1 scans with other tiles too")
    args = parser.parse_args()
    report = run_cpu(args) if args.cpu else run_gpu(args)
    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        commit = git.stdout.strip()
    except OSError:
        commit = ""
    report |= {"commit": commit, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "torch": torch.__version__}
    table = markdown(report)
    print(table)
    if args.out:
        atomic_write_json(args.out, report | {"markdown": table})


if __name__ == "__main__":
    main()
