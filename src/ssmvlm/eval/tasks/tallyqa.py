"""TallyQA test (simple + complex), as 16-way multiple choice scored from first-token letter probabilities."""

from __future__ import annotations

import re
from pathlib import Path

from ssmvlm.eval.tasks.base import (
    Example,
    ModelOutput,
    ScoreContext,
    Scored,
    Task,
    check_unique,
    image_under,
    require,
)
from ssmvlm.utils.errors import DataError
from ssmvlm.utils.io import read_json

TALLYQA_TEST = "test.json"
CHOICES = tuple(str(count) for count in range(16))
LETTERS = tuple(chr(ord("A") + i) for i in range(len(CHOICES)))
_CHOICE_BLOCK = "\n".join(f"{letter}. {choice}" for letter, choice in zip(LETTERS, CHOICES, strict=True))
TALLYQA_PROMPT = (
    "{question}\n" + _CHOICE_BLOCK + "\nAnswer with the option's letter from the given choices directly."
)
_LETTER = re.compile(r"\b([A-P])\b")


def load_tallyqa(root: Path, split: str) -> list[Example]:
    path = root / TALLYQA_TEST
    records = read_json(path)
    if not isinstance(records, list):
        raise DataError(path, f"expected a list of questions, got {type(records).__name__}")
    examples = []
    for index, record in enumerate(records):
        qid = str(require(record, "question_id", path, index))
        answer = require(record, "answer", path, qid)
        if isinstance(answer, bool) or not isinstance(answer, int):
            raise DataError(
                path, f"answer must be an integer count, got {answer!r}", record=qid, field="answer"
            )
        examples.append(
            Example(
                id=qid,
                image=image_under(root, require(record, "image", path, qid), path, qid),
                prompt=TALLYQA_PROMPT.replace("{question}", str(require(record, "question", path, qid))),
                target={
                    "answer": answer,
                    "canonical": LETTERS[answer] if 0 <= answer < len(LETTERS) else "?",
                },
                subset="simple" if record.get("issimple", False) else "complex",
                prior_key="simple" if record.get("issimple", False) else "complex",
            )
        )
    return check_unique(examples, path)


def score_tallyqa(example: Example, output: ModelOutput, context: ScoreContext) -> Scored:
    if output.probs:
        letter = max(LETTERS, key=lambda candidate: output.probs.get(candidate, 0.0))  # type: ignore[union-attr]
    else:
        match = _LETTER.search(output.text or "")
        letter = match.group(1) if match else None
    count = LETTERS.index(letter) if letter else None
    return Scored(count, float(count == example.target["answer"]))


TASKS = [
    Task(
        "tallyqa",
        "vqa",
        "tallyqa",
        load_tallyqa,
        score_tallyqa,
        f"TallyQA test simple+complex ({TALLYQA_TEST}, image paths relative to the folder)",
        candidates=LETTERS,
        generate=False,
    )
]
