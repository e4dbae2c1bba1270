"""Noun phrases for objects ("the small red star", "the green object") and which objects a phrase picks out.

Phrases follow one grammar, ``the [size] [colour] (shape|object)``, so questions and referring expressions
read alike and a test can parse them back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TypeVar

import numpy as np

from ssmvlm.data.shapes.scene import ATTRIBUTE_SUBSETS, Scene, SceneObject

T = TypeVar("T")


@dataclass(frozen=True)
class Description:
    """A filter on attributes; None means "any"."""

    size: str | None = None
    color: str | None = None
    shape: str | None = None

    @classmethod
    def of(cls, obj: SceneObject, attributes: tuple[str, ...]) -> Description:
        return cls(**{name: getattr(obj, name) for name in attributes})

    def matches(self, obj: SceneObject) -> bool:
        return (
            (self.size is None or self.size == obj.size)
            and (self.color is None or self.color == obj.color)
            and (self.shape is None or self.shape == obj.shape)
        )

    def select(self, objects: tuple[SceneObject, ...] | list[SceneObject]) -> list[SceneObject]:
        return [o for o in objects if self.matches(o)]

    @property
    def noun(self) -> str:
        words = [w for w in (self.size, self.color) if w is not None]
        return " ".join([*words, self.shape or "object"])

    @property
    def phrase(self) -> str:
        return f"the {self.noun}"


@cache
def attribute_subsets(exclude: tuple[str, ...] = ()) -> tuple[tuple[str, ...], ...]:
    """Every non-empty subset of the attributes not in ``exclude``, in grammar order."""
    return tuple(subset for subset in ATTRIBUTE_SUBSETS if not set(subset) & set(exclude))


def unique_descriptions(
    target: SceneObject, scene: Scene, exclude: tuple[str, ...] = ()
) -> list[Description]:
    """Descriptions (not using ``exclude``) that pick out ``target`` and nothing else in ``scene``."""
    counts = scene.combination_counts
    return [
        Description.of(target, subset)
        for subset in attribute_subsets(exclude)
        if counts[subset][tuple(getattr(target, name) for name in subset)] == 1
    ]


def pick(rng: np.random.Generator, options: Sequence[T]) -> T:
    """One option chosen by ``rng`` (keeps every random choice on the scene's own generator)."""
    return options[int(rng.random() * len(options))]  # rng.random() is ~10× cheaper than rng.integers()


def pick_unique_description(
    rng: np.random.Generator, target: SceneObject, scene: Scene, exclude: tuple[str, ...] = ()
) -> Description | None:
    options = unique_descriptions(target, scene, exclude)
    return pick(rng, options) if options else None
