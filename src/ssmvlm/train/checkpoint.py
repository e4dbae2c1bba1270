"""What a VLM training checkpoint holds: safetensors + JSON (+ the optimizer state read back with
``weights_only=True``).

``RUN/checkpoints/step-00000040/`` holds ``trainable.safetensors`` (connector and, when trained, LLM),
``optimizer.pt``, ``rng.safetensors`` (torch CPU/CUDA generator states) and ``state.json`` (step, scheduler,
Python and NumPy RNG states). A checkpoint folder is written and swapped in by
:func:`ssmvlm.utils.run_folder.write_checkpoint` (pretraining's too), then ``latest.json`` is replaced
atomically, so a crash at any moment leaves the previous checkpoint usable.
"""

from __future__ import annotations

import io
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from ssmvlm.utils.errors import CheckpointError
from ssmvlm.utils.io import atomic_write_json, read_json
from ssmvlm.utils.run_folder import STATE_FILE, read_checkpoint, settle_checkpoint, write_checkpoint

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.json"
STEP_FOLDER = re.compile(r"step-\d{8}")


@dataclass
class Checkpoint:
    path: Path
    step: int
    trainable: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    rng_tensors: dict[str, torch.Tensor]


def rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors |= {f"torch_cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    return (
        {"python": [version, list(internal), gauss], "numpy": [name, keys.tolist(), pos, has_gauss, cached]},
        tensors,
    )


def restore_rng_state(state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(
    run_dir: Path,
    step: int,
    trainable: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    scheduler: dict[str, Any],
    *,
    keep: int = 2,
) -> Path:
    root = Path(run_dir) / CHECKPOINT_DIR
    rng, rng_tensors = rng_state()
    buffer = io.BytesIO()
    torch.save(optimizer, buffer)
    files = {
        "trainable.safetensors": save_safetensors_bytes(trainable),
        "optimizer.pt": buffer.getvalue(),
        "rng.safetensors": save_safetensors_bytes(rng_tensors),
    }
    folder = write_checkpoint(root / f"step-{step:08d}", files, {"step": step, "scheduler": scheduler, "rng": rng})
    atomic_write_json(root / LATEST, {"step": step, "path": folder.name})
    steps = sorted(path for path in root.iterdir() if STEP_FOLDER.fullmatch(path.name))
    for old in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def latest_checkpoint_path(run_dir: Path) -> Path | None:
    pointer = Path(run_dir) / CHECKPOINT_DIR / LATEST
    if not pointer.is_file():
        return None
    folder = pointer.parent / read_json(pointer)["path"]
    settle_checkpoint(folder)
    return folder


def load_checkpoint(path: Path) -> Checkpoint:
    def read(path: Path) -> Checkpoint:
        state = read_json(path / STATE_FILE)
        trainable = load_safetensors_bytes((path / "trainable.safetensors").read_bytes())
        rng_tensors = load_safetensors_bytes((path / "rng.safetensors").read_bytes())
        optimizer = _load_optimizer_state(path / "optimizer.pt")
        return Checkpoint(
            path, int(state["step"]), trainable, optimizer, state["scheduler"], state["rng"], rng_tensors
        )

    return read_checkpoint(path, read)


def _load_optimizer_state(path: Path) -> dict[str, Any]:
    """The optimizer state, read with ``weights_only=True``; anything else in the file is refused.

    PyTorch's own error for a pickle with other objects advises ``weights_only=False``, that is, running the
    file's code; ssmvlm wrote this file with tensors and plain containers only, so such content means the file
    was replaced or damaged, and the way out is another checkpoint, never unpickling.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, EOFError, zipfile errors, RuntimeError: all mean "not ours"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        unsafe = "weights_only" in str(exc) or "Unsupported global" in str(exc)
        reason = "it holds objects other than tensors (refused; nothing was unpickled)" if unsafe else first
        raise CheckpointError(
            f"{path}: not an optimizer state ssmvlm wrote: {reason}; restore the file or train into a new --out"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected an optimizer state dict, got {type(state).__name__}")
    return state


def check_fits(trainable: dict[str, torch.Tensor], model_state: dict[str, torch.Tensor], where: Path) -> None:
    """A checkpoint must hold exactly the trainable tensors of this model, with the same shapes."""
    missing = sorted(set(model_state) - set(trainable))
    unknown = sorted(set(trainable) - set(model_state))
    wrong = [k for k in trainable if k in model_state and trainable[k].shape != model_state[k].shape]
    if missing or unknown or wrong:
        example = (missing or unknown or wrong)[:2]
        raise CheckpointError(
            f"{where}: checkpoint of another architecture ({len(missing)} missing, {len(unknown)} unknown, "
            f"{len(wrong)} mis-shaped tensors, e.g. {example})"
        )
