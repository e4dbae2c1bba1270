"""Encoder cost against resolution, every family measured the same way in one run.

For each backbone × resolution: throughput (images/s at the largest batch ≤ ``batch_size`` that fits),
batch-1 latency, peak GPU memory, visual tokens, and FLOPs per image (``torch.utils.flop_counter`` on the
meta device, plus the selective scan by the field's formula, see :mod:`ssmvlm.ops.flops`). Out-of-memory is
recorded as such. The log-log slope of latency against tokens over the high-resolution range gives each
backbone's scaling exponent (≈1 linear, ≈2 quadratic).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ssmvlm.bench.timing import is_out_of_memory, median_ms
from ssmvlm.utils.device import resolve_device
from ssmvlm.utils.io import atomic_write_json, atomic_write_text
from ssmvlm.utils.progress import progress_bar
from ssmvlm.utils.provenance import write_run_record

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass
class EncoderBenchConfig:
    backbones: list[str] = field(default_factory=lambda: ["vmamba_nano", "vit_nano"])
    resolutions: list[int] = field(default_factory=lambda: [224, 448])
    batch_size: int = 64
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    device: str = "auto"
    warmup: int = 3
    repeats: int = 10
    measure_throughput: bool = True
    measure_flops: bool = True
    fit_min_tokens: int = 16384  # 2048² at stride 16: where attention's quadratic term dominates
    compile: bool = False  # torch.compile every backbone (each batch size compiles once, in the warm-up)
    cuda_graph: bool = False  # time replays of a captured CUDA graph (GPU only): no launch gaps at batch 1


@dataclass
class EncoderMeasurement:
    backbone: str
    family: str
    kind: str
    params: int
    resolution: int
    tokens: int
    status: str = "ok"  # "ok", "oom", or "error: <reason>"
    latency_ms: float | None = None
    peak_memory_mib: float | None = None
    throughput_img_s: float | None = None
    throughput_batch: int | None = None
    gflops: float | None = None
    scan_gflops: float | None = None


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


def count_flops(backbone: torch.nn.Module, resolution: int) -> tuple[float, float]:
    """GFLOPs per image on the meta device: torch's counter (2 per multiply-add) plus the scan formula."""
    from torch.utils.flop_counter import FlopCounterMode

    from ssmvlm.ops.flops import count_scan_flops

    meta_model = copy.deepcopy(backbone).to("meta")
    pixels = torch.empty(1, 3, resolution, resolution, device="meta")
    with FlopCounterMode(display=False) as counter, count_scan_flops() as scans, torch.no_grad():
        meta_model(pixels)
    return (counter.get_total_flops() + scans.flops) / 1e9, scans.flops / 1e9


