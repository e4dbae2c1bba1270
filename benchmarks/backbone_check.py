"""GPU check: every zoo backbone runs forward in bf16 on CUDA (Triton scan) and matches its fp32 CPU output.

Same weights (seeded random init), same input; the relative error ‖gpu − cpu‖ / ‖cpu‖ must be < 2e-2.
Exits non-zero on any mismatch, NaN or crash. Run: ``PYTHONPATH=src python benchmarks/backbone_check.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from ssmvlm.backbones import create_vision_backbone, list_vision_backbones

DEFAULT_SIZES = {"vitdet_base": 1024}


def check(name: str, image_size: int, tolerance: float) -> dict:
    torch.manual_seed(0)
    backbone = create_vision_backbone(name, image_size=image_size).eval()
    pixels = torch.randn(2, 3, image_size, image_size)
    with torch.inference_mode():
        reference = backbone(pixels).float()
        gpu = backbone.to("cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            output = gpu(pixels.to("cuda")).float().cpu()
    error = ((output - reference).norm() / reference.norm()).item()
    finite = bool(torch.isfinite(output).all())
    return {
        "backbone": name,
        "image_size": image_size,
        "tokens": tuple(output.shape),
        "rel_error": error,
        "ok": finite and error < tolerance,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbones", nargs="*", default=None, help="default: every registered backbone")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--tolerance", type=float, default=2e-2)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("backbone_check needs CUDA")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results, failed = [], []
    for name in args.backbones or list_vision_backbones():
        size = DEFAULT_SIZES.get(name, args.image_size)
        start = time.perf_counter()
        try:
            row = check(name, size, args.tolerance)
        except Exception as exc:  # report every backbone, then fail loudly
            row = {"backbone": name, "image_size": size, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        row["seconds"] = round(time.perf_counter() - start, 1)
        results.append(row)
        status = "ok" if row["ok"] else "FAIL"
        print(
            f"{status:4} {name:28} {size:5}² rel_err={row.get('rel_error', float('nan')):.2e} "
            f"{row.get('error', '')} ({row['seconds']} s)",
            flush=True,
        )
        if not row["ok"]:
            failed.append(name)
        torch.cuda.empty_cache()
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"device": torch.cuda.get_device_name(0), "results": results}, handle, indent=2)
    if failed:
        sys.exit(f"backbone_check FAILED for: {', '.join(failed)}")
    print(f"backbone_check passed for {len(results)} backbones on {torch.cuda.get_device_name(0)}")


if __name__ == "__main__":
    main()
