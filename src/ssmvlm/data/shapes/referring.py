"""Referring expressions that pick out exactly one object, in three styles, each registered in :data:`STYLES`.

- ``attributes``: "the small red star";
- ``relation``: "the circle to the left of the blue square", "the star closest to the green object";
- ``ordinal``: "the leftmost red object", "the topmost star".

Every style checks uniqueness against the whole scene before returning a sentence, so a sentence never matches
two objects or none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ssmvlm.data.shapes.describe import Description, attribute_subsets, pick, unique_descriptions
from ssmvlm.data.shapes.scene import (
    ORDINAL_AXES,
    RELATIONS,
    Scene,
    SceneObject,
    closest_object,
    extreme_object,
    ordinal_margin,
)


@dataclass(frozen=True)
class ReferringExpression:
    sentence: str
    target: SceneObject
    style: str


def _filters(target: SceneObject, scene: Scene) -> list[tuple[Description, list[SceneObject]]]:
    """Target filters, from none ("object") to all attributes, each with the objects it selects."""
    filters = [Description(), *(Description.of(target, subset) for subset in attribute_subsets())]
    return [(description, description.select(scene.objects)) for description in filters]


def refer_by_attributes(
    scene: Scene, target: SceneObject, rng: np.random.Generator
) -> ReferringExpression | None:
    options = unique_descriptions(target, scene)
    if not options:
        return None
    return ReferringExpression(pick(rng, options).phrase, target, "attributes")


def refer_by_relation(
    scene: Scene, target: SceneObject, rng: np.random.Generator
) -> ReferringExpression | None:
    filters = _filters(target, scene)
    options = []
    for anchor in scene.objects:
        if anchor.id == target.id:
            continue
        holding = [words for words, relation in RELATIONS.items() if relation(target, anchor)]
        anchor_descriptions = unique_descriptions(anchor, scene)
        if not anchor_descriptions:
            continue
        for description, selected in filters:
            candidates = [o for o in selected if o.id != anchor.id]
            for words in holding:
                relation = RELATIONS[words]
                if sum(relation(o, anchor) for o in candidates) == 1:  # the target, and only it
                    options.append((description, words, anchor_descriptions, len(candidates)))
            if closest_object(anchor, candidates) == target:
                options.append((description, "closest to", anchor_descriptions, len(candidates)))
    if not options:
        return None
    # Prefer filters that leave several candidates besides the anchor, so the relation carries information.
    informative = [o for o in options if o[3] > 1]
    description, words, anchor_descriptions, _ = pick(rng, informative or options)
    anchor_phrase = pick(rng, anchor_descriptions).phrase
    return ReferringExpression(f"{description.phrase} {words} {anchor_phrase}", target, "relation")


def refer_by_ordinal(
    scene: Scene, target: SceneObject, rng: np.random.Generator
) -> ReferringExpression | None:
    margin = ordinal_margin(scene)
    options = []
    for description, candidates in _filters(target, scene):
        for ordinal in ORDINAL_AXES:
            if extreme_object(candidates, ordinal, margin) == target:
                options.append((ordinal, description))
    if not options:
        return None
    ordinal, description = pick(rng, options)
    return ReferringExpression(f"the {ordinal} {description.noun}", target, "ordinal")


STYLES: dict[str, Callable[[Scene, SceneObject, np.random.Generator], ReferringExpression | None]] = {
    "attributes": refer_by_attributes,
    "relation": refer_by_relation,
    "ordinal": refer_by_ordinal,
}


def sample_referring(scene: Scene, rng: np.random.Generator, count: int) -> list[ReferringExpression]:
    """Up to ``count`` expressions for distinct targets, styles rotating from a random start."""
    expressions: list[ReferringExpression] = []
    styles = list(STYLES)
    first_style = int(rng.integers(len(styles)))
    for position, index in enumerate(rng.permutation(len(scene.objects))):
        target = scene.objects[int(index)]
        for offset in range(len(styles)):
            style = styles[(first_style + position + offset) % len(styles)]
            expression = STYLES[style](scene, target, rng)
            if expression is not None:
                expressions.append(expression)
                break
        if len(expressions) == count:
            break
    return expressions
