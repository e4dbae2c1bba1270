"""POPE (adversarial / popular / random): from generated text and from first-token Yes/No probabilities."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ssmvlm.eval.metrics import binary_metrics, yes_no_from_text
from ssmvlm.eval.tasks.base import (
    VQA_PROMPT,
    Example,
    ModelOutput,
    ScoreContext,
    Scored,
    Task,
    check_unique,
    iter_jsonl_records,
    relative_image,
    require,
)
from ssmvlm.utils.errors import DataError

POPE_SPLITS = ("adversarial", "popular", "random")
POPE_CANDIDATES = ("Yes", "No")


def load_pope_files(files: dict[str, Path], image_for: Callable[[str], Path]) -> list[Example]:
    """Examples from POPE jsonl files (one ``{question_id, image, text, label}`` per line), keyed by split."""
    examples = []
    for split, path in files.items():
        split_examples = []
        for line, record in iter_jsonl_records(path):
            qid = str(require(record, "question_id", path, f"line {line}"))
            label = str(require(record, "label", path, qid)).strip().lower()
            if label not in ("yes", "no"):
                raise DataError(
                    path, f"label must be 'yes' or 'no', got {label!r}", record=qid, field="label"
                )
            split_examples.append(
                Example(
                    id=f"{split}/{qid}",
                    image=image_for(relative_image(require(record, "image", path, qid), path, qid)),
                    prompt=VQA_PROMPT.format(question=require(record, "text", path, qid)),
                    target={"label": label, "canonical": label.capitalize()},
                    subset=split,
                    prior_key=split,
                )
            )
        examples.extend(check_unique(split_examples, path))
    return examples


def _load_pope(root: Path, split: str) -> list[Example]:
    files = {s: root / f"coco_pope_{s}.json" for s in POPE_SPLITS}
    return load_pope_files(files, lambda name: root / "val2014" / name)


def _load_shapes_pope(root: Path, split: str) -> list[Example]:
    files = {s: root / split / f"pope_{s}.jsonl" for s in POPE_SPLITS}
    return load_pope_files(files, lambda name: root / name)


def score_pope(example: Example, output: ModelOutput, context: ScoreContext) -> Scored:
    """The per-example score follows the Yes/No probabilities when given (vlm-evaluation), else the text."""
    text_answer = yes_no_from_text(output.text) if output.text else None
    prob_answer = None
    if output.probs:
        prob_answer = "yes" if output.probs.get("Yes", 0.0) >= output.probs.get("No", 0.0) else "no"
    answer = prob_answer or text_answer or "no"
    return Scored(
        answer,
        float(answer == example.target["label"]),
        {"text_answer": text_answer, "prob_answer": prob_answer},
    )


def _metrics(records: Sequence[dict[str, Any]], key: str) -> dict[str, float] | None:
    pairs = [(r["extra"][key], r["target"]["label"]) for r in records if r["extra"].get(key)]
    if len(pairs) != len(records) or not pairs:
        return None
    return binary_metrics([p for p, _ in pairs], [y for _, y in pairs])


def summarize_pope(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for source, key in (("text", "text_answer"), ("prob", "prob_answer")):
        pooled = _metrics(records, key)
        if pooled is None:
            continue
        out[source] = {"all": pooled}
        for split in POPE_SPLITS:
            split_records = [r for r in records if r["subset"] == split]
            if split_records:
                out[source][split] = _metrics(split_records, key)
        split_acc = [out[source][s]["accuracy"] for s in POPE_SPLITS if s in out[source]]
        # vlm-evaluation's POPE-final-Accuracy is the unweighted mean of the split accuracies
        out[source]["split_mean_accuracy"] = sum(split_acc) / len(split_acc)
    return out


TASKS = [
    Task(
        "pope",
        "vqa",
        "pope",
        _load_pope,
        score_pope,
        "POPE adversarial/popular/random (coco_pope_{split}.json, val2014/)",
        candidates=POPE_CANDIDATES,
        summarize=summarize_pope,
    ),
    Task(
        "shapes-pope",
        "vqa",
        "shapes",
        _load_shapes_pope,
        score_pope,
        "ShapeScenes POPE (adversarial/popular/random)",
        candidates=POPE_CANDIDATES,
        summarize=summarize_pope,
        split_aware=True,
    ),
]
