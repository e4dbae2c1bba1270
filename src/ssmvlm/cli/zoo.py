"""`ssmvlm zoo`: The vision backbone zoo: list backbones and inspect one.

Parameter counts come from building each trunk on the meta device (no weight memory); the listed rows are
cached under ``$XDG_CACHE_HOME/ssmvlm`` with a fingerprint of the backbone source files and the timm version,
so a cached listing imports neither torch nor timm, and is rebuilt whenever that code changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from ssmvlm.backbones.base import VisionBackbone

app = typer.Typer(help="The vision backbone zoo: list backbones and inspect one.", no_args_is_help=True)

_COLUMNS = ("name", "family", "kind", "params", "default tap", "tokens", "pretraining sources")


@dataclass(frozen=True)
class _Described:
    backbone: VisionBackbone
    image_size: int
    size_error: str  # why the backbone cannot take ``image_size`` ("" when it can)


def _build_on_meta(name: str, image_size: int) -> VisionBackbone:
    import torch

    from ssmvlm.backbones import create_vision_backbone

    try:
        with torch.device("meta"):
            return create_vision_backbone(name, image_size=image_size)
    except (NotImplementedError, RuntimeError):  # an init that reads tensor data: build it for real
        return create_vision_backbone(name, image_size=image_size)


def _describe(name: str, image_size: int | None) -> _Described:
    """The backbone built at ``image_size`` (its default size when None, or when the size does not fit it)."""
    from ssmvlm.backbones.zoo import get_backbone_entry
    from ssmvlm.utils.errors import ConfigError

    default_size = get_backbone_entry(name).spec.default_image_size
    size = image_size or default_size
    try:
        return _Described(_build_on_meta(name, size), size, "")
    except ConfigError as exc:
        if size == default_size:
            raise
        return _Described(_build_on_meta(name, default_size), size, str(exc))


def _millions(count: int) -> str:
    return f"{count / 1e6:.2f}M"


def _tokens(described: _Described) -> str:
    if described.size_error:
        return "—"
    return f"{described.backbone.num_tokens(described.image_size)} @{described.image_size}²"


def _console() -> Console:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # pipes and test runners: do not wrap the table at 80 columns
        console.width = 200
    return console


def _cache_path() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ssmvlm" / "zoo_rows.json"


def _code_fingerprint() -> str:
    """Changes whenever a backbone module or timm changes, so cached rows never outlive the code.

    Read from the source files and the installed metadata, without importing torch or timm.
    """
    import importlib.metadata
    import importlib.util

    backbones_dir = Path(importlib.util.find_spec("ssmvlm").origin).parent / "backbones"
    digest = hashlib.sha256(importlib.metadata.version("timm").encode())
    for source in sorted(backbones_dir.glob("*.py")):
        digest.update(source.name.encode() + source.read_bytes())
    return digest.hexdigest()[:16]


def _load_cache() -> dict[str, Any]:
    fingerprint = _code_fingerprint()
    try:
        cache = json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict) or cache.get("fingerprint") != fingerprint:
        cache = {"fingerprint": fingerprint, "rows": {}}
    return cache


def _families_by_name(cache: dict[str, Any]) -> dict[str, str]:
    """Every registered name and its family; importing the families only when the cache lacks them."""
    if "families" not in cache:
        from ssmvlm.backbones.zoo import get_backbone_entry, list_vision_backbones

        cache["families"] = {name: get_backbone_entry(name).spec.family for name in list_vision_backbones()}
    return cache["families"]


def _list_row(name: str, image_size: int | None) -> dict[str, Any]:
    described = _describe(name, image_size)
    spec = described.backbone.spec
    return {
        "name": name, "family": spec.family, "kind": spec.kind,
        "params": _millions(described.backbone.param_count()), "default tap": spec.default_tap,
        "tokens": _tokens(described), "pretraining sources": ", ".join(spec.pretrained_sources) or "—",
    }


def _rows(cache: dict[str, Any], names: list[str], image_size: int | None) -> list[dict[str, Any]]:
    """Table rows, from the cache where present; the others are built on the meta device and cached."""
    from ssmvlm.utils.io import atomic_write_json
    from ssmvlm.utils.progress import progress_bar

    keys = {name: f"{name}@{image_size or 'default'}" for name in names}
    missing = [name for name in names if keys[name] not in cache["rows"]]
    if missing:
        with progress_bar(transient=True) as progress:
            task = progress.add_task("counting parameters", total=len(missing), status="")
            for name in missing:
                progress.update(task, status=name)
                cache["rows"][keys[name]] = _list_row(name, image_size)
                progress.advance(task)
        with contextlib.suppress(OSError):  # a read-only home only costs the next listing its speed
            atomic_write_json(_cache_path(), cache)
    return [cache["rows"][keys[name]] for name in names]


@app.command("list")
def list_backbones(
    family: str | None = typer.Option(None, "--family", "-f", help="Only this family (e.g. vit, vmamba)."),
    image_size: int | None = typer.Option(
        None, "--image-size", "-s", help="Count tokens at this square size (default: each backbone's own)."
    ),
) -> None:
    """List the registered backbones: params, default tap, tokens, pretraining sources."""
    from rich.table import Table

    from ssmvlm.utils.errors import ConfigError

    cache = _load_cache()
    families = _families_by_name(cache)
    names = sorted(name for name, name_family in families.items() if family is None or name_family == family)
    if not names:
        allowed = sorted(set(families.values()))
        raise ConfigError("--family", f"no backbone of family {family!r}", allowed=allowed)
    table = Table(title=f"ssmvlm vision backbones ({len(names)})")
    for column in _COLUMNS:
        table.add_column(column, justify="right" if column in ("params", "tokens") else "left", no_wrap=True)
    for row in _rows(cache, names, image_size):
        table.add_row(*(row[column] for column in _COLUMNS))
    _console().print(table)


@app.command("info")
def info(
    name: str = typer.Argument(..., help="A zoo name (see `ssmvlm zoo list`)."),
    image_size: int | None = typer.Option(
        None, "--image-size", "-s", help="Square input size (default: the backbone's own)."
    ),
) -> None:
    """Details of one backbone: stages, tap, tokens, normalization, official checkpoint files."""
    from rich.table import Table

    from ssmvlm.utils.errors import ConfigError

    described = _describe(name, image_size)
    if described.size_error:
        raise ConfigError("--image-size", described.size_error)
    backbone = described.backbone
    spec = backbone.spec
    tap = backbone.tap_info(backbone.feature_tap)
    table = Table(title=name, show_header=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value")
    rows = [
        ("family / kind", f"{spec.family} / {spec.kind}"),
        ("description", spec.description or "—"),
        ("params", f"{backbone.param_count():,} ({_millions(backbone.param_count())})"),
        ("image size", f"{described.image_size}² (default {spec.default_image_size}²)"),
        ("stage dims", ", ".join(map(str, backbone.stage_dims))),
        ("default tap", f"{spec.default_tap}: dim {tap.dim}, stride {tap.stride}"),
        ("tokens", f"{backbone.num_tokens(described.image_size)} × {tap.dim}"),
        ("mean / std", f"{spec.mean} / {spec.std}"),
    ]
    rows += [(f"checkpoint: {source}", file) for source, file in spec.pretrained_sources.items()]
    for field_name, value in rows:
        table.add_row(field_name, value)
    _console().print(table)
