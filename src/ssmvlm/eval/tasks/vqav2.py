"""The VQAv2 layout (questions JSON + annotations JSON): VQAv2 val and ShapeScenes VQA."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ssmvlm.eval.metrics import normalize_vqa_answer, vqa_score
from ssmvlm.eval.tasks.base import (
    VQA_PROMPT,
    Example,
    ModelOutput,
    ScoreContext,
    Scored,
    Task,
    check_unique,
    first_layout,
    require,
    require_list,
)
from ssmvlm.utils.errors import DataError
from ssmvlm.utils.io import read_json

VQAV2_QUESTIONS = "v2_OpenEnded_mscoco_val2014_questions.json"
VQAV2_ANNOTATIONS = "v2_mscoco_val2014_annotations.json"


def load_vqav2_layout(
    questions_file: Path,
    annotations_file: Path,
    image_for: Callable[[int], Path],
    *,
    subset_field: str | None,
) -> list[Example]:
    """Examples from the official VQAv2 pair of files; ``image_for`` maps an image_id to its file."""
    questions = require_list(
        require(read_json(questions_file), "questions", questions_file, "root"),
        questions_file,
        "root",
        "questions",
    )
    annotations = require_list(
        require(read_json(annotations_file), "annotations", annotations_file, "root"),
        annotations_file,
        "root",
        "annotations",
    )
    by_qid: dict[int, dict] = {}
    for index, ann in enumerate(annotations):
        qid = require(ann, "question_id", annotations_file, index)
        if qid in by_qid:
            raise DataError(annotations_file, "duplicate question_id", record=qid)
        by_qid[qid] = ann
    examples = []
    for index, question in enumerate(questions):
        qid = require(question, "question_id", questions_file, index)
        text = require(question, "question", questions_file, qid)
        image_id = require(question, "image_id", questions_file, qid)
        if qid not in by_qid:
            raise DataError(annotations_file, "no annotation for this question", record=qid)
        ann = by_qid[qid]
        answers = require_list(
            require(ann, "answers", annotations_file, qid), annotations_file, qid, "answers"
        )
        if not answers:
            raise DataError(annotations_file, "no reference answers", record=qid, field="answers")
        answer_texts = [str(require(a, "answer", annotations_file, qid)) for a in answers]
        question_type = str(ann.get("question_type", "all"))
        examples.append(
            Example(
                id=str(qid),
                image=image_for(image_id),
                prompt=VQA_PROMPT.format(question=text),
                target={
                    "answers": answer_texts,
                    "canonical": str(ann.get("multiple_choice_answer", answer_texts[0])),
                },
                subset=str(require(ann, subset_field, annotations_file, qid)) if subset_field else None,
                prior_key=question_type,
            )
        )
    return check_unique(examples, questions_file)


def score_vqav2(example: Example, output: ModelOutput, context: ScoreContext) -> Scored:
    return Scored(normalize_vqa_answer(output.text), vqa_score(output.text, example.target["answers"]))


def coco_val2014_image(root: Path) -> Callable[[int], Path]:
    return lambda image_id: root / "val2014" / f"COCO_val2014_{int(image_id):012d}.jpg"


def instances_image_rule(instances_file: Path, dataset_root: Path) -> Callable[[int], Path]:
    """image_id → file via a COCO instances file's ``images[].file_name`` (relative to the dataset root)."""
    images = require_list(
        require(read_json(instances_file), "images", instances_file, "root"), instances_file, "root", "images"
    )
    names = {
        require(img, "id", instances_file, i): require(img, "file_name", instances_file, i)
        for i, img in enumerate(images)
    }

    def image_for(image_id: int) -> Path:
        if image_id not in names:
            raise DataError(instances_file, "image_id not listed in images[]", record=image_id)
        return dataset_root / names[image_id]

    return image_for


# (layout name, questions file, annotations file, folder holding val2014/): the flat layout of a plain
# download, and the official VQA API repository's (github.com/GT-Vision-Lab/VQA).
VQAV2_LAYOUTS = (
    ("flat", VQAV2_QUESTIONS, VQAV2_ANNOTATIONS, "."),
    ("VQA API", f"Questions/{VQAV2_QUESTIONS}", f"Annotations/{VQAV2_ANNOTATIONS}", "Images/mscoco"),
)


def _load_vqav2(root: Path, split: str) -> list[Example]:
    name, (questions, annotations) = first_layout(root, [(n, (q, a)) for n, q, a, _ in VQAV2_LAYOUTS])
    images = root / next(folder for n, _, _, folder in VQAV2_LAYOUTS if n == name)
    return load_vqav2_layout(questions, annotations, coco_val2014_image(images), subset_field="answer_type")


def _load_shapes_vqa(root: Path, split: str) -> list[Example]:
    folder = root / split
    return load_vqav2_layout(
        folder / "vqa_questions.json",
        folder / "vqa_annotations.json",
        instances_image_rule(folder / "instances.json", root),
        subset_field="question_type",
    )


TASKS = [
    Task(
        "vqav2",
        "vqa",
        "vqav2",
        _load_vqav2,
        score_vqav2,
        f"VQAv2 val ({VQAV2_QUESTIONS}, {VQAV2_ANNOTATIONS}, val2014/; or the VQA API layout Questions/, "
        "Annotations/, Images/mscoco/val2014/)",
    ),
    Task(
        "shapes-vqa",
        "vqa",
        "shapes",
        _load_shapes_vqa,
        score_vqav2,
        "ShapeScenes VQA, all families (per-family breakdown)",
        split_aware=True,
    ),
]
