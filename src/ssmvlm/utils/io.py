"""Atomic writes and safe reads: nothing already written is lost or half-written, nothing is unpickled."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ssmvlm.utils.errors import CheckpointError, DataError, StorageError

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _write(handle: Any, data: bytes | str) -> None:
    """The one place file contents are written (the disk-full tests make it fail on the Nth call)."""
    handle.write(data)


def _storage_error(path: Path, exc: OSError, kept: str) -> StorageError:
    return StorageError(f"{path}: cannot write ({os.strerror(exc.errno or errno.ENOSPC)}); {kept}")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename.

    A full disk raises a one-line :class:`StorageError`; ``path`` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            _write(handle, data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            raise _storage_error(path, exc, "its previous content is left as it was") from None
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def read_json(path: str | Path) -> Any:
    """Read a JSON file, turning decode errors into a one-line :class:`DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        with path.open("r", encoding="utf-8") as handle:
            return json.load(handle)
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record and flush it to disk, so an interrupted run keeps every finished record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("a", encoding="utf-8") as handle:
            _write(handle, json.dumps(record, default=_json_default) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            # Readers skip a last line cut short (iter_jsonl's tolerate_truncated_tail), so earlier records stay.
            raise _storage_error(path, exc, "the records written before are kept") from None
        raise


def iter_jsonl(path: str | Path, *, tolerate_truncated_tail: bool = False) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSONL file.

    With ``tolerate_truncated_tail`` a last line cut off by a crash is skipped instead of raising, which is
    what resuming from an append-only log needs.
    """
    path = Path(path)
    if not path.is_file():
        return
    with path.open("r", encoding="utf-8", errors="strict") as handle:
        lines = handle.readlines()
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            is_tail = index == len(lines) - 1 and not line.endswith("\n")
            if tolerate_truncated_tail and is_tail:
                return
            raise DataError(path, "malformed JSON line", record=index + 1) from None


_CHECKPOINT_ENTRIES = ("model", "state_dict", "module", "model_state")


def load_state_dict(path: str | Path, *, entry: str | None = None) -> dict[str, Any]:
    """Load a state dict without executing pickled code.

    Reads safetensors directly, and ``.pth``/``.pt``/``.bin``/``.tar`` files with
    ``torch.load(weights_only=True)``. Official training checkpoints wrap the weights in a dict; the
    ``entry`` key (or the first of ``model``, ``state_dict``, ``module``) is taken. When a file holds pickled
    objects that ``weights_only`` refuses (a yacs CfgNode, an argparse Namespace), the error names the one-line
    conversion command to run in an environment the user trusts.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(
                f"{path}: holds pickled Python objects that are not loaded for safety; convert it once in an "
                f"environment you trust with: python -m ssmvlm.utils.convert_checkpoint {path} "
                f"{path.with_suffix('.safetensors')}"
            ) from None
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({exc})") from None
    return _unwrap_state_dict(obj, path, entry)


def _unwrap_state_dict(obj: Any, path: Path, entry: str | None) -> dict[str, Any]:
    import torch

    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    if entry is not None:
        if entry not in obj:
            raise CheckpointError(f"{path}: no entry '{entry}' (has: {', '.join(map(str, list(obj)[:10]))})")
        obj = obj[entry]
    elif not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _CHECKPOINT_ENTRIES:
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
        else:
            raise CheckpointError(
                f"{path}: no state dict found (looked for entries {', '.join(_CHECKPOINT_ENTRIES)})"
            )
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: the state dict holds no tensors")
    return tensors
