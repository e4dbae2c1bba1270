"""ShapeScenes scene graphs: the vocabulary, the difficulty knobs, sampling a layout, and spatial relations.

A scene is a canvas (a share of them non-square) holding 1–8 non-overlapping objects, each a shape with a
colour, a size class and a rotation. Boxes are tight pixel boxes ``[x1, y1, x2, y2]`` of the rendered object
in the continuous convention of :mod:`ssmvlm.data.transforms` (pixel ``i`` spans ``[i, i + 1)``, so ``x2`` is
one past the last column). Relations between objects are defined on those boxes here, once, so that questions
and referring expressions use the same exact semantics.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from itertools import combinations
from typing import Any, Literal

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross", "hexagon")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (235, 220, 40),
    "green": (40, 170, 60),
    "cyan": (40, 200, 220),
    "blue": (40, 80, 225),
    "purple": (145, 60, 205),
    "pink": (245, 125, 195),
}
# Object extent (the side of its bounding square before rotation) as a share of the image's short side.
SIZES: dict[str, float] = {"small": 0.16, "medium": 0.24, "large": 0.34}
SIZE_RANK = {name: rank for rank, name in enumerate(SIZES)}
# Canvas shapes (width:height); the square share is 1 - non_square_share, the rest split evenly.
ASPECTS: dict[str, tuple[int, int]] = {"1:1": (1, 1), "4:3": (4, 3), "16:9": (16, 9), "3:4": (3, 4)}
CLUTTER_LEVELS: dict[str, int] = {
    "none": 0,
    "low": 4,
    "medium": 9,
    "high": 16,
}  # distractor strokes per image
ATTRIBUTES = ("size", "color", "shape")  # in the order they are spoken: "the small red star"
ATTRIBUTE_SUBSETS = tuple(subset for k in (1, 2, 3) for subset in combinations(ATTRIBUTES, k))
MAX_ROTATION_DEGREES = 25  # beyond this a square starts to read as a diamond and a cross as an "x"

Clutter = Literal["none", "low", "medium", "high"]
# The knobs of a scene's questions and expressions. A scene draws them after its layout and pixels
# (generate.make_scene), so they never change an image: scenes used only as images (pretraining) ignore them.
LANGUAGE_KNOBS = ("vqa_per_image", "refs_per_image", "existence_turns")


@dataclass(frozen=True)
class SceneConfig:
    """The difficulty knobs of a ShapeScenes generation.

    ``noise`` is the amplitude (in 0–255 units) of the pixel grain over the whole image; ``clutter`` adds thin
    strokes and dots in object colours that carry no label; ``non_square_share`` of canvases are 4:3, 16:9 or
    3:4.
    """

    min_objects: int = 1
    max_objects: int = 8
    clutter: Clutter = "medium"
    noise: int = 10
    non_square_share: float = 0.4
    rotation: bool = True
    vqa_per_image: int = 3
    refs_per_image: int = 2
    # Also put each scene's existence probes (its POPE pair: an object present, the adversarial absent one) in
    # the LLaVA conversations as extra yes/no turns. Balanced, binding-sensitive yes/no examples are what a
    # from-scratch LLM lacks to answer "is there a …" from the image instead of from the question alone.
    existence_turns: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects <= 8:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects <= 8, got {self.min_objects}, {self.max_objects}"
            )
        if self.clutter not in CLUTTER_LEVELS:
            raise ValueError(f"clutter {self.clutter!r} not in {', '.join(CLUTTER_LEVELS)}")
        if not 0 <= self.noise <= 64:
            raise ValueError(f"noise must lie in [0, 64], got {self.noise}")
        if not 0.0 <= self.non_square_share <= 1.0:
            raise ValueError(f"non_square_share must lie in [0, 1], got {self.non_square_share}")
        if self.vqa_per_image < 1 or self.refs_per_image < 1:
            raise ValueError("vqa_per_image and refs_per_image must be at least 1")

    @classmethod
    def from_difficulty(cls, difficulty: str = "medium", **overrides: Any) -> SceneConfig:
        """A preset of :data:`DIFFICULTIES` with some knobs overridden (None values are ignored)."""
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"difficulty {difficulty!r} not in {', '.join(DIFFICULTIES)}")
        return cls(**{**DIFFICULTIES[difficulty], **{k: v for k, v in overrides.items() if v is not None}})


# Presets of the knobs. "medium" (the default) is meant to be learnable by a tiny VLM at 96² on a CPU in
# minutes while leaving room between encoders; "easy" is for smoke tests, "hard" for larger studies.
DIFFICULTIES: dict[str, dict[str, Any]] = {
    "easy": {"max_objects": 4, "clutter": "low", "noise": 6},
    "medium": {"max_objects": 8, "clutter": "medium", "noise": 10},
    "hard": {"max_objects": 8, "min_objects": 3, "clutter": "high", "noise": 18},
}


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene graph; ``box`` is its tight pixel box after rendering."""

    id: int
    shape: str
    color: str
    size: str
    rotation: int
    box: tuple[int, int, int, int]

    @property
    def center(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2, (y1 + y2) / 2

    @property
    def area(self) -> int:
        x1, y1, x2, y2 = self.box
        return (x2 - x1) * (y2 - y1)


@dataclass(frozen=True)
class Scene:
    """A scene graph: the canvas and its objects (ids are positions in ``objects``)."""

    image_id: int
    scene_id: str
    split: str
    width: int
    height: int
    objects: tuple[SceneObject, ...] = field(default_factory=tuple)

    @property
    def file_name(self) -> str:
        return f"images/{self.split}/{self.scene_id}.png"

    @property
    def mask_name(self) -> str:
        return f"masks/{self.split}/{self.scene_id}.png"

    @property
    def short_side(self) -> int:
        return min(self.width, self.height)

    @cached_property
    def combination_counts(self) -> dict[tuple[str, ...], Counter[tuple[str, ...]]]:
        """For every subset of attributes, how many objects share each combination of values."""
        return {
            subset: Counter(tuple(getattr(o, name) for name in subset) for o in self.objects)
            for subset in ATTRIBUTE_SUBSETS
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "file_name": self.file_name,
            "width": self.width,
            "height": self.height,
            "objects": [
                {
                    "id": o.id,
                    "shape": o.shape,
                    "color": o.color,
                    "size": o.size,
                    "rotation": o.rotation,
                    "box": list(o.box),
                }
                for o in self.objects
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], split: str) -> Scene:
        objects = tuple(SceneObject(**{**o, "box": tuple(o["box"])}) for o in data["objects"])
        scene_id = data["file_name"].rsplit("/", 1)[-1].removesuffix(".png")
        return cls(data["image_id"], scene_id, split, data["width"], data["height"], objects)


@dataclass(frozen=True)
class PlannedObject:
    """An object before rendering: its centre and extent in pixels (the tight box comes from the raster)."""

    shape: str
    color: str
    size: str
    rotation: int
    cx: float
    cy: float
    extent: float

    @property
    def reach(self) -> float:
        """Half the side of a square that holds the rotated shape (every unit shape lies in [-1, 1]²)."""
        return rotated_reach(self.extent, self.rotation)

    def bounds(self, gap: float = 0.0) -> tuple[float, float, float, float]:
        half = self.reach + gap
        return self.cx - half, self.cy - half, self.cx + half, self.cy + half


def rotated_reach(extent: float, rotation: int) -> float:
    angle = math.radians(abs(rotation))
    return extent / 2 * (math.cos(angle) + math.sin(angle))


def canvas_size(image_size: int, aspect: str) -> tuple[int, int]:
    """(width, height) with the longer side ``image_size``."""
    aspect_w, aspect_h = ASPECTS[aspect]
    if aspect_w >= aspect_h:
        return image_size, round(image_size * aspect_h / aspect_w)
    return round(image_size * aspect_w / aspect_h), image_size


def sample_aspect(rng: np.random.Generator, non_square_share: float) -> str:
    if rng.random() >= non_square_share:
        return "1:1"
    return ("4:3", "16:9", "3:4")[int(rng.integers(3))]


def sample_layout(
    rng: np.random.Generator, width: int, height: int, config: SceneConfig
) -> list[PlannedObject]:
    """Objects at random places, none overlapping (a gap of at least 2 px), anywhere on the canvas.

    Placement is uniform over the whole canvas, so on non-square canvases objects often sit in the margins
    that a centre crop removes. An object that finds no free spot after a few tries is tried one size smaller,
    then dropped, so crowded scenes hold fewer objects than asked and the scene graph stays exact.
    """
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    short = min(width, height)
    gap = max(2.0, 0.02 * short)
    placed: list[PlannedObject] = []
    size_names = list(SIZES)
    choices = rng.integers(
        0, (len(SHAPES), len(COLORS), len(SIZES), 2 * MAX_ROTATION_DEGREES + 1), size=(count, 4)
    )
    colors = list(COLORS)
    for shape_index, color_index, size_index, turn in choices.tolist():
        shape, color = SHAPES[shape_index], colors[color_index]
        rotation = turn - MAX_ROTATION_DEGREES
        if shape == "circle" or not config.rotation:
            rotation = 0
        for index in range(size_index, -1, -1):
            candidate = _place(rng, shape, color, size_names[index], rotation, width, height, placed, gap)
            if candidate is not None:
                placed.append(candidate)
                break
    return placed


def _place(
    rng: np.random.Generator,
    shape: str,
    color: str,
    size: str,
    rotation: int,
    width: int,
    height: int,
    placed: list[PlannedObject],
    gap: float,
    tries: int = 12,
) -> PlannedObject | None:
    extent = SIZES[size] * min(width, height)
    half = rotated_reach(extent, rotation)
    span_x, span_y = width - 2 * half - 2, height - 2 * half - 2
    boxes = [other.bounds() for other in placed]
    for u, v in rng.random((tries, 2)).tolist():
        cx, cy = round(half + 1 + u * span_x, 2), round(half + 1 + v * span_y, 2)
        low_x, low_y, high_x, high_y = cx - half - gap, cy - half - gap, cx + half + gap, cy + half + gap
        if not any(low_x < b[2] and b[0] < high_x and low_y < b[3] and b[1] < high_y for b in boxes):
            return PlannedObject(shape, color, size, rotation, cx, cy, extent)
    return None


# Spatial relations, on tight boxes. "Left of" means entirely left (no shared column), so the answer is exact
# and visible; an ordinal ("leftmost") or "closest" needs a clear margin over the runner-up, else it is not
# asked.


def left_of(a: SceneObject, b: SceneObject) -> bool:
    return a.box[2] <= b.box[0]


def right_of(a: SceneObject, b: SceneObject) -> bool:
    return a.box[0] >= b.box[2]


def above(a: SceneObject, b: SceneObject) -> bool:
    return a.box[3] <= b.box[1]


def below(a: SceneObject, b: SceneObject) -> bool:
    return a.box[1] >= b.box[3]


RELATIONS = {"to the left of": left_of, "to the right of": right_of, "above": above, "below": below}
ORDINAL_AXES = {"leftmost": (0, 1), "rightmost": (0, -1), "topmost": (1, 1), "bottommost": (1, -1)}


def ordinal_margin(scene: Scene) -> float:
    """How much further an object's centre must be than the runner-up's to be called the "leftmost" etc."""
    return max(2.0, 0.05 * scene.short_side)


def extreme_object(candidates: list[SceneObject], ordinal: str, margin: float) -> SceneObject | None:
    """The candidate clearly at the ``ordinal`` extreme (``leftmost`` …), or None when none is clear."""
    if len(candidates) < 2:
        return None
    axis, sign = ORDINAL_AXES[ordinal]
    ranked = sorted(candidates, key=lambda o: sign * o.center[axis])
    first, second = ranked[0], ranked[1]
    return first if sign * (second.center[axis] - first.center[axis]) >= margin else None


def distance(a: SceneObject, b: SceneObject) -> float:
    (ax, ay), (bx, by) = a.center, b.center
    return math.hypot(ax - bx, ay - by)


CLOSEST_RATIO = 1.3  # the closest object must be this much closer than the next one to count as "closest"


def closest_object(anchor: SceneObject, candidates: list[SceneObject]) -> SceneObject | None:
    """The candidate (other than ``anchor``) clearly closest to ``anchor``, or None when it is not clear."""
    others = sorted((o for o in candidates if o.id != anchor.id), key=lambda o: distance(o, anchor))
    if not others:
        return None
    if len(others) > 1 and distance(others[1], anchor) < CLOSEST_RATIO * distance(others[0], anchor):
        return None
    return others[0]
