"""Every ShapeScenes output format, built from the per-scene records, in the layouts the real datasets use.

Ids are derived from the scene's ``image_id`` (never from a running counter), so they do not depend on the
order or the number of workers: question ``image_id * 100 + k``, object annotation ``image_id * 100 +
object_id + 1``, referring expression and POPE probe ``image_id * 10 + k``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ssmvlm.data.llava import GROUNDING_PROMPT, IMAGE_PLACEHOLDER, VQA_PROMPT
from ssmvlm.data.shapes.questions import POPE_VARIANTS
from ssmvlm.data.shapes.scene import COLORS, SHAPES, SIZE_RANK
from ssmvlm.utils.io import atomic_write_text

SceneRecord = dict[str, Any]  # {"scene": scenes.json entry, "vqa": [...], "refs": [...], "pope": {...}, ...}

COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
CLASSIFICATION_CLASSES: tuple[str, ...] = tuple(f"{color} {shape}" for shape in SHAPES for color in COLORS)
CATEGORIES = [{"id": index, "name": shape, "supercategory": "shape"} for index, shape in enumerate(SHAPES, 1)]
DATA_TYPE = "shapescenes"


def box_text(box: list[int] | tuple[int, ...], width: int, height: int) -> str:
    """A pixel box as the LLaVA/RefCOCO answer: ``[x1, y1, x2, y2]`` normalized to the image, 2 decimals."""
    x1, y1, x2, y2 = box
    return "[" + ", ".join(f"{v:.2f}" for v in (x1 / width, y1 / height, x2 / width, y2 / height)) + "]"


def annotation_id(image_id: int, object_id: int) -> int:
    return image_id * 100 + object_id + 1


def _capitalized(answer: str) -> str:
    # LLaVA answers start with a capital ("Yes", "Red"); POPE scores the first token over "Yes"/"No".
    return answer[:1].upper() + answer[1:]


def llava_records(records: list[SceneRecord]) -> list[dict[str, Any]]:
    """One multi-turn conversation per image: its VQA questions (and existence turns, when generated), then its
    grounding requests."""
    out = []
    for record in records:
        scene = record["scene"]
        questions = [*record["vqa"], *record.get("existence_turns", [])]
        prompts = [(VQA_PROMPT.format(question=q["question"]), _capitalized(q["answer"])) for q in questions]
        targets = {o["id"]: o["box"] for o in scene["objects"]}
        prompts += [
            (
                GROUNDING_PROMPT.format(sentence=ref["sentence"]),
                box_text(targets[ref["target"]], scene["width"], scene["height"]),
            )
            for ref in record["refs"]
        ]
        conversations = []
        for index, (question, answer) in enumerate(prompts):
            value = f"{IMAGE_PLACEHOLDER}\n{question}" if index == 0 else question
            conversations += [{"from": "human", "value": value}, {"from": "gpt", "value": answer}]
        image_name = Path(scene["file_name"]).stem
        out.append(
            {
                "id": f"{record['split']}-{image_name}",
                "image": scene["file_name"],
                "conversations": conversations,
            }
        )
    return out


def vqa_questions(records: list[SceneRecord], split: str) -> dict[str, Any]:
    questions = [
        {
            "image_id": r["scene"]["image_id"],
            "question": q["question"],
            "question_id": r["scene"]["image_id"] * 100 + k,
        }
        for r in records
        for k, q in enumerate(r["vqa"])
    ]
    return {
        "info": {"description": "ShapeScenes VQA questions"},
        "task_type": "Open-Ended",
        "data_type": DATA_TYPE,
        "data_subtype": split,
        "license": {},
        "questions": questions,
    }


def vqa_annotations(records: list[SceneRecord], split: str) -> dict[str, Any]:
    annotations = [
        {
            "question_id": r["scene"]["image_id"] * 100 + k,
            "image_id": r["scene"]["image_id"],
            "question_type": q["question_type"],
            "answer_type": q["answer_type"],
            "multiple_choice_answer": q["answer"],
            # VQAv2 has ten human answers per question; here all ten are the exact answer.
            "answers": [
                {"answer": q["answer"], "answer_confidence": "yes", "answer_id": i} for i in range(1, 11)
            ],
        }
        for r in records
        for k, q in enumerate(r["vqa"])
    ]
    return {
        "info": {"description": "ShapeScenes VQA annotations"},
        "data_type": DATA_TYPE,
        "data_subtype": split,
        "license": {},
        "annotations": annotations,
    }


def pope_lines(records: list[SceneRecord], variant: str) -> list[dict[str, Any]]:
    return [
        {
            "question_id": r["scene"]["image_id"] * 10 + k,
            "image": r["scene"]["file_name"],
            "text": probe["question"],
            "label": probe["answer"],
        }
        for r in records
        for k, probe in enumerate(r["pope"][variant])
    ]


def refer_refs(records: list[SceneRecord], split: str) -> list[dict[str, Any]]:
    refs = []
    for r in records:
        scene = r["scene"]
        shapes = {o["id"]: o["shape"] for o in scene["objects"]}
        for k, ref in enumerate(r["refs"]):
            ref_id = scene["image_id"] * 10 + k
            sentence = ref["sentence"]
            refs.append(
                {
                    "ref_id": ref_id,
                    "ann_id": annotation_id(scene["image_id"], ref["target"]),
                    "image_id": scene["image_id"],
                    "file_name": scene["file_name"],
                    "split": split,
                    "category_id": SHAPES.index(shapes[ref["target"]]) + 1,
                    "sent_ids": [ref_id],
                    "sentences": [
                        {"sent_id": ref_id, "sent": sentence, "raw": sentence, "tokens": sentence.split()}
                    ],
                    "style": ref["style"],
                }
            )
    return refs


def coco_instances(records: list[SceneRecord], split: str) -> dict[str, Any]:
    images, annotations = [], []
    for r in records:
        scene = r["scene"]
        images.append(
            {
                "id": scene["image_id"],
                "file_name": scene["file_name"],
                "width": scene["width"],
                "height": scene["height"],
            }
        )
        for obj, area, outline in zip(scene["objects"], r["areas"], r["polygons"], strict=True):
            x1, y1, x2, y2 = obj["box"]
            annotations.append(
                {
                    "id": annotation_id(scene["image_id"], obj["id"]),
                    "image_id": scene["image_id"],
                    "category_id": SHAPES.index(obj["shape"]) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": area,
                    "iscrowd": 0,
                    "segmentation": [[coordinate for point in outline for coordinate in point]],
                    "color": obj["color"],
                    "size": obj["size"],
                }
            )
    return {
        "info": {"description": f"ShapeScenes {split} instances"},
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }


def salient_object(scene: dict[str, Any]) -> dict[str, Any] | None:
    """The one object of a strictly larger size class than all others, or None when the largest size is shared.

    Like an ImageNet photo, a classification sample must show one object that is clearly *the* subject: with
    two objects of the largest size class, which one the label names would hinge on a few pixels of area.
    """
    ranked = sorted(scene["objects"], key=lambda obj: -SIZE_RANK[obj["size"]])
    if len(ranked) > 1 and ranked[0]["size"] == ranked[1]["size"]:
        return None
    return ranked[0]


def classification(records: list[SceneRecord]) -> dict[str, Any]:
    """Colour x shape of the salient object, for the scenes that have one, with auxiliary targets.

    Each sample also names the salient object's colour and shape (``attributes``: targets a factorized head
    learns from every sample, where each of the 56 classes gets a 56th of them) and the classes of every
    object in the scene (``present``: a multi-label target, so that the features keep the objects a salient-
    object label would let the encoder ignore, which grounding and existence questions ask about).
    """
    samples = []
    for r in records:
        target = salient_object(r["scene"])
        if target is not None:
            label = CLASSIFICATION_CLASSES.index(f"{target['color']} {target['shape']}")
            objects = r["scene"]["objects"]
            present = sorted({CLASSIFICATION_CLASSES.index(f"{o['color']} {o['shape']}") for o in objects})
            samples.append(
                {
                    "image": r["scene"]["file_name"],
                    "label": label,
                    "color": COLOR_NAMES.index(target["color"]),
                    "shape": SHAPES.index(target["shape"]),
                    "present": present,
                }
            )
    return {
        "classes": list(CLASSIFICATION_CLASSES),
        "attributes": {"color": list(COLOR_NAMES), "shape": list(SHAPES)},
        "samples": samples,
    }


def _compact(obj: Any) -> str:
    # Compact JSON: the large files are read by programs; the bytes must not depend on anything but the data.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n"


SPLIT_FILES: dict[str, Callable[[list[SceneRecord], str], str]] = {
    "scenes.json": lambda records, split: _compact([r["scene"] for r in records]),
    "llava.json": lambda records, split: _compact(llava_records(records)),
    "vqa_questions.json": lambda records, split: _compact(vqa_questions(records, split)),
    "vqa_annotations.json": lambda records, split: _compact(vqa_annotations(records, split)),
    **{
        f"pope_{variant}.jsonl": (
            lambda records, split, v=variant: "".join(
                json.dumps(line, separators=(",", ":")) + "\n" for line in pope_lines(records, v)
            )
        )
        for variant in POPE_VARIANTS
    },
    "refs.json": lambda records, split: _compact(refer_refs(records, split)),
    "instances.json": lambda records, split: _compact(coco_instances(records, split)),
    "classification.json": lambda records, split: _compact(classification(records)),
}


def write_split_files(out_dir: Path, split: str, records: list[SceneRecord]) -> list[Path]:
    written = []
    for name, build in SPLIT_FILES.items():
        path = out_dir / split / name
        atomic_write_text(path, build(records, split))
        written.append(path)
    return written
