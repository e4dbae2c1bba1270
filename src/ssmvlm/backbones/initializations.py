"""Produced initializations: names such as ``vmamba_nano@shapes-det`` → backbone weights.

A local directory (``$SSMVLM_HOME/initializations``, default ``~/.cache/ssmvlm``; every function also takes
``home``) holds one JSON entry per name with the output directory of the pretraining run that produced it, its
metrics and config. ``ssmvlm.pretrain`` registers its runs here; ``create_vision_backbone(checkpoint="NAME@TAG")``
and the study resolve names here. It lives with the backbones, which read it, so that nothing in the zoo imports
from the pretraining above it.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from pathlib import Path
from typing import Any

from ssmvlm.utils.errors import CheckpointError, ConfigError
from ssmvlm.utils.io import atomic_write_json, read_json

HOME_ENV = "SSMVLM_HOME"
WEIGHTS_FILE = "backbone.safetensors"
_NAME = re.compile(r"^(?P<backbone>[A-Za-z0-9_.-]+)@(?P<tag>[A-Za-z0-9_.-]+)$")


def registry_dir(home: str | Path | None = None) -> Path:
    base = Path(home) if home is not None else Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "ssmvlm")
    return base.expanduser() / "initializations"


def parse_name(name: str) -> tuple[str, str]:
    """``"vmamba_nano@shapes-cls"`` → ``("vmamba_nano", "shapes-cls")``."""
    match = _NAME.match(name)
    if not match:
        raise ConfigError("initialization", f"name {name!r} must look like BACKBONE@TAG (e.g. vmamba_nano@shapes-cls)")
    return match["backbone"], match["tag"]


def register_initialization(name: str, out_dir: str | Path, *, home: str | Path | None = None) -> dict[str, Any]:
    """Record the finished pretraining run in ``out_dir`` under ``name`` (replacing an older entry)."""
    backbone, _ = parse_name(name)
    out_dir = Path(out_dir).resolve()
    for required in (WEIGHTS_FILE, "metrics.json", "config.json"):
        if not (out_dir / required).is_file():
            raise CheckpointError(f"{out_dir}: not a finished pretraining run ({required} is missing)")
    config = read_json(out_dir / "config.json")
    if config.get("backbone") != backbone:
        raise ConfigError(
            "register",
            f"{name!r} names backbone {backbone}, but {out_dir} holds weights of {config.get('backbone')}",
        )
    entry = {
        "name": name,
        "backbone": backbone,
        "objective": config.get("objective"),
        "out_dir": str(out_dir),
        "weights": str(out_dir / WEIGHTS_FILE),
        "metrics": read_json(out_dir / "metrics.json"),
        "config": config,
        "registered": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    atomic_write_json(registry_dir(home) / f"{name}.json", entry)
    return entry


def list_initializations(*, home: str | Path | None = None) -> list[dict[str, Any]]:
    """Every registered entry, sorted by name."""
    folder = registry_dir(home)
    if not folder.is_dir():
        return []
    return [read_json(path) for path in sorted(folder.glob("*@*.json"))]


def resolve_initialization(name: str, *, home: str | Path | None = None) -> Path:
    """The backbone weights file registered under ``name``."""
    parse_name(name)
    path = registry_dir(home) / f"{name}.json"
    if not path.is_file():
        known = [entry["name"] for entry in list_initializations(home=home)]
        raise ConfigError(
            "checkpoint",
            f"no produced initialization named {name!r} in {registry_dir(home)} "
            "(make one with: ssmvlm pretrain run ... --register NAME)",
            allowed=known or ["none registered yet"],
        )
    weights = Path(read_json(path)["weights"])
    if not weights.is_file():
        raise CheckpointError(f"initialization {name!r}: its weights {weights} are gone; rerun or re-register it")
    return weights


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """A file path as given, or the weights of a produced initialization such as ``vmamba_nano@shapes-cls``."""
    path = Path(checkpoint)
    if path.exists() or "@" not in str(checkpoint):
        return path
    return resolve_initialization(str(checkpoint))
