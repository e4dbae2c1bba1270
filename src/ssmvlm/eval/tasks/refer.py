"""Referring expressions in the REFER layout: RefCOCO / RefCOCO+ / RefCOCOg val and ShapeScenes.

``refs`` come as JSON (the REFER ref list, converted once from ``refs(unc).p``) or as jxu124's parquet release
(every validation shard below the folder); the pickle itself is never opened. Boxes come from the COCO instances
file (``bbox`` = x, y, w, h in pixels). Every sentence of a ref is one example.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ssmvlm.eval.tasks.base import (
    REFER_PROMPT,
    Example,
    Task,
    check_unique,
    relative_image,
    require,
    require_list,
)
from ssmvlm.eval.tasks.boxes import box_target, check_box_px, make_box_scorer, summarize_boxes
from ssmvlm.eval.tasks.hf_parquet import find_shards, read_rows, report_rows
from ssmvlm.utils.errors import DataError
from ssmvlm.utils.io import read_json

REFCOCO_IOU = 0.5
_PARQUET_COLUMNS = ("ref_id", "split", "sentences", "raw_anns", "raw_image_info")


def _sentence_text(sentence: Any, file: Path, where: str) -> str:
    if isinstance(sentence, str):
        return sentence
    return str(require(sentence, "sent", file, where))


def refs_to_examples(
    refs: list[dict[str, Any]],
    refs_file: Path,
    boxes: dict[int, list[float]],
    images: dict[int, dict[str, Any]],
    image_for: Callable[[dict[str, Any]], Path],
    *,
    split: str | None,
    subset: str,
) -> list[Example]:
    """One example per sentence of every ref in ``split`` (all refs when ``split`` is None)."""
    examples = []
    for index, ref in enumerate(refs):
        ref_id = require(ref, "ref_id", refs_file, index)
        if split is not None and str(ref.get("split", split)) != split:
            continue
        ann_id = require(ref, "ann_id", refs_file, ref_id)
        image_id = require(ref, "image_id", refs_file, ref_id)
        if ann_id not in boxes:
            raise DataError(refs_file, f"ann_id {ann_id} not in the instances annotations", record=ref_id)
        if image_id not in images:
            raise DataError(refs_file, f"image_id {image_id} not in the instances images", record=ref_id)
        image = images[image_id]
        relative_image(image["file_name"], refs_file, ref_id, "file_name")  # image_for joins it below a root
        x, y, w, h = boxes[ann_id]
        target = box_target((x, y, x + w, y + h), image["width"], image["height"])
        sentences = require_list(require(ref, "sentences", refs_file, ref_id), refs_file, ref_id, "sentences")
        for number, sentence in enumerate(sentences):
            sent_id = sentence.get("sent_id", number) if isinstance(sentence, dict) else number
            text = _sentence_text(sentence, refs_file, f"{ref_id} sentence {number}")
            examples.append(
                Example(
                    id=f"{ref_id}/{sent_id}",
                    image=image_for(image),
                    prompt=REFER_PROMPT.format(sentence=text),
                    target={**target, "sentence": text},
                    subset=subset,
                    prior_key=str(ref.get("category_id", "all")),
                )
            )
    return check_unique(examples, refs_file)


def read_instances(path: Path) -> tuple[dict[int, list[float]], dict[int, dict[str, Any]]]:
    """(ann_id → bbox xywh, image_id → {file_name, width, height}) from a COCO instances file."""
    data = read_json(path)
    images = {}
    for index, img in enumerate(require_list(require(data, "images", path, "root"), path, "root", "images")):
        image_id = require(img, "id", path, index)
        images[image_id] = {
            key: require(img, key, path, image_id) for key in ("file_name", "width", "height")
        }
    boxes = {}
    for index, ann in enumerate(
        require_list(require(data, "annotations", path, "root"), path, "root", "annotations")
    ):
        bbox = require(ann, "bbox", path, index)
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise DataError(
                path, "bbox must be 4 numbers [x, y, w, h]", record=ann.get("id", index), field="bbox"
            )
        ann_id = require(ann, "id", path, index)
        _check_xywh(bbox, images.get(ann.get("image_id")), path, ann_id)
        boxes[ann_id] = bbox
    return boxes, images


def _check_xywh(bbox: list[float], image: dict[str, Any] | None, path: Path, where: Any) -> None:
    """A COCO ``[x, y, w, h]`` box checked against its image (when the image is listed): see check_box_px."""
    x, y, w, h = (float(v) for v in bbox)
    width, height = (image["width"], image["height"]) if image else (math.inf, math.inf)
    check_box_px((x, y, x + w, y + h), width, height, path, where)


def _read_refs_parquet(
    shards: list[Path],
) -> tuple[list[dict[str, Any]], dict[int, list[float]], dict[int, dict]]:
    """The parquet release (jxu124/refcoco*): one row per ref with JSON-string columns for the annotation and
    the image; every shard is read."""
    refs, boxes, images = [], {}, {}
    rows = read_rows(shards, "jxu124/refcoco", _PARQUET_COLUMNS, image=False)
    for parquet_row in rows:
        path, row = parquet_row.file, parquet_row.cells
        ann = json.loads(row["raw_anns"]) if isinstance(row["raw_anns"], str) else row["raw_anns"]
        info = (
            json.loads(row["raw_image_info"])
            if isinstance(row["raw_image_info"], str)
            else row["raw_image_info"]
        )
        ann_id, image_id = require(ann, "id", path, row["ref_id"]), require(info, "id", path, row["ref_id"])
        boxes[ann_id] = require(ann, "bbox", path, row["ref_id"])
        images[image_id] = {
            k: require(info, k, path, row["ref_id"]) for k in ("file_name", "width", "height")
        }
        if not (isinstance(boxes[ann_id], list) and len(boxes[ann_id]) == 4):
            raise DataError(path, "bbox must be 4 numbers [x, y, w, h]", record=row["ref_id"], field="raw_anns")
        _check_xywh(boxes[ann_id], images[image_id], path, row["ref_id"])
        refs.append(
            {
                "ref_id": row["ref_id"],
                "ann_id": ann_id,
                "image_id": image_id,
                "split": row["split"],
                "sentences": row["sentences"],
                "category_id": ann.get("category_id", "all"),
            }
        )
    report_rows("jxu124/refcoco", len(rows), shards, shards[0].parent)
    return refs, boxes, images


def _load_refcoco(variant: str, split_by: str) -> Callable[[Path, str], list[Example]]:
    def load(root: Path, split: str) -> list[Example]:
        folder = root / variant if (root / variant).is_dir() else root
        image_for = lambda image: root / "train2014" / image["file_name"]
        for name in (f"refs({split_by}).json", "refs.json"):
            if (folder / name).is_file():
                refs_file = folder / name
                refs = require_list(read_json(refs_file), refs_file, "root", "refs")
                boxes, images = read_instances(folder / "instances.json")
                break
        else:
            parquet = find_shards(folder, ("validation", "val"))  # every shard, at any depth
            if parquet:
                refs_file = parquet[0] if len(parquet) == 1 else folder
                refs, boxes, images = _read_refs_parquet(parquet)
            elif (folder / f"refs({split_by}).p").is_file():
                raise DataError(
                    folder / f"refs({split_by}).p",
                    "pickled refs are never opened; convert once where you trust the file: python -c "
                    f"\"import pickle,json; json.dump(pickle.load(open('refs({split_by}).p','rb')),"
                    f"open('refs({split_by}).json','w'))\"",
                )
            else:
                raise DataError(folder, f"no refs({split_by}).json, refs.json or validation parquet shards found")
        return refs_to_examples(refs, refs_file, boxes, images, image_for, split="val", subset=variant)

    return load


def _load_shapes_refexp(root: Path, split: str) -> list[Example]:
    folder = root / split
    refs_file = folder / "refs.json"
    refs = require_list(read_json(refs_file), refs_file, "root", "refs")
    boxes, images = read_instances(folder / "instances.json")
    return refs_to_examples(
        refs, refs_file, boxes, images, lambda image: root / image["file_name"], split=split, subset="shapes"
    )


_score = make_box_scorer(REFCOCO_IOU)
TASKS = [
    Task(
        "refcoco",
        "loc",
        "refcoco",
        _load_refcoco("refcoco", "unc"),
        _score,
        "RefCOCO val (unc): refcoco/refs(unc).json|parquet + instances.json, train2014/",
        summarize=summarize_boxes,
    ),
    Task(
        "refcoco+",
        "loc",
        "refcoco",
        _load_refcoco("refcoco+", "unc"),
        _score,
        "RefCOCO+ val (unc): refcoco+/refs(unc).json|parquet + instances.json, train2014/",
        summarize=summarize_boxes,
    ),
    Task(
        "refcocog",
        "loc",
        "refcoco",
        _load_refcoco("refcocog", "umd"),
        _score,
        "RefCOCOg val (umd): refcocog/refs(umd).json|parquet + instances.json, train2014/",
        summarize=summarize_boxes,
    ),
    Task(
        "shapes-refexp",
        "loc",
        "shapes",
        _load_shapes_refexp,
        _score,
        "ShapeScenes referring expressions",
        summarize=summarize_boxes,
        split_aware=True,
    ),
]
