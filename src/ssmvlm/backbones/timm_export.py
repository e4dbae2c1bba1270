"""The zoo into timm: the SSM and hybrid backbones (VMamba, Vim, MambaVision) as timm models.

After :func:`register_with_timm` (``ssmvlm.register_with_timm()``; ``import ssmvlm`` calls it when timm is already
imported), ``timm.create_model("vmamba_small_s2l15")`` returns the classification model (the trunk with its head)
with a ``pretrained_cfg`` naming the official checkpoint file. Nothing is downloaded: ``pretrained=True`` loads
the file named by ``pretrained_cfg_overlay=dict(file=PATH)`` (or the official file name, relative to the working
directory) safely through :func:`ssmvlm.utils.io.load_state_dict`, and fails with a one-line message naming the
file to fetch when it is not on disk. (The other direction, timm models in the zoo, is :mod:`timm_models`.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from timm.models import generate_default_cfgs, register_model, resolve_pretrained_cfg

from ssmvlm.backbones.registry import RegisteredBackbone
from ssmvlm.backbones.zoo import get_backbone_entry, list_vision_backbones
from ssmvlm.utils.errors import CheckpointError, ConfigError
from ssmvlm.utils.io import load_state_dict

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

default_cfgs: dict[str, Any] = {}  # read by timm's register_model, which looks it up in the entrypoint's module
_registered = False


def register_with_timm() -> None:
    """Register the SSM and hybrid zoo backbones with timm; calling it again does nothing."""
    global _registered
    if _registered:
        return
    names = [name for family in _FAMILY_CFG for name in list_vision_backbones(family)]
    default_cfgs.update(generate_default_cfgs({name: _pretrained_cfg(get_backbone_entry(name)) for name in names}))
    for name in names:
        register_model(_entrypoint(name))
    _registered = True


def _pretrained_cfg(entry: RegisteredBackbone) -> dict[str, Any]:
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
    file = cfg.get("file")
    if not file or not Path(file).is_file():
        official = cfg.get("notes", ("no official checkpoint",))[0]
        raise CheckpointError(
            f"{name}: pretrained=True needs a local checkpoint; {file or 'none'} is not on disk "
            f"({official}); pass pretrained_cfg_overlay=dict(file='/path/to/checkpoint')"
        )
    return Path(file)


def _load_pretrained(entry: RegisteredBackbone, model: Any, file: Path, image_size: Any) -> None:
    """Load ``file`` strictly; a head of another size than the checkpoint's is left as initialised."""
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
