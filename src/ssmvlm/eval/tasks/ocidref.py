"""OCID-Ref val, ``val_expressions.json`` {id: {take_id, scene_path, bbox, sentence}}."""

from __future__ import annotations

import json
from pathlib import Path

from ssmvlm.eval.tasks.base import REFER_PROMPT, Example, Task, check_unique, relative_image, require
from ssmvlm.eval.tasks.boxes import box_target, check_box_px, make_box_scorer, summarize_boxes
from ssmvlm.utils.errors import DataError
from ssmvlm.utils.io import read_json

OCID_EXPRESSIONS = "val_expressions.json"
OCID_IMAGE_SIZE = (640, 480)  # every OCID image is 640 x 480 (vlm-evaluation relies on this too)
OCID_IOU = 0.25  # vlm-evaluation scores OCID-Ref at IoU >= 0.25, following the OCID-Ref paper
_CLUTTER_LEVELS = ((9, "minimum"), (16, "medium"), (20, "maximum"))  # take_id upper bounds (inclusive)


def clutter_level(take_id: int) -> str:
    for bound, name in _CLUTTER_LEVELS:
        if take_id <= bound:
            return name
    raise ValueError(f"take_id {take_id} outside 0..20")


def load_ocidref(root: Path, split: str) -> list[Example]:
    path = root / OCID_EXPRESSIONS
    expressions = read_json(path)
    if not isinstance(expressions, dict):
        raise DataError(path, f"expected an object keyed by example id, got {type(expressions).__name__}")
    examples = []
    for key, record in expressions.items():
        raw_box = require(record, "bbox", path, key)
        try:
            box = json.loads(raw_box) if isinstance(raw_box, str) else raw_box
            x1, y1, x2, y2 = (float(v) for v in box)
        except (ValueError, TypeError):
            raise DataError(
                path, f"bbox must be '[x1, y1, x2, y2]', got {raw_box!r}", record=key, field="bbox"
            ) from None
        x1, y1, x2, y2 = check_box_px((x1, y1, x2, y2), *OCID_IMAGE_SIZE, path, key)
        scene = require(record, "scene_path", path, key)
        take_id = require(record, "take_id", path, key)
        if not isinstance(take_id, int) or not 0 <= take_id <= 20:
            raise DataError(path, f"take_id must be an integer in 0..20, got {take_id!r}", record=key)
        examples.append(
            Example(
                id=str(key),
                image=root / "OCID-dataset" / relative_image(scene, path, key, "scene_path"),
                prompt=REFER_PROMPT.format(sentence=require(record, "sentence", path, key)),
                target={**box_target((x1, y1, x2, y2), *OCID_IMAGE_SIZE), "sentence": record["sentence"]},
                subset=clutter_level(take_id),
            )
        )
    return check_unique(examples, path)


TASKS = [
    Task(
        "ocid-ref",
        "loc",
        "ocid-ref",
        load_ocidref,
        make_box_scorer(OCID_IOU),
        f"OCID-Ref val ({OCID_EXPRESSIONS}, OCID-dataset/), Acc@IoU>=0.25",
        summarize=summarize_boxes,
    )
]
