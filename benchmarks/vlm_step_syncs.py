"""Where a study preset's VLM training step reads a device tensor on the host (issue 21: the `paper` preset's VLM
cells are bound by the host, not by the card's arithmetic).

Each read (``.item()``, ``bool(tensor)``, ``int(tensor)``: ``aten::_local_scalar_dense``, and ``nonzero``) makes the
host wait for the device, so a step with reads cannot queue its kernels ahead. This runs the preset's training
cell (the study's adapter, encoder ``--backbone`` at random weights, no warm-up) for a few steps with every such read
recorded with its Python call site, over the steps after the first ``--skip`` (log steps, which read the loss on
purpose, are left out), and prints the sites by reads a step.

    python benchmarks/vlm_step_syncs.py --data DATA [--device cuda] [--set distributed.llm_kernels=compile]

``DATA`` is the preset's benchmark (``vlm_stage_speed.py`` generates one). On the CPU every read is counted, the host's
own bookkeeping and the optimizer's per-parameter step counters too; on CUDA only reads of device tensors (the fused
AdamW keeps its counters there).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import tempfile
import traceback
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

READS = (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default)


class HostReads(TorchDispatchMode):
    """Counts host reads of device tensors by call site while ``recording`` is on."""

    def __init__(self, device: str) -> None:
        super().__init__()
        self.device_type = torch.device(device).type
        self.recording = False
        self.sites: collections.Counter[tuple[str, ...]] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        # A host tensor's read waits for nothing on a GPU run; on a CPU run every read is counted.
        if self.recording and func in READS and args[0].device.type == self.device_type:
            frames = [f for f in traceback.extract_stack()[:-2] if "/torch/" not in f.filename]
            self.sites[tuple(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in frames[-3:])] += 1
        return func(*args, **(kwargs or {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the preset's benchmark dataset folder")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--backbone", default="vit_nano")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--skip", type=int, default=3, help="steps left out first (compilation, caches)")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE TrainConfig overrides")
    args = parser.parse_args()

    import ssmvlm.train.loop as loop
    from ssmvlm.study.matrix import expand_matrix
    from ssmvlm.study.spec import load_spec
    from ssmvlm.study.stages import run_train

    overrides = [
        f"backbones=[{args.backbone}]",
        "initializations=[random]",
        "seeds=[0]",
        "llm_warmup.enabled=false",
        f"recipe.overrides.optim.max_steps={args.steps}",
        "recipe.overrides.logging.log_every=1000000",  # only the first and last steps log
        *(f"recipe.overrides.{item}" for item in args.set),
    ]
    (cell,) = expand_matrix(load_spec(preset=args.preset, overrides=overrides)).by_stage("train")
    upstream = {f"dataset/{cell.config.data.dataset}": {"path": str(args.data)}}
    reads = HostReads(args.device)
    step_of = loop.global_batch_indices

    def note_step(num_samples: int, global_batch: int, step: int, *rest):  # type: ignore[no-untyped-def]
        # Each step starts by drawing its batch: record from step `skip` on, stop before the last (a log step).
        reads.recording = args.skip <= step < args.steps - 1
        return step_of(num_samples, global_batch, step, *rest)

    loop.global_batch_indices = note_step
    out = Path(tempfile.mkdtemp(prefix="vlm_step_syncs-"))
    try:
        with reads:
            run_train(cell, out, upstream, args.device)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    steps = args.steps - 1 - args.skip
    print(f"host reads a step: {sum(reads.sites.values()) / steps:g} (over {steps} steps, {args.device})")
    for site, count in reads.sites.most_common():
        print(f"{count / steps:6g}  {'  <-  '.join(reversed(site))}")


if __name__ == "__main__":
    main()
