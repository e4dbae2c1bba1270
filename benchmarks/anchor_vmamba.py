"""Side by side with the official VMamba code, in one process on one card: the source of every "×" in RESULTS.md.

Builds VMamba's official selective-scan kernel (``selective_scan_cuda_oflex``) through the anchors' ``build.sh``
(a wheel already in ``--wheels`` is installed instead), loads the official one-file ``vmamba.py`` beside ssmvlm
(pointed at that kernel, as the anchors' README says), and measures both sides in this process:

- **scan**, bf16 inputs, three shapes: forward and forward+backward, the official kernel called as its models
  call it (``SelectiveScanCuda``, oflex: float32 output) against ssmvlm's Triton backend; outputs and gradients
  compared; rounds interleaved, the median of the rounds' ``do_bench`` medians;
- **encoders** at 224², batch 128, bf16 autocast, inference mode, to the stage-3 tap: official VMamba-S/-T
  (patch embedding, stages 1–2 with their downsampling, stage 3's blocks) against ssmvlm's (eager, and compiled
  with ``--compile``), after loading the official model's weights into ssmvlm's and comparing the two outputs;
- **batch 1**, VMamba-S at 224² and 1024²: official eager, ssmvlm eager, ssmvlm as a VLM calls it
  (``VLM.encode_images``: bf16 weights, its encoder replayed from CUDA graphs by default, ops.graphed), and
  timm's ViT-B/16 eager;
- **finetune MFU** (``benchmarks/train_throughput.py``'s ``measure_step``): the anchor, a plain Hugging Face
  Llama of the TinyLlama-1.1B shape alone at batch 8 × 2048, and the VLM step with each encoder of
  ``--mfu-encoders`` inside it.

The JSON (``--out``) is rewritten after every section; a Markdown table is printed last. A section that fails
is recorded as an error and the next one runs. Nothing here runs under pytest.

On the GPU machine, the anchors copied into the ignored folder ``.anchors`` (named in the call's carry):

    PYTHONPATH=src python3 benchmarks/anchor_vmamba.py --anchors .anchors/vmamba --wheels $OUT/wheels \\
        --out $OUT/anchor.json --commit HASH

(``HASH``: this tree's commit, written out; the copy that runs there may carry other git metadata.) The wheel
comes back under ``$OUT/wheels``; put it in ``.anchors/wheels`` and pass ``--wheels .anchors/wheels`` to skip the
70 s build next time.

On the CPU (checks the script: small sizes, the official code's PyTorch scan, no kernel built):

    PYTHONPATH=src python benchmarks/anchor_vmamba.py --dry-run --out /tmp/anchor.json
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import statistics
import subprocess
import sys
import time
import traceback
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from scan_bench import Shape, make_inputs
from torch import nn

from ssmvlm.bench.timing import median_ms
from ssmvlm.utils.io import atomic_write_json

SCAN_SHAPES = [
    Shape("128×1536×196, N=1, G=4", 128, 1536, 196, 1, 4, False),
    Shape("8×1536×4096, N=1, G=4", 8, 1536, 4096, 1, 4, False),
    Shape("4×1536×16384, N=16", 4, 1536, 16384, 16, 1, False),
]
ENCODERS = {"VMamba-S": "vmamba_small_s2l15", "VMamba-T": "vmamba_tiny_s1l8"}


@dataclass(frozen=True)
class Sizes:
    """What one run measures: the issue's sizes on the GPU, small ones for ``--dry-run``."""

    scan_shapes: list[Shape]
    throughput_resolution: int
    throughput_batch: int
    batch1_resolutions: list[int]
    rounds: int
    repeats: int


GPU_SIZES = Sizes(SCAN_SHAPES, 224, 128, [224, 1024], rounds=3, repeats=20)
DRY_SIZES = Sizes(
    [Shape("2×96×64, N=1, G=4", 2, 96, 64, 1, 4, False), Shape("1×48×128, N=16", 1, 48, 128, 16, 1, False)],
    64, 2, [64], rounds=1, repeats=1,
)  # fmt: skip


