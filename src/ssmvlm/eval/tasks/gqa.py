"""GQA testdev-balanced (questions1.2 layout: ``{question_id: {imageId, question, answer, types, ...}}``)."""

from __future__ import annotations

from pathlib import Path

from ssmvlm.eval.metrics import gqa_score, normalize_gqa_answer
from ssmvlm.eval.tasks.base import (
    VQA_PROMPT,
    Example,
    ModelOutput,
    ScoreContext,
    Scored,
    Task,
    check_unique,
    require,
)
from ssmvlm.utils.errors import DataError
from ssmvlm.utils.io import read_json

GQA_QUESTIONS = "testdev_balanced_questions.json"


def load_gqa(root: Path, split: str) -> list[Example]:
    path = root / GQA_QUESTIONS
    questions = read_json(path)
    if not isinstance(questions, dict):
        raise DataError(path, f"expected an object keyed by question id, got {type(questions).__name__}")
    examples = []
    for qid, question in questions.items():
        types = question.get("types", {}) if isinstance(question, dict) else {}
        answer = str(require(question, "answer", path, qid))
        examples.append(
            Example(
                id=str(qid),
                image=root / "images" / f"{require(question, 'imageId', path, qid)}.jpg",
                prompt=VQA_PROMPT.format(question=require(question, "question", path, qid)),
                target={"answer": answer, "canonical": answer},
                subset=types.get("structural") if isinstance(types, dict) else None,
                prior_key=str(types.get("detailed", "all")) if isinstance(types, dict) else "all",
            )
        )
    return check_unique(examples, path)


def score_gqa(example: Example, output: ModelOutput, context: ScoreContext) -> Scored:
    return Scored(normalize_gqa_answer(output.text), gqa_score(output.text, example.target["answer"]))


TASKS = [Task("gqa", "vqa", "gqa", load_gqa, score_gqa, f"GQA testdev-balanced ({GQA_QUESTIONS}, images/)")]
