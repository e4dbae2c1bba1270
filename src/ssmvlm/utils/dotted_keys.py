"""Dotted keys ↔ nested mappings: ``{"optim.lr": 1e-3}`` ↔ ``{"optim": {"lr": 1e-3}}``.

Config overrides, the study's recipe and pretraining overrides, the run folders' config drift check and the
checkpoint converter all go through these; they sit in ``utils`` because the last two do.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from ssmvlm.utils.errors import ConfigError


def nest_keys(items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """``[("optim.lr", 1e-3), ("optim", {"epochs": 2})]`` → ``{"optim": {"lr": 1e-3, "epochs": 2}}``.

    Later items win; a mapping value is merged key by key into what earlier items put there, so a spec's
    ``optim.lr`` and a command line's nested ``optim: {epochs: ...}`` both apply. A dotted key that passes
    through a value set earlier (``a=1`` then ``a.b=2``) is refused.
    """
    nested: dict[str, Any] = {}
    for key, value in items:
        *parents, leaf = str(key).split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(key, "overrides both a value and a key below it")
        if isinstance(value, dict):
            value = copy.deepcopy(value)  # later dotted keys descend into it; the caller's mapping stays as it was
            if isinstance(node.get(leaf), dict):
                value = deep_merge(node[leaf], value)
        node[leaf] = value
    return nested


def flatten_keys(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1e-3}}`` → ``{"optim.lr": 1e-3}`` (nested mappings become dotted keys)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten_keys(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` laid over it; mappings in both are merged key by key."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