# -- the official code --------------------------------------------------------------------------------------
def build_official_kernel(anchors: Path, wheels: Path | None) -> dict[str, Any]:
    """Run the anchors' build.sh (about 70 s; installs into this Python) and import the kernel here.

    build.sh's last step, importing the kernel in a fresh ``python3 -c`` without torch, fails ("libc10.so: cannot
    open shared object file") although the wheel was built and installed (seen 2026-12-06): the import that counts
    is this one, in a process that has imported torch."""
    started = time.perf_counter()
    command = ["bash", str(anchors / "build.sh"), *([str(wheels)] if wheels else [])]
    done = subprocess.run(command, capture_output=True, text=True)
    record = {
        "command": " ".join(command),
        "returncode": done.returncode,
        "seconds": time.perf_counter() - started,
        "log_tail": (done.stdout + done.stderr)[-3000:],
    }
    importlib.invalidate_caches()
    try:
        importlib.import_module("selective_scan_cuda_oflex")
        record["imported"] = True
    except ImportError as exc:
        record["imported"] = False
        record["import_error"] = str(exc)
    return record


def load_official(anchors: Path, with_kernel: bool) -> types.ModuleType:
    """The official ``vmamba.py`` as module ``official_vmamba`` (fvcore, imported for FLOP counts only, stubbed);
    with the kernel, its scan goes through ``selective_scan_cuda_oflex`` (else its PyTorch scan)."""
    fvcore, fvcore_nn = types.ModuleType("fvcore"), types.ModuleType("fvcore.nn")
    for name in ("FlopCountAnalysis", "flop_count_str", "flop_count", "parameter_count"):
        setattr(fvcore_nn, name, None)
    fvcore.nn = fvcore_nn  # type: ignore[attr-defined]
    sys.modules.setdefault("fvcore", fvcore)
    sys.modules.setdefault("fvcore.nn", fvcore_nn)
    spec = importlib.util.spec_from_file_location("official_vmamba", anchors / "vmamba.py")
    assert spec is not None and spec.loader is not None
    official = importlib.util.module_from_spec(spec)
    sys.modules["official_vmamba"] = official
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's deprecated imports, its registry's "overwriting" notes
        spec.loader.exec_module(official)
    if with_kernel:
        official.selective_scan_cuda_oflex = importlib.import_module("selective_scan_cuda_oflex")
        official.WITH_SELECTIVESCAN_MAMBA = True

        def oflex_scan(u, d, A, B, C, D=None, db=None, sp=True, oflex=True, backend=None):  # the README's call
            return official.SelectiveScanCuda.apply(u, d, A, B, C, D, db, sp, oflex, "oflex")

        official.selective_scan_fn = oflex_scan
    return official


class OfficialToStage3(nn.Module):
    """The official model to ssmvlm's ``s3`` tap: patch embedding, stages 1–2 with their downsampling, stage 3's
    blocks (channels first, as the official models run)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.model.patch_embed(x)
        x = self.model.layers[1](self.model.layers[0](x))
        return self.model.layers[2].blocks(x)


def official_encoder(official: types.ModuleType, name: str) -> nn.Module:
    return OfficialToStage3(getattr(official, name)()).eval()


def as_released_state(state: dict[str, torch.Tensor], orders: int = 4) -> dict[str, torch.Tensor]:
    """An official model's state in its released checkpoints' layout (what ssmvlm loads): the per-order
    projections stacked as ``x_proj_weight`` (K, R + 2N, C) and ``dt_projs_weight`` (K, D, R), where the current
    code holds them as one grouped projection each."""
    released = {}
    for key, value in state.items():
        if key.endswith(("op.x_proj.weight", "op.dt_projs.weight")):
            key = key.replace("_proj.weight", "_proj_weight").replace("_projs.weight", "_projs_weight")
            value = value.reshape(orders, value.shape[0] // orders, value.shape[1])
        released[key] = value
    return released


# -- timing ------------------------------------------------------------------------------------------------
def interleaved(fns: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Each function's measurement, one call of each per round; the median over rounds."""
    results: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            results[name].append(fn())
    return {name: statistics.median(values) for name, values in results.items()}


