"""The frame a VLM's box answers are written in (``model.box_frame``).

- ``raw``: ``[x1, y1, x2, y2]`` over the original image's width and height, as ShapeScenes, RefCOCO and
  vlm-evaluation upstream write and score them.
- ``model``: over the model's own input frame (the letterboxed square, say), LLaVA-1.5's padded-square frame for
  its Visual Genome boxes and the frame the paper's evaluation fork scores in. A box in the image is then a box in
  what the encoder sees: the answer needs no aspect ratio, which a letterboxed non-square image only shows as
  padding.

Scoring is unaffected by the choice of frame beyond the model's answers: every resize strategy is an axis-aligned
scale plus offset, under which IoU does not change (``ssmvlm.eval.tasks.boxes`` scores in both).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from ssmvlm.data.llava import BOX_PATTERN, LlavaRecord
from ssmvlm.utils.errors import DataError

BoxFrame = Literal["raw", "model"]
BOX_FRAMES: tuple[str, ...] = ("raw", "model")


def answers_in_model_frame(records: Sequence[LlavaRecord], transform: Any) -> list[LlavaRecord]:
    """``records`` with every box in an answer moved from the raw frame into ``transform``'s model frame.

    ``transform`` is the model's ``ssmvlm.data.transforms.ImageTransform``; each image's size is read from its
    file header. Questions are left as written; boxes are written back with two decimals, as ShapeScenes does.
    """
    sizes: dict[Path, tuple[int, int]] = {}
    moved = []
    for record in records:
        if record.image is None or not any(BOX_PATTERN.search(text) for role, text in record.turns if role == "gpt"):
            moved.append(record)
            continue
        if record.image not in sizes:
            try:
                with Image.open(record.image) as image:
                    sizes[record.image] = image.size
            except OSError as exc:
                raise DataError(record.image, f"cannot read the image's size ({exc})", record=record.id) from exc
        width, height = sizes[record.image]
        turns = [
            (role, boxes_to_model_frame(text, transform, width, height) if role == "gpt" else text)
            for role, text in record.turns
        ]
        moved.append(LlavaRecord(record.id, record.image, turns))
    return moved


def boxes_to_model_frame(text: str, transform: Any, width: int, height: int) -> str:
    """``text`` with each ``[x1, y1, x2, y2]`` over a ``width`` x ``height`` image moved into the model frame."""

    def move(match: re.Match[str]) -> str:
        x1, y1, x2, y2 = (float(v) for v in match.groups())
        box = transform.normalize_box_to_model((x1 * width, y1 * height, x2 * width, y2 * height), width, height)
        return _written(box)

    return BOX_PATTERN.sub(move, text)


def boxes_to_raw_frame(text: str, transform: Any, width: int, height: int) -> str:
    """The inverse of :func:`boxes_to_model_frame`: a model-frame answer as a harness scoring raw boxes reads it."""

    def move(match: re.Match[str]) -> str:
        x1, y1, x2, y2 = transform.denormalize_box_from_model(tuple(float(v) for v in match.groups()), width, height)
        return _written((x1 / width, y1 / height, x2 / width, y2 / height))

    return BOX_PATTERN.sub(move, text)


def _written(box: Sequence[float]) -> str:
    return "[" + ", ".join(f"{min(1.0, max(0.0, v)):.2f}" for v in box) + "]"
