"""Registers the SSM and hybrid backbones (VMamba, Vim, MambaVision) as timm models.

After ``import ssmvlm``, ``timm.create_model("vmamba_small_s2l15")`` returns the classification model (the
trunk with its head) with a ``pretrained_cfg`` naming the official checkpoint file. Nothing is downloaded:
``pretrained=True`` loads the file named by ``pretrained_cfg_overlay=dict(file=PATH)`` (or the official file
name, relative to the working directory) safely through :func:`ssmvlm.utils.io.load_state_dict`, and fails
with a one-line message naming the file to fetch when it is not on disk.

Importing timm costs seconds, so this module does not import it. Each family module registers its names at
its end (it imports timm itself); ``register_with_timm`` (run by ``import ssmvlm``) loads the families at once
when timm is already imported, and otherwise right after timm's own import finishes (a one-shot import hook).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

# Evaluation settings of each release (timm pretrained_cfg fields).
_FAMILY_CFG: dict[str, dict[str, Any]] = {
    "vmamba": dict(
        crop_pct=0.875, first_conv="patch_embed.0", classifier="classifier.head",
        origin_url="https://github.com/MzeroMiko/VMamba", paper_ids="arXiv:2401.10166", license="mit",
    ),
    "vim": dict(
        crop_pct=0.875, first_conv="patch_embed.proj", classifier="head",
        origin_url="https://github.com/hustvl/Vim", paper_ids="arXiv:2401.09417", license="apache-2.0",
    ),
    "mambavision": dict(
        crop_pct=1.0, first_conv="patch_embed.conv_down.0", classifier="head", crop_mode="center",
        origin_url="https://github.com/NVlabs/MambaVision", paper_ids="arXiv:2407.08083", license="other",
    ),
}  # fmt: skip
_CROP_PCT = {"mambavision_t2": 0.98, "mambavision_s": 0.93}

default_cfgs: dict[str, Any] = {}  # read by timm's register_model; filled per family
_registered_families: set[str] = set()


def register_family(family: str) -> None:
    """Register a family's zoo backbones with timm; each family module calls this once it is fully loaded."""
    if family in _registered_families:
        return
    from timm.models import generate_default_cfgs, register_model

    from ssmvlm.backbones.registry import get_backbone_entry, list_vision_backbones

    names = list_vision_backbones(family)
    default_cfgs.update(
        generate_default_cfgs({name: _pretrained_cfg(get_backbone_entry(name)) for name in names})
    )
    for name in names:
        register_model(_entrypoint(name))
    _registered_families.add(family)


def _load_families() -> None:
    # Loading the family modules registers them (see register_family); an import already in progress (timm
    # imported from within a family module) returns at once and that family registers itself when done.
    import ssmvlm.backbones.families  # noqa: F401


def _pretrained_cfg(entry: Any) -> dict[str, Any]:
    spec = entry.spec
    source = spec.pretrained_sources.get("in1k")
    cfg = dict(_FAMILY_CFG[spec.family])
    cfg.update(
        file=source.rsplit("/", 1)[-1] if source else None,
        num_classes=1000 if source else 0,
        input_size=(3, spec.default_image_size, spec.default_image_size),
        mean=spec.mean, std=spec.std, interpolation="bicubic", description=spec.description,
        crop_pct=_CROP_PCT.get(spec.name, cfg["crop_pct"]),
    )  # fmt: skip
    if source:
        cfg["notes"] = (f"official checkpoint: {source}",)
    return cfg


def _entrypoint(name: str) -> Any:
    def create(pretrained: bool = False, **kwargs: Any) -> Any:
        return create_timm_model(name, pretrained=pretrained, **kwargs)

    create.__name__ = create.__qualname__ = name
    create.__module__ = __name__
    create.__doc__ = f"{name} (ssmvlm): the classification model; pretrained=True reads a local file."
    return create


def create_timm_model(
    name: str,
    *,
    pretrained: bool = False,
    pretrained_cfg: Any = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    img_size: int | tuple[int, int] | None = None,
    in_chans: int = 3,
    **kwargs: Any,
) -> Any:
    """Build ``name``'s trunk with its head and pretrained_cfg; load a local checkpoint if pretrained."""
    from timm.models import resolve_pretrained_cfg

    from ssmvlm.backbones.registry import get_backbone_entry
    from ssmvlm.utils.errors import ConfigError

    if in_chans != 3:
        raise ConfigError("in_chans", f"{name} takes RGB input only (in_chans=3); got {in_chans}")
    kwargs.pop("cache_dir", None)
    entry = get_backbone_entry(name)
    cfg = resolve_pretrained_cfg(
        name, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=pretrained_cfg_overlay
    )
    cfg_dict = cfg.to_dict()
    kwargs.setdefault("num_classes", cfg_dict.get("num_classes") or 0)
    file = _pretrained_file(name, cfg_dict) if pretrained else None
    image_size = img_size if img_size is not None else entry.spec.default_image_size
    model = entry.build_trunk(image_size=image_size, **kwargs)
    model.pretrained_cfg = model.default_cfg = cfg_dict
    if file is not None:
        _load_pretrained(entry, model, file, image_size)
    return model


def _pretrained_file(name: str, cfg: dict[str, Any]) -> Path:
    from ssmvlm.utils.errors import CheckpointError

    file = cfg.get("file")
    if not file or not Path(file).is_file():
        official = cfg.get("notes", ("no official checkpoint",))[0]
        raise CheckpointError(
            f"{name}: pretrained=True needs a local checkpoint; {file or 'none'} is not on disk "
            f"({official}); pass pretrained_cfg_overlay=dict(file='/path/to/checkpoint')"
        )
    return Path(file)


def _load_pretrained(entry: Any, model: Any, file: Path, image_size: Any) -> None:
    """Load ``file`` strictly; a head of another size than the checkpoint's is left as initialised."""
    from ssmvlm.utils.errors import CheckpointError
    from ssmvlm.utils.io import load_state_dict

    name = entry.spec.name
    backbone = entry.wrapper(entry.spec, model, image_size=image_size)
    state = backbone.adapt_state_dict(load_state_dict(file))
    own = model.state_dict()
    state = {
        key: value for key, value in state.items()
        if not (backbone.is_head_key(key) and key in own and own[key].shape != value.shape)
    }  # fmt: skip
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [key for key in missing if not backbone.is_head_key(key)]
    if missing or unexpected:
        raise CheckpointError(
            f"{file}: does not fit {name}: missing {missing[:3]} ({len(missing)}), "
            f"unexpected {unexpected[:3]} ({len(unexpected)})"
        )


class _RegisterAfterTimmImport(importlib.abc.MetaPathFinder):
    """Finds ``timm`` through the other finders and registers the models once its module has executed."""

    def find_spec(
        self, fullname: str, path: Any = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("timm")
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _load_families()

    def __getattr__(self, name: str) -> Any:  # resource readers and the like
        return getattr(self._loader, name)


def register_with_timm() -> None:
    """Register now if timm is imported, else right after it is."""
    if "timm" in sys.modules:
        _load_families()
    elif not any(isinstance(finder, _RegisterAfterTimmImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterTimmImport())


register_with_timm()