def scan_timer(device: torch.device) -> Callable[[Callable[[], object], bool], float]:
    """Median ms of a scan call: ``do_bench`` on the GPU (fewer repeats for forward+backward), else host time."""
    if device.type == "cuda":
        from scan_bench import time_gpu

        return lambda fn, backward: time_gpu(fn, warmup=10, rep=100) if backward else time_gpu(fn)
    return lambda fn, backward: median_ms(fn, device, warmup=1, repeats=3)


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.double()
    return float((got.double() - expected).norm() / expected.norm().clamp_min(1e-30))


# -- sections ----------------------------------------------------------------------------------------------
def scan_section(official: types.ModuleType | None, sizes: Sizes, device: torch.device, cuda: bool) -> list[dict]:
    from ssmvlm.ops import selective_scan

    backend = "triton" if cuda else "torch"
    dtype = torch.bfloat16 if cuda else torch.float32

    def ours(i: dict) -> torch.Tensor:
        return selective_scan(**i, backend=backend)

    def theirs(i: dict) -> torch.Tensor:
        assert official is not None
        args = (i["u"], i["delta"], i["A"], i["B"], i["C"], i["D"], i["delta_bias"], True, True)
        return official.SelectiveScanCuda.apply(*args, "oflex") if cuda else official.selective_scan_torch(*args)

    sides = {"ssmvlm": ours, **({"official": theirs} if official is not None else {})}
    rows = []
    for shape in sizes.scan_shapes:
        rows.append(scan_row(shape, sides, sizes.rounds, device, dtype))
        print(f"scan {shape.name}: {rows[-1]}", flush=True)
        _release(device)
    return rows


def scan_row(
    shape: Shape,
    sides: dict[str, Callable[[dict], torch.Tensor]],
    rounds: int,
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, Any]:
    """One shape: the sides' outputs and gradients compared, then their times (ms), rounds interleaved."""
    inputs = make_inputs(shape, device.type, dtype, requires_grad=True)
    names = [k for k, t in inputs.items() if isinstance(t, torch.Tensor)]
    leaves = [inputs[k] for k in names]
    dy = torch.randn(shape.batch, shape.dim, shape.length, device=device)
    with torch.no_grad():
        dys = {name: dy.to(fn(inputs).dtype) for name, fn in sides.items()}  # the official oflex output: float32
    row: dict[str, Any] = {"shape": shape.name}
    if "official" in sides:
        with torch.no_grad():
            row["y_rel_diff"] = relative_error(sides["ssmvlm"](inputs), sides["official"](inputs))
        grads = {name: torch.autograd.grad(fn(inputs), leaves, dys[name]) for name, fn in sides.items()}
        row["grad_rel_diff"] = {
            key: relative_error(ours_g, theirs_g)
            for key, ours_g, theirs_g in zip(names, grads["ssmvlm"], grads["official"], strict=True)
        }
        del grads
    timer = scan_timer(device)

    def forward(fn: Callable[[dict], torch.Tensor]) -> float:
        with torch.no_grad():
            return timer(lambda: fn(inputs), False)

    def forward_backward(name: str) -> float:
        return timer(lambda: torch.autograd.grad(sides[name](inputs), leaves, dys[name]), True)

    timed: dict[str, Callable[[], float]] = {}
    for name, fn in sides.items():
        timed[f"{name}_fwd_ms"] = lambda fn=fn: forward(fn)
        timed[f"{name}_fwdbwd_ms"] = lambda name=name: forward_backward(name)
    return row | interleaved(timed, rounds)


