"""Scoring a predicted box against a pixel ground truth under both frame conventions.

"raw": coordinates normalized by the raw image width/height, ground truth rounded to 2 decimals
(vlm-evaluation upstream). "model": coordinates of the model's own (e.g. letterboxed) input frame, from the
model's ``image_transform`` (the raykuo18 fork). Both are computed for every example; the context's
``box_convention`` picks the one behind the per-example score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ssmvlm.eval.metrics import accuracy_at_iou, box_iou, parse_box
from ssmvlm.eval.tasks.base import BOX_CONVENTIONS, Example, ModelOutput, ScoreContext, Scored, Scorer
from ssmvlm.utils.errors import DataError

# Annotation tools round box edges, so a ground-truth edge may sit a fraction of a pixel past the image border.
EDGE_TOLERANCE_PX = 1.0


def check_box_px(
    box_px: Sequence[float], width: float, height: float, file: str | Path, where: str | int, key: str = "bbox"
) -> tuple[float, float, float, float]:
    """A ground-truth (x1, y1, x2, y2) pixel box, checked: finite, x1 ≤ x2 and y1 ≤ y2, inside the image.

    A box that fails would be scored against silently (NaN gives IoU 0, an inverted box no area), so it is a
    one-line error naming the file, the record and the field.
    """
    x1, y1, x2, y2 = (float(v) for v in box_px)
    shown = "[" + ", ".join(f"{v:g}" for v in (x1, y1, x2, y2)) + "] (x1, y1, x2, y2)"
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        problem = "is not finite"
    elif x2 < x1 or y2 < y1:
        problem = "has x2 < x1 or y2 < y1"
    elif min(x1, y1) < -EDGE_TOLERANCE_PX or x2 > width + EDGE_TOLERANCE_PX or y2 > height + EDGE_TOLERANCE_PX:
        problem = f"lies outside the {width:g}x{height:g} image"
    else:
        return x1, y1, x2, y2
    raise DataError(file, f"box {shown} {problem}", record=where, field=key)


def box_target(box_px: Sequence[float], width: int, height: int) -> dict[str, Any]:
    x1, y1, x2, y2 = (float(v) for v in box_px)
    raw = [round(x1 / width, 2), round(y1 / height, 2), round(x2 / width, 2), round(y2 / height, 2)]
    return {"box_px": [x1, y1, x2, y2], "image_size": [int(width), int(height)], "canonical": raw}


def ground_truth(target: dict[str, Any], convention: str, image_transform: Any) -> tuple[float, ...] | None:
    """The ground-truth box in [0, 1] coordinates of the given convention (None: no model frame known)."""
    if convention == "raw":
        return tuple(target["canonical"])
    if image_transform is None:
        return None
    width, height = target["image_size"]
    return tuple(image_transform.normalize_box_to_model(tuple(target["box_px"]), width, height))


def make_box_scorer(threshold: float) -> Scorer:
    def score(example: Example, output: ModelOutput, context: ScoreContext) -> Scored:
        width, height = example.target["image_size"]
        parsed = {
            "strict": parse_box(output.text),
            "lenient": parse_box(output.text, lenient=True, image_size=(width, height)),
        }
        ious: dict[str, float | None] = {}
        for convention in BOX_CONVENTIONS:
            gt = ground_truth(example.target, convention, context.image_transform)
            for mode, box in parsed.items():
                key = convention if mode == "strict" else f"{convention}_lenient"
                ious[key] = box_iou(box, gt) if box is not None and gt is not None else None
        primary = ious[context.box_convention]
        return Scored(
            list(parsed["strict"]) if parsed["strict"] else None,
            float(primary is not None and primary >= threshold),
            {"iou": ious, "threshold": threshold, "has_model_frame": context.image_transform is not None},
        )

    return score


def summarize_boxes(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Acc@IoU under both conventions, strict and lenient parsing, and the share of outputs without a box."""
    threshold = records[0]["extra"]["threshold"] if records else 0.5
    out: dict[str, Any] = {"iou_threshold": threshold}
    for key in records[0]["extra"]["iou"] if records else ():
        if key.startswith("model") and not all(r["extra"]["has_model_frame"] for r in records):
            continue
        out[f"acc_{key}"] = accuracy_at_iou((r["extra"]["iou"][key] for r in records), threshold)
    out["invalid_strict"] = 100.0 * sum(r["answer"] is None for r in records) / max(1, len(records))
    return out
