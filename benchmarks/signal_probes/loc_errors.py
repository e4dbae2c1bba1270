"""Where a ShapeScenes-RefExp miss comes from (issue 21): the wrong object, or the right one boxed imprecisely.

Each referring-expression prediction of a study's evaluation is sorted, in the frame that evaluation scored (its
``box_convention``: boxes over the raw image's width and height, ShapeScenes' answer format, or over the model's
letterboxed frame for a model trained with ``model.box_frame=model``), into:
`right` (IoU >= 0.5 with the target: a hit), `other object` (IoU >= 0.5 with another object of the scene),
`near` (IoU 0.2-0.5 with the target), `elsewhere` (none of these) and `unparsed` (no box in the answer); also the
median error of each box coordinate; and the hit rate on square and on non-square images apart (the model sees
a letterboxed image, so a raw-frame answer on a non-square one has to read the aspect too).

    python benchmarks/signal_probes/loc_errors.py --data BENCHMARK_DIR STUDY_DIR [STUDY_DIR ...]

BENCHMARK_DIR is the study's benchmark dataset (a dataset cell's data/, or the same settings generated again:
generation is deterministic); each STUDY_DIR's runs/eval/*/predictions.jsonl is read.
"""

from __future__ import annotations

import argparse
import collections
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssmvlm.data.transforms import build_image_transform
from ssmvlm.eval.metrics import box_iou
from ssmvlm.utils.io import read_json

KINDS = ("right", "other object", "near", "elsewhere", "unparsed")


def classify(predicted: Sequence[float] | None, target: Sequence[float], others: list[Sequence[float]]) -> str:
    """One of :data:`KINDS` for a predicted box against the target's and the scene's other objects' boxes."""
    if predicted is None:
        return "unparsed"
    iou = box_iou(predicted, target)
    if iou >= 0.5:
        return "right"
    if any(box_iou(predicted, box) >= 0.5 for box in others):
        return "other object"
    return "near" if iou >= 0.2 else "elsewhere"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("studies", type=Path, nargs="+")
    args = parser.parse_args()
    test = args.data / "test"
    refs = {ref["ref_id"]: ref for ref in read_json(test / "refs.json")}
    scenes = {scene["image_id"]: scene for scene in read_json(test / "scenes.json")}
    targets = {ann["id"]: ann for ann in read_json(test / "instances.json")["annotations"]}
    header = ["eval cell", "backbone", "seed", "frame", "n", *KINDS, "median abs. error x1, y1, x2, y2"]
    header.append("right: square / not")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for study in args.studies:
        for predictions in sorted(study.glob("runs/eval/*/predictions.jsonl")):
            cell = read_json(predictions.parent / "cell.json")
            labels = cell.get("labels", {})
            scored = read_json(predictions.parent / "run.json")["config"].get("box_convention", "raw")
            transform = build_image_transform(labels["resize_strategy"], labels["resolution"])
            counts, errors, by_shape = collections.Counter(), [], collections.defaultdict(list)
            for line in predictions.read_text().splitlines():
                record = json.loads(line)
                if record["task"] != "shapes-refexp":
                    continue
                ref = refs[int(record["id"].split("/")[0])]
                scene = scenes[ref["image_id"]]

                def frame(box_px, scene=scene, scored=scored, transform=transform):
                    if scored == "model":
                        return transform.normalize_box_to_model(box_px, scene["width"], scene["height"])
                    sides = [scene["width"], scene["height"]] * 2  # the ground truth rounded as the scorer does
                    return tuple(round(v / side, 2) for v, side in zip(box_px, sides, strict=True))

                x, y, w, h = targets[ref["ann_id"]]["bbox"]
                target_px = [x, y, x + w, y + h]
                target = frame(target_px)
                others = [frame(o["box"]) for o in scene["objects"] if list(o["box"]) != target_px]
                kind = classify(record["answer"], target, others)
                counts[kind] += 1
                by_shape[scene["width"] == scene["height"]].append(kind == "right")
                if record["answer"] is not None:
                    errors.append(np.abs(np.array(record["answer"]) - np.array(target)))
            n = sum(counts.values())
            shares = " | ".join(f"{100 * counts[k] / n:.1f}" for k in KINDS)
            median = ", ".join(f"{v:.3f}" for v in np.median(errors, axis=0)) if errors else "–"
            name = f"{labels.get('backbone', '?')} | {labels.get('seed', '?')}"
            square = " / ".join(f"{100 * np.mean(by_shape[k]):.1f} ({len(by_shape[k])})" for k in (True, False))
            print(f"| {cell['id']} | {name} | {scored} | {n} | {shares} | {median} | {square} |")


if __name__ == "__main__":
    main()
