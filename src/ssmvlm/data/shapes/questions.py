"""VQA question families with exact answers, and POPE-style existence probes, derived from a scene graph.

Each family is a function ``(scene, rng) -> VqaItem | None`` (None when the scene cannot support an
unambiguous question of that kind) registered in :data:`FAMILIES`; its name is the ``question_type`` written
to the VQAv2 annotations so that evaluation can report families separately.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import permutations

import numpy as np

from ssmvlm.data.shapes.describe import Description, pick, pick_unique_description, unique_descriptions
from ssmvlm.data.shapes.scene import (
    COLORS,
    SHAPES,
    SIZE_RANK,
    Scene,
    SceneObject,
    above,
    below,
    closest_object,
    left_of,
    right_of,
)

PLURALS = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "star": "stars",
    "diamond": "diamonds",
    "cross": "crosses",
    "hexagon": "hexagons",
    "object": "objects",
}
EXIST_TEMPLATE = "Is there {article} {color} {shape} in the image?"
POPE_VARIANTS = ("adversarial", "popular", "random")


@dataclass(frozen=True)
class VqaItem:
    question: str
    answer: str
    question_type: str
    answer_type: str  # VQAv2's "yes/no", "number" or "other"


def exist_question(color: str, shape: str) -> str:
    return EXIST_TEMPLATE.format(article="an" if color[0] in "aeiou" else "a", color=color, shape=shape)


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def ask_color(scene: Scene, rng: np.random.Generator) -> VqaItem | None:
    target = pick(rng, list(scene.objects))
    description = pick_unique_description(rng, target, scene, exclude=("color",))
    if description is None:
        return None
    return VqaItem(f"What color is {description.phrase}?", target.color, "color", "other")


def ask_shape(scene: Scene, rng: np.random.Generator) -> VqaItem | None:
    target = pick(rng, list(scene.objects))
    description = pick_unique_description(rng, target, scene, exclude=("shape",))
    if description is None:
        return None
    return VqaItem(f"What shape is {description.phrase}?", target.shape, "shape", "other")


def ask_count(scene: Scene, rng: np.random.Generator) -> VqaItem | None:
    kind = pick(rng, ["all", "color", "shape", "color+shape"])
    # Mostly attributes that occur in the scene, sometimes any (so "0" is a possible answer).
    source = pick(rng, list(scene.objects)) if rng.random() < 0.8 else None
    color = source.color if source else pick(rng, list(COLORS))
    shape = source.shape if source else pick(rng, list(SHAPES))
    description = Description(
        color=color if "color" in kind else None,
        shape=shape if "shape" in kind else None,
    )
    plural = " ".join(w for w in (description.color, PLURALS[description.shape or "object"]) if w)
    count = len(description.select(scene.objects))
    return VqaItem(f"How many {plural} are there?", str(count), "count", "number")


def absent_combination(scene: Scene, rng: np.random.Generator, variant: str) -> tuple[str, str]:
    """A colour-shape pair absent from the scene, as hard as ``variant`` asks (POPE's 3 negative samplers).

    ``adversarial``: colour and shape both occur, but on different objects (a binding error); ``popular``: the
    colour or the shape occurs; ``random``: any absent pair. A sampler with no candidate falls back to the
    next.
    """
    present = {(o.color, o.shape) for o in scene.objects}
    colors = {o.color for o in scene.objects}
    shapes = {o.shape for o in scene.objects}
    absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
    tiers = {
        "adversarial": [(c, s) for c, s in absent if c in colors and s in shapes],
        "popular": [(c, s) for c, s in absent if c in colors or s in shapes],
        "random": absent,
    }
    for name in POPE_VARIANTS[POPE_VARIANTS.index(variant) :]:
        if tiers[name]:
            return pick(rng, tiers[name])
    raise AssertionError("a scene of at most 8 objects always leaves an absent pair")


def ask_exist(scene: Scene, rng: np.random.Generator) -> VqaItem | None:
    if rng.random() < 0.5:
        target = pick(rng, list(scene.objects))
        color, shape, answer = target.color, target.shape, "yes"
    else:
        color, shape = absent_combination(scene, rng, pick(rng, list(POPE_VARIANTS)))
        answer = "no"
    return VqaItem(exist_question(color, shape), answer, "exist", "yes/no")


_AXIS_RELATIONS = (
    ((left_of, "to the left of"), (right_of, "to the right of")),
    ((above, "above"), (below, "below")),
)


def _describable_pairs(
    scene: Scene,
    exclude: tuple[str, ...],
) -> tuple[list[tuple[SceneObject, SceneObject]], dict[int, list[Description]]]:
    """Ordered pairs of distinct objects that each have a unique description (not using ``exclude``)."""
    options = {o.id: unique_descriptions(o, scene, exclude) for o in scene.objects}
    pairs = [(a, b) for a, b in permutations(scene.objects, 2) if options[a.id] and options[b.id]]
    return pairs, options


def ask_spatial(scene: Scene, rng: np.random.Generator) -> VqaItem | None:
    pairs, descriptions = _describable_pairs(scene, ())
    # Only pairs separated on an axis, so that the answer is exact whichever word of that axis is asked.
    options = [
        (a, b, axis) for a, b in pairs for axis in _AXIS_RELATIONS if axis[0][0](a, b) or axis[1][0](a, b)
    ]
    if not options:
        return None
    a, b, axis = pick(rng, options)
    relation, words = axis[int(rng.integers(2))]
    phrase_a = pick(rng, descriptions[a.id]).phrase
    phrase_b = pick(rng, descriptions[b.id]).phrase
    return VqaItem(f"Is {phrase_a} {words} {phrase_b}?", _yes_no(relation(a, b)), "spatial", "yes/no")


def ask_nearest(scene: Scene, rng: np.random.Generator) -> VqaItem | None:
    options = []
    for anchor in scene.objects:
        closest = closest_object(anchor, list(scene.objects))
        if closest is not None:
            options.append((anchor, closest))
    rng.shuffle(options)
    for anchor, closest in options:
        description = pick_unique_description(rng, anchor, scene)
        if description is not None:
            attribute = pick(rng, ["color", "shape"])
            question = f"What {attribute} is the object closest to {description.phrase}?"
            return VqaItem(question, getattr(closest, attribute), "nearest", "other")
    return None


def ask_compare(scene: Scene, rng: np.random.Generator) -> VqaItem | None:
    pairs, descriptions = _describable_pairs(scene, ("size",))
    options = [(a, b) for a, b in pairs if a.size != b.size]
    if not options:
        return None
    a, b = pick(rng, options)
    word = pick(rng, ["bigger", "smaller"])
    a_bigger = SIZE_RANK[a.size] > SIZE_RANK[b.size]
    answer = _yes_no(a_bigger if word == "bigger" else not a_bigger)
    phrase_a = pick(rng, descriptions[a.id]).phrase
    phrase_b = pick(rng, descriptions[b.id]).phrase
    return VqaItem(f"Is {phrase_a} {word} than {phrase_b}?", answer, "compare", "yes/no")


FAMILIES: dict[str, Callable[[Scene, np.random.Generator], VqaItem | None]] = {
    "color": ask_color,
    "shape": ask_shape,
    "count": ask_count,
    "exist": ask_exist,
    "spatial": ask_spatial,
    "nearest": ask_nearest,
    "compare": ask_compare,
}


def sample_questions(scene: Scene, rng: np.random.Generator, count: int) -> list[VqaItem]:
    """Up to ``count`` questions from distinct families, tried in random order (so each is equally common)."""
    items: list[VqaItem] = []
    for index in rng.permutation(len(FAMILIES)):
        item = list(FAMILIES.values())[int(index)](scene, rng)
        if item is not None:
            items.append(item)
        if len(items) == count:
            break
    return items


def pope_probes(scene: Scene, rng: np.random.Generator) -> dict[str, list[VqaItem]]:
    """Per POPE variant: one probe for an object present (the same in every variant) and one absent pair."""
    target = pick(rng, list(scene.objects))
    positive = VqaItem(exist_question(target.color, target.shape), "yes", "exist", "yes/no")
    probes = {}
    for variant in POPE_VARIANTS:
        color, shape = absent_combination(scene, rng, variant)
        negative = VqaItem(exist_question(color, shape), "no", "exist", "yes/no")
        probes[variant] = [positive, negative] if rng.random() < 0.5 else [negative, positive]
    return probes
