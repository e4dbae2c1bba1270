"""VizWiz val (``Annotations/val.json``: image, question, answers[10], answerable, answer_type)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ssmvlm.eval.metrics import (
    binary_average_precision,
    binary_metrics,
    is_unanswerable,
    normalize_vizwiz_answer,
    vizwiz_score,
)
from ssmvlm.eval.tasks.base import (
    Example,
    ModelOutput,
    ScoreContext,
    Scored,
    Task,
    check_unique,
    first_layout,
    mean_score,
    most_common,
    relative_image,
    require,
    require_list,
)
from ssmvlm.utils.errors import DataError
from ssmvlm.utils.io import read_json

VIZWIZ_PROMPT = (
    "{question}\nWhen the provided information is insufficient, respond with 'Unanswerable'."
    "\nAnswer the question using a single word or phrase."
)
VIZWIZ_ANNOTATIONS = "Annotations/val.json"
# The official zips unpack to Annotations/val.json; a val.json given beside val/ is read as well.
VIZWIZ_LAYOUTS = (("official", (VIZWIZ_ANNOTATIONS,)), ("flat", ("val.json",)))


def load_vizwiz(root: Path, split: str) -> list[Example]:
    _, (path,) = first_layout(root, VIZWIZ_LAYOUTS)
    return read_vizwiz_annotations(path, root / "val")


def read_vizwiz_annotations(path: Path, images: Path) -> list[Example]:
    """Examples from a VizWiz annotation file (the official ``val.json``), images under ``images``."""
    records = read_json(path)
    if not isinstance(records, list):
        raise DataError(path, f"expected a list of questions, got {type(records).__name__}")
    examples = []
    for index, record in enumerate(records):
        image = str(require(record, "image", path, index))
        answers = require_list(require(record, "answers", path, image), path, image, "answers")
        texts = [str(require(a, "answer", path, image)) for a in answers]
        if not texts:
            raise DataError(path, "no reference answers", record=image, field="answers")
        answerable = bool(require(record, "answerable", path, image))
        examples.append(
            Example(
                id=Path(image).stem,
                image=images / relative_image(image, path, image),
                prompt=VIZWIZ_PROMPT.format(question=require(record, "question", path, image)),
                target={"answers": texts, "answerable": answerable, "canonical": most_common(texts)},
                subset="answerable" if answerable else "unanswerable",
                prior_key=str(record.get("answer_type", "all")),
            )
        )
    return check_unique(examples, path)


def score_vizwiz(example: Example, output: ModelOutput, context: ScoreContext) -> Scored:
    return Scored(
        normalize_vizwiz_answer(output.text),
        vizwiz_score(output.text, example.target["answers"]),
        {"predicted_unanswerable": is_unanswerable(output.text)},
    )


def summarize_vizwiz(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Answerable/unanswerable accuracy and unanswerability detection metrics (positive = unanswerable)."""
    predicted = ["yes" if r["extra"]["predicted_unanswerable"] else "no" for r in records]
    labels = ["no" if r["target"]["answerable"] else "yes" for r in records]
    detection = binary_metrics(predicted, labels)
    return {
        "answerable_accuracy": mean_score([r for r in records if r["target"]["answerable"]]),
        "unanswerable_accuracy": mean_score([r for r in records if not r["target"]["answerable"]]),
        "unanswerable_precision": detection["precision"],
        "unanswerable_recall": detection["recall"],
        "unanswerable_f1": detection["f1"],
        "unanswerable_ap": binary_average_precision(
            [p == "yes" for p in predicted], [y == "yes" for y in labels]
        ),
    }


TASKS = [
    Task(
        "vizwiz",
        "vqa",
        "vizwiz",
        load_vizwiz,
        score_vizwiz,
        f"VizWiz val ({VIZWIZ_ANNOTATIONS} or val.json, val/), with the Unanswerable instruction",
        summarize=summarize_vizwiz,
    )
]
