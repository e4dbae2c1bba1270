"""Run records: each run writes its resolved config, seed, package versions and git commit beside its outputs."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from ssmvlm.utils.io import atomic_write_json
from ssmvlm.utils.threads import current_threads

RUN_RECORD = "run.json"
_TRACKED_PACKAGES = (
    "ssmvlm",
    "torch",
    "torchvision",
    "timm",
    "transformers",
    "tokenizers",
    "numpy",
    "triton",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit of the source checkout (with ``-dirty`` when it has uncommitted changes), or None."""
    cwd = Path(path) if path else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def code_version(record: dict[str, Any]) -> str | None:
    """Which code wrote a run record: its git commit (a dirty tree counts as its commit: its changes are not
    recorded), else the installed ssmvlm version, else None."""
    commit = record.get("git_commit")
    if commit:
        return str(commit).removesuffix("-dirty")
    version = (record.get("versions") or {}).get("ssmvlm")
    return f"ssmvlm {version}" if version else None


def current_code_version() -> str | None:
    """:func:`code_version` of a run started now."""
    return code_version({"git_commit": git_commit(), "versions": {"ssmvlm": package_versions()["ssmvlm"]}})


def device_description() -> str:
    torch = sys.modules.get("torch")  # a data-only run should not pay for importing torch
    if torch is not None and torch.cuda.is_available():
        count = torch.cuda.device_count()
        return f"{count}x {torch.cuda.get_device_name(0)}"
    return f"cpu ({platform.processor() or platform.machine()})"


def run_record(config: dict[str, Any], seed: int | None, **extra: Any) -> dict[str, Any]:
    return {
        "config": config,
        "seed": seed,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "device": device_description(),
        "threads": current_threads(),
        "command": " ".join(sys.argv),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **extra,
    }


def write_run_record(out_dir: str | Path, config: dict[str, Any], seed: int | None, **extra: Any) -> Path:
    """Write ``run.json`` into ``out_dir`` and return its path."""
    path = Path(out_dir) / RUN_RECORD
    atomic_write_json(path, run_record(config, seed, **extra))
    return path
