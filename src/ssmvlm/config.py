"""Typed configs: dataclasses loadable from YAML, with ``a.b=value`` overrides and strict key checking.

Every command builds its config the same way: defaults from the dataclass, then a YAML file, then CLI
overrides. Unknown keys and wrongly typed values raise :class:`ConfigError` naming the key path.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ssmvlm.utils.dotted_keys import deep_merge, nest_keys
from ssmvlm.utils.errors import ConfigError

T = TypeVar("T")


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-serializable dict of a (nested) dataclass config."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], *, path: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and coercing simple types."""
    if not isinstance(data, dict):
        raise ConfigError(path or "<root>", f"expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(_join(path, unknown[0]), "unknown key", allowed=sorted(fields))
    kwargs = {name: _coerce(hints[name], value, _join(path, name)) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(path or "<root>", str(exc)) from None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _coerce(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(path, f"value {value!r} fits none of {hint}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(path, f"invalid value {value!r}", allowed=[str(a) for a in args])
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list | tuple):
            raise ConfigError(path, f"expected a list, got {type(value).__name__}")
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {type(value).__name__}")
        return dict(value)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        return from_dict(hint, value, path=path)
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(path, f"expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(path, f"expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(path, f"expected an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(path, f"expected an integer, got {value!r}")
        return int(as_float)
    if hint is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(path, f"expected a number, got {value!r}") from None
    if hint is str:
        if isinstance(value, dict | list):
            raise ConfigError(path, f"expected a string, got {type(value).__name__}")
        return str(value)
    if hint is Path:
        return Path(value)
    return value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["train.lr=1e-3", "seeds=[1,2]"]`` into a nested dict; values are parsed as YAML scalars."""
    items: list[tuple[str, Any]] = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "override must look like key.path=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            raise ConfigError(
                key.strip(), f"cannot parse value {raw!r} (quote values holding [ ] {{ }} or :)"
            ) from None
        items.append((key.strip(), value))
    return nest_keys(items)


def load_config(
    cls: type[T],
    yaml_path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> T:
    """Defaults of ``cls`` ← ``base`` ← YAML file ← overrides, validated into a ``cls`` instance."""
    data: dict[str, Any] = dict(base or {})
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise ConfigError(str(path), "config file not found")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(str(path), f"malformed YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(str(path), "the top level must be a mapping")
        data = deep_merge(data, loaded)
    if overrides:
        data = deep_merge(data, parse_overrides(overrides))
    return from_dict(cls, data)