def encoder_section(
    official: types.ModuleType | None, sizes: Sizes, device: torch.device, compile_ours: bool
) -> list[dict]:
    from ssmvlm.backbones import create_vision_backbone

    batch, resolution = sizes.throughput_batch, sizes.throughput_resolution
    pixels = torch.randn(batch, 3, resolution, resolution, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    rows = []
    for label, name in ENCODERS.items():
        torch.manual_seed(0)
        modules: dict[str, nn.Module] = {"ssmvlm": create_vision_backbone(name, image_size=resolution).eval()}
        row: dict[str, Any] = {"encoder": label, "backbone": name, "batch": batch, "resolution": resolution}
        if official is not None:
            theirs = official_encoder(official, name)
            try:  # the same weights on both sides, so the outputs can be compared
                modules["ssmvlm"].trunk.load_state_dict(as_released_state(theirs.model.state_dict()), strict=True)
            except RuntimeError as exc:
                row["weights_shared"] = f"no: {str(exc)[:200]}"
            modules["official"] = theirs
        if compile_ours:
            modules["ssmvlm_compiled"] = torch.compile(modules["ssmvlm"])
        for module in modules.values():
            module.to(device)

        def call(module: nn.Module) -> torch.Tensor:
            with torch.inference_mode(), autocast:
                return module(pixels)

        if "official" in modules and "weights_shared" not in row:
            ours_out = call(modules["ssmvlm"]).float()
            theirs_out = call(modules["official"]).float().flatten(2).transpose(1, 2)
            theirs_out = torch.nn.functional.layer_norm(theirs_out, theirs_out.shape[-1:])  # ssmvlm's tap norm
            row["weights_shared"] = "yes"
            row["s3_rel_diff"] = relative_error(ours_out, theirs_out)
            del ours_out, theirs_out
        ms = interleaved(
            {k: (lambda m=m: median_ms(lambda: call(m), device, warmup=3, repeats=10)) for k, m in modules.items()},
            max(1, sizes.rounds - 1),
        )
        row |= {f"{side}_img_s": batch / t * 1e3 for side, t in ms.items()}
        rows.append(row)
        print(f"encoder {label} batch {batch} {resolution}²: {row}", flush=True)
        del modules
        _release(device)
    return rows


def batch1_section(official: types.ModuleType | None, sizes: Sizes, device: torch.device) -> list[dict]:
    rows = []
    for resolution in sizes.batch1_resolutions:
        rows.append(batch1_row(official, resolution, sizes, device))
        print(f"batch 1 VMamba-S {resolution}²: {rows[-1]}", flush=True)
        _release(device)
    return rows


def batch1_row(official: types.ModuleType | None, resolution: int, sizes: Sizes, device: torch.device) -> dict:
    """Batch-1 latency (ms) at one resolution: the eager modules under bf16 autocast, and VMamba-S through
    ``VLM.encode_images`` (bf16 weights, CUDA graphs by default); rounds interleaved."""
    from ssmvlm.backbones import create_vision_backbone
    from ssmvlm.connectors import build_connector
    from ssmvlm.vlm.model import VLM

    cuda = device.type == "cuda"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)
    name = ENCODERS["VMamba-S"]
    pixels = torch.randn(1, 3, resolution, resolution, device=device)
    eager: dict[str, nn.Module] = {
        "ssmvlm_eager": create_vision_backbone(name, image_size=resolution).eval().to(device),
        "vit_b_eager": create_vision_backbone("vit_base_patch16", image_size=resolution).eval().to(device),
    }
    if official is not None:
        eager["official_eager"] = official_encoder(official, name).to(device)
    encoder = create_vision_backbone(name, image_size=resolution)
    connector = build_connector("linear", encoder.embed_dim, 8)
    vision_dtype = torch.bfloat16 if cuda else torch.float32
    vlm = VLM(encoder, connector, nn.Identity(), None, None, vision_dtype=vision_dtype)  # type: ignore[arg-type]
    vlm = vlm.to(device).eval()

    def eager_call(module: nn.Module) -> Callable[[], object]:
        def call() -> object:
            with torch.inference_mode(), autocast:
                return module(pixels)

        return call

    calls = {side: eager_call(m) for side, m in eager.items()}
    calls["ssmvlm_vlm_path"] = lambda: vlm.encode_images(pixels)
    ms = interleaved(
        {side: (lambda c=c: median_ms(c, device, warmup=3, repeats=sizes.repeats)) for side, c in calls.items()},
        sizes.rounds,
    )
    return {
        "resolution": resolution,
        **{f"{side}_ms": t for side, t in ms.items()},
        "vlm_path_graph_calls": dict(vlm.encoder_graphs.counts),
    }


