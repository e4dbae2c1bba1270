"""A training run's folder, the same for VLM training (``ssmvlm.train``) and pretraining (``ssmvlm.pretrain``).

- ``config.json``: the resolved config. :func:`check_same_config` refuses to continue a run in a folder whose
  config differs in anything but the settings that do not change the result.
- Checkpoint folders: files plus ``state.json``. :func:`write_checkpoint` writes them beside the folder's place
  (``NAME.next``), ``state.json`` last, and swaps them in by renames (the previous checkpoint parked as
  ``NAME.old`` until the new one is in place), so a kill at any moment leaves one complete checkpoint, the
  previous or the new one; :func:`settle_checkpoint` finishes or undoes a swap a kill interrupted.
  :func:`read_checkpoint` turns any failure to read one into a one-line :class:`CheckpointError`.
- The training log (JSON lines with a ``step``): :func:`truncate_log` cuts it back to the checkpoint on resume,
  so a resumed run's log reads as one run.

Only what is in a checkpoint differs between the loops (VLM training: ``checkpoints/step-NNNNNNNN/`` with
``trainable.safetensors``, ``optimizer.pt``, ``rng.safetensors``; pretraining: ``checkpoint/`` with
``model.safetensors``, ``optimizer.safetensors``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ssmvlm.utils.dotted_keys import flatten_keys
from ssmvlm.utils.errors import CheckpointError, ConfigError
from ssmvlm.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text, iter_jsonl, read_json

CONFIG_FILE = "config.json"
STATE_FILE = "state.json"

T = TypeVar("T")


def check_same_config(run_dir: Path, config: Mapping[str, Any], *, may_change: Iterable[str]) -> None:
    """Raise a one-line ConfigError naming the first dotted key in which ``run_dir``'s saved config differs from
    ``config``, leaving out ``may_change`` (dotted keys, or groups such as ``logging``). No saved config: fine."""
    saved_path = Path(run_dir) / CONFIG_FILE
    if not saved_path.is_file():
        return
    saved, current = flatten_keys(read_json(saved_path)), flatten_keys(config)
    allowed = tuple(may_change)
    differing = sorted(
        key
        for key in set(saved) | set(current)
        if saved.get(key) != current.get(key) and not any(key == a or key.startswith(f"{a}.") for a in allowed)
    )
    if differing:
        key = differing[0]
        raise ConfigError(
            key,
            f"{run_dir} holds a run with {key}={saved.get(key)!r}, not {current.get(key)!r}; "
            "use another output directory (or delete that one)",
        )


def swap_folders(folder: Path) -> tuple[Path, Path]:
    """Where a checkpoint is written before it is swapped in, and where the one it replaces is parked."""
    return folder.with_name(folder.name + ".next"), folder.with_name(folder.name + ".old")


def write_checkpoint(folder: Path, files: Mapping[str, bytes], state: Mapping[str, Any]) -> Path:
    """Write ``files`` and ``state.json`` as the checkpoint ``folder``, replacing any checkpoint there."""
    staged, old = swap_folders(folder)
    shutil.rmtree(staged, ignore_errors=True)
    for name, data in files.items():
        atomic_write_bytes(staged / name, data)
    # state.json is written last: its presence means the files above belong to this checkpoint
    atomic_write_json(staged / STATE_FILE, dict(state))
    if folder.exists():
        folder.rename(old)
    staged.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def settle_checkpoint(folder: Path) -> bool:
    """Finish or undo a swap a kill interrupted; whether ``folder`` now holds a complete checkpoint."""
    staged, old = swap_folders(folder)
    if not folder.exists() and (staged / STATE_FILE).is_file():
        staged.rename(folder)  # killed between the two renames: the new checkpoint is complete
    elif not folder.exists() and (old / STATE_FILE).is_file():
        old.rename(folder)  # killed before the new one was complete: keep the previous one
    shutil.rmtree(staged, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return (folder / STATE_FILE).is_file()


def read_checkpoint(folder: Path, read: Callable[[Path], T]) -> T:
    """``read(folder)``; a checkpoint that cannot be read is a one-line CheckpointError naming the folder."""
    try:
        return read(folder)
    except CheckpointError:
        raise
    except Exception as exc:  # OSError, safetensors' own errors, a state.json of another layout: all unreadable
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{folder}: cannot resume from this checkpoint ({reason}); delete it to start over"
        ) from None


def remove_checkpoint(folder: Path) -> None:
    for path in (folder, *swap_folders(folder)):
        shutil.rmtree(path, ignore_errors=True)


def truncate_log(path: Path, step: int) -> None:
    """Keep the records of steps up to ``step`` (a torn last line from a kill is dropped)."""
    if not path.is_file():
        return
    kept = [r for r in iter_jsonl(path, tolerate_truncated_tail=True) if r.get("step", 0) <= step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