def measure_encoder(name: str, resolution: int, config: EncoderBenchConfig, device: torch.device) -> EncoderMeasurement:
    from ssmvlm.backbones import create_vision_backbone

    try:
        backbone = create_vision_backbone(name, image_size=resolution)
    except (ValueError, RuntimeError) as exc:
        return EncoderMeasurement(name, "?", "?", 0, resolution, 0, status=f"error: {exc}")
    result = EncoderMeasurement(
        backbone=name,
        family=backbone.spec.family,
        kind=backbone.spec.kind,
        params=backbone.param_count(),
        resolution=resolution,
        tokens=backbone.num_tokens(resolution),
    )
    if config.measure_flops:
        result.gflops, result.scan_gflops = count_flops(backbone, resolution)
    dtype = resolve_dtype(config.dtype, device)
    backbone = backbone.to(device).eval()
    if config.compile:
        torch._dynamo.reset()  # a fresh cache per backbone: they share forward(), whose guards would pile up
    module = torch.compile(backbone) if config.compile else backbone
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def run(batch: int) -> tuple[float, float | None]:
        pixels = torch.randn(batch, 3, resolution, resolution, device=device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        def forward() -> None:
            with torch.inference_mode(), autocast:
                module(pixels)

        if config.cuda_graph:
            forward = capture_cuda_graph(forward, warmup=max(1, config.warmup))
        ms = median_ms(forward, device, warmup=config.warmup, repeats=config.repeats)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        return ms, peak

    try:
        result.latency_ms, result.peak_memory_mib = run(1)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        _release(device)
        result.status = "oom"
        return result
    batch = config.batch_size
    while config.measure_throughput and batch > 1:
        try:
            ms, _ = run(batch)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            _release(device)
            batch //= 2
            continue
        result.throughput_img_s = batch / (ms / 1e3)
        result.throughput_batch = batch
        break
    _release(device)
    return result


def capture_cuda_graph(forward: Callable[[], None], warmup: int) -> Callable[[], None]:
    """``forward`` recorded once into a CUDA graph (after untimed calls that compile and pick kernels); returns
    its replay."""
    for _ in range(warmup):
        forward()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        forward()
    return graph.replay


def execution_mode(config: EncoderBenchConfig) -> str:
    return " + ".join([m for m, on in (("torch.compile", config.compile), ("CUDA graph", config.cuda_graph)) if on]
                      or ["eager"])


def _release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def scaling_exponents(rows: list[EncoderMeasurement], fit_min_tokens: int) -> dict[str, float | None]:
    """Per backbone, the slope of log(latency) against log(tokens) over the high-token range.

    Uses the points with at least ``fit_min_tokens`` tokens, or the two largest when fewer qualify.
    """
    exponents: dict[str, float | None] = {}
    for name in dict.fromkeys(r.backbone for r in rows):
        points = sorted(
            (r.tokens, r.latency_ms) for r in rows if r.backbone == name and r.status == "ok" and r.latency_ms
        )
        high = [p for p in points if p[0] >= fit_min_tokens]
        if len(high) < 2:
            high = points[-2:]
        if len(high) < 2 or high[0][0] == high[-1][0]:
            exponents[name] = None
            continue
        tokens, latency = np.log([p[0] for p in high]), np.log([p[1] for p in high])
        exponents[name] = float(np.polyfit(tokens, latency, 1)[0])
    return exponents


def markdown_table(rows: list[EncoderMeasurement], exponents: dict[str, float | None]) -> str:
    header = (
        "| backbone | family | params (M) | res | tokens | GFLOPs | latency bs1 (ms) | peak mem bs1 (MiB) "
        "| throughput (img/s) | batch | status |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = [
        f"| {r.backbone} | {r.family} | {r.params / 1e6:.1f} | {r.resolution} | {r.tokens} | {_fmt(r.gflops)} "
        f"| {_fmt(r.latency_ms)} | {_fmt(r.peak_memory_mib, 0)} | {_fmt(r.throughput_img_s, 0)} "
        f"| {r.throughput_batch or '–'} | {r.status} |"
        for r in rows
    ]
    fits = "\n".join(
        f"- {name}: latency ∝ tokens^{exp:.2f}" if exp is not None else f"- {name}: not enough points"
        for name, exp in exponents.items()
    )
    return header + "\n".join(lines) + "\n\nFitted scaling exponents (high-resolution range):\n\n" + fits + "\n"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def plot_scaling(rows: list[EncoderMeasurement], exponents: dict[str, float | None], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_latency, ax_memory) = plt.subplots(1, 2, figsize=(12, 4.8))
    for name, exponent in exponents.items():
        ok = sorted((r for r in rows if r.backbone == name and r.status == "ok"), key=lambda r: r.tokens)
        if not ok:
            continue
        label = f"{name} (slope {exponent:.2f})" if exponent is not None else name
        ax_latency.plot([r.tokens for r in ok], [r.latency_ms for r in ok], marker="o", label=label)
        memory = [(r.tokens, r.peak_memory_mib) for r in ok if r.peak_memory_mib is not None]
        if memory:
            ax_memory.plot(*zip(*memory, strict=True), marker="o", label=name)
        for r in rows:
            if r.backbone == name and r.status == "oom":
                ax_latency.axvline(r.tokens, color="grey", linestyle=":", linewidth=0.8)
    ax_latency.set(
        xscale="log",
        yscale="log",
        xlabel="visual tokens",
        ylabel="batch-1 latency (ms)",
        title="Encoder latency vs tokens",
    )
    ax_memory.set(
        xscale="log",
        yscale="log",
        xlabel="visual tokens",
        ylabel="peak GPU memory (MiB)",
        title="Encoder memory vs tokens (batch 1)",
    )
    if not any(r.peak_memory_mib is not None for r in rows):
        ax_memory.text(
            0.5,
            0.5,
            "peak GPU memory is measured on CUDA only",
            transform=ax_memory.transAxes,
            ha="center",
            va="center",
        )
    for axis in (ax_latency, ax_memory):
        axis.grid(True, which="both", alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_encoder_bench(config: EncoderBenchConfig, out_dir: Path) -> list[EncoderMeasurement]:
    """Measure every backbone × resolution; write ``encoders.json``, ``encoders.md``, ``encoders.png``."""
    from ssmvlm.config import to_dict

    device = resolve_device(config.device)
    if config.cuda_graph and device.type != "cuda":
        raise ValueError(f"bench encoders: cuda_graph needs a CUDA device, got {device}")
    out_dir = Path(out_dir)
    write_run_record(out_dir, to_dict(config), seed=None)
    rows: list[EncoderMeasurement] = []
    cells = [(b, r) for b in config.backbones for r in config.resolutions]
    with progress_bar() as progress:
        task = progress.add_task("bench encoders", total=len(cells), status="")
        for name, resolution in cells:
            progress.update(task, status=f"{name} @ {resolution}²")
            rows.append(measure_encoder(name, resolution, config, device))
            progress.advance(task)
    exponents = scaling_exponents(rows, config.fit_min_tokens)
    atomic_write_json(
        out_dir / "encoders.json",
        {
            "device": str(device),
            "dtype": str(resolve_dtype(config.dtype, device)),
            "mode": execution_mode(config),
            "rows": [asdict(r) for r in rows],
            "exponents": exponents,
        },
    )
    atomic_write_text(out_dir / "encoders.md", markdown_table(rows, exponents))
    plot_scaling(rows, exponents, out_dir / "encoders.png")
    return rows