def mfu_section(encoders: list[str], kernels: list[str], device: torch.device, dry_run: bool) -> list[dict]:
    from train_throughput import CONFIGS, BenchConfig, measure_step

    base = CONFIGS["smoke" if dry_run else "1b"]
    steps, warmup = (2, 1) if dry_run else (10, 3)
    rows = []
    for kernel in kernels:
        for backbone in ["none", *encoders]:
            config = BenchConfig(base.llm, backbone, base.image_size, base.batch, base.seq)
            try:
                rows.append(
                    measure_step(
                        config, device, steps=steps, warmup=warmup, weights_bf16=device.type == "cuda", kernels=kernel
                    )
                )
            except Exception as exc:  # one row's failure (memory, a missing package) leaves the others
                error = f"{type(exc).__name__}: {str(exc)[:300]}"
                rows.append({"backbone": backbone, "llm_kernels": kernel, "error": error})
            print(f"mfu {kernel} {backbone}: {rows[-1]}", flush=True)
            gc.collect()
            _release(device)
    return rows


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# -- report ------------------------------------------------------------------------------------------------
def _ratio(ours: float | None, theirs: float | None, faster_is_smaller: bool = True) -> str:
    if not ours or not theirs:
        return "–"
    return f"{(theirs / ours if faster_is_smaller else ours / theirs):.2f}×"


def _ms(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(report: dict) -> str:
    lines = [
        f"{report.get('device', '?')}; torch {report.get('torch')}; commit {report.get('commit')}; "
        f"{report.get('date')}",
        "",
    ]
    if "scan" in report.get("sections", {}):
        lines += [
            "| scan, bf16 | official fwd ms | ssmvlm fwd ms | × | official fwd+bwd ms | ssmvlm fwd+bwd ms | × "
            "| y rel. diff |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in report["sections"]["scan"]:
            o_f, s_f, o_b, s_b = (
                r.get(k) for k in ("official_fwd_ms", "ssmvlm_fwd_ms", "official_fwdbwd_ms", "ssmvlm_fwdbwd_ms")
            )
            diff = f"{r['y_rel_diff']:.1e}" if "y_rel_diff" in r else "–"
            lines.append(
                f"| {r['shape']} | {_ms(o_f)} | {_ms(s_f)} | {_ratio(s_f, o_f)} | {_ms(o_b)} | {_ms(s_b)} "
                f"| {_ratio(s_b, o_b)} | {diff} |"
            )
        lines.append("")
    if "encoders" in report.get("sections", {}):
        lines += [
            "| encoder to s3, bf16 autocast | batch | official img/s | ssmvlm eager img/s | × | ssmvlm compiled "
            "img/s | s3 rel. diff (same weights) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in report["sections"]["encoders"]:
            theirs, ours = r.get("official_img_s"), r.get("ssmvlm_img_s")
            diff = f"{r['s3_rel_diff']:.1e}" if "s3_rel_diff" in r else "–"
            lines.append(
                f"| {r['encoder']} {r['resolution']}² | {r['batch']} | {_ms(theirs, 0)} | {_ms(ours, 0)} "
                f"| {_ratio(ours, theirs, faster_is_smaller=False)} "
                f"| {_ms(r.get('ssmvlm_compiled_img_s'), 0)} | {diff} |"
            )
        lines.append("")
    if "batch1" in report.get("sections", {}):
        lines += [
            "| VMamba-S batch 1 | official eager ms | ssmvlm eager ms | ssmvlm as VLM.encode_images ms "
            "(CUDA graphs) | ViT-B/16 eager ms |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in report["sections"]["batch1"]:
            lines.append(
                f"| {r['resolution']}² | {_ms(r.get('official_eager_ms'), 2)} | "
                f"{_ms(r.get('ssmvlm_eager_ms'), 2)} | {_ms(r.get('ssmvlm_vlm_path_ms'), 2)} | "
                f"{_ms(r.get('vit_b_eager_ms'), 2)} |"
            )
        lines.append("")
    if "mfu" in report.get("sections", {}):
        lines += ["| finetune step | batch × seq | step s | tokens/s | MFU |", "|---|---:|---:|---:|---:|"]
        for r in report["sections"]["mfu"]:
            if "error" in r:
                lines.append(f"| {r['backbone']}, {r.get('llm_kernels', 'eager')} LLM | {r['error']} | | | |")
                continue
            label = "LLM alone" if r["backbone"] == "none" else f"VLM, {r['backbone']}"
            label += f", {r.get('llm_kernels', 'eager')} LLM"
            lines.append(
                f"| {label} | {r['batch']} × {r['seq']} | {r['step_s']:.3f} | {r['tokens_per_s']:,.0f} | "
                f"{100 * r['mfu_vs_h100_bf16']:.1f}% |"
            )
        lines.append("")
    for name, error in report.get("errors", {}).items():
        lines.append(f"section {name} failed: {error.splitlines()[-1] if error else ''}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anchors", type=Path, default=Path(".anchors/vmamba"), help="a copy of the anchors")
    parser.add_argument("--wheels", type=Path, help="where build.sh keeps (and finds) the kernel's wheel")
    parser.add_argument("--sections", default="scan,encoders,batch1,mfu")
    parser.add_argument("--compile", action="store_true", help="encoders: also ssmvlm under torch.compile")
    parser.add_argument("--mfu-encoders", default="vmamba_small_s2l15,vit_base_patch16")
    parser.add_argument("--mfu-kernels", default="eager", help="LLM kernels per MFU row set: eager,liger,compile")
    parser.add_argument("--dry-run", action="store_true", help="CPU, small sizes, no kernel: checks the script")
    parser.add_argument("--out", type=Path, required=True, help="JSON written here (after every section)")
    parser.add_argument("--commit", help="the tree's commit, where the copy that runs has other git metadata")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        sys.exit("anchor_vmamba needs CUDA (or --dry-run)")
    device = torch.device("cuda" if cuda else "cpu")
    sizes = GPU_SIZES if cuda else DRY_SIZES
    commit = args.commit
    if commit is None:
        try:
            git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
            commit = git.stdout.strip()
        except OSError:
            commit = ""
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu (dry run)", "torch": torch.__version__,
        "commit": commit, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "argv": sys.argv,
        "sections": {}, "errors": {},
    }  # fmt: skip
    if cuda:
        report["build"] = build_official_kernel(args.anchors, args.wheels)
        build = report["build"]
        print(f"official kernel: build.sh rc {build['returncode']} in {build['seconds']:.0f} s, imported "
              f"{build['imported']} {build.get('import_error', '')}", flush=True)  # fmt: skip
    try:
        official = load_official(args.anchors, with_kernel=cuda and report["build"]["imported"])
    except Exception:
        report["errors"]["official"] = traceback.format_exc()
        official = None
    if cuda and not report["build"]["imported"]:
        official = None  # its PyTorch scan on the GPU is not the anchor
    sections: dict[str, Callable[[], list[dict]]] = {
        "scan": lambda: scan_section(official, sizes, device, cuda),
        "encoders": lambda: encoder_section(official, sizes, device, args.compile),
        "batch1": lambda: batch1_section(official, sizes, device),
        "mfu": lambda: mfu_section(
            [e for e in args.mfu_encoders.split(",") if e], args.mfu_kernels.split(","), device, args.dry_run
        ),
    }
    for name in args.sections.split(","):
        started = time.perf_counter()
        try:
            report["sections"][name] = sections[name]()
        except Exception:
            report["errors"][name] = traceback.format_exc()
            print(report["errors"][name], flush=True)
            _release(device)
        report.setdefault("seconds", {})[name] = time.perf_counter() - started
        atomic_write_json(args.out, report)
    report["markdown"] = markdown(report)
    atomic_write_json(args.out, report)
    print(report["markdown"])


if __name__ == "__main__":
    main()
