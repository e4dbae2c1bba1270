"""TextVQA val v0.5.1, with OCR tokens in the prompt (LLaVA's OCR jsonl) and without ("Pure")."""

from __future__ import annotations

from pathlib import Path

from ssmvlm.eval.metrics import normalize_textvqa_answer, textvqa_score
from ssmvlm.eval.tasks.base import (
    VQA_PROMPT,
    Example,
    ModelOutput,
    ScoreContext,
    Scored,
    Task,
    check_unique,
    find_file,
    iter_jsonl_records,
    most_common,
    require,
    require_list,
)
from ssmvlm.utils.errors import DataError
from ssmvlm.utils.io import read_json

TEXTVQA_ANNOTATIONS = "TextVQA_0.5.1_val.json"
TEXTVQA_OCR_FILES = ("llava_textvqa_val_v051_ocr.jsonl", "textvqa_val_v051_ocr.jsonl")
OCR_MARKER = "\nReference OCR token:"
_ANSWER_SUFFIX = "\nAnswer the question using a single word or phrase."


def _ocr_questions(root: Path) -> dict[str, str]:
    path = find_file(root, TEXTVQA_OCR_FILES)
    texts: dict[str, str] = {}
    for line, record in iter_jsonl_records(path):
        qid = str(require(record, "question_id", path, f"line {line}"))
        if qid in texts:
            raise DataError(path, "duplicate question_id", record=qid)
        text = str(require(record, "text", path, qid))
        texts[qid] = text.removesuffix(_ANSWER_SUFFIX)
    return texts


def _load(root: Path, with_ocr: bool) -> list[Example]:
    path = root / TEXTVQA_ANNOTATIONS
    data = require_list(require(read_json(path), "data", path, "root"), path, "root", "data")
    ocr = _ocr_questions(root) if with_ocr else {}
    examples = []
    for index, record in enumerate(data):
        qid = str(require(record, "question_id", path, index))
        answers = [str(a) for a in require_list(require(record, "answers", path, qid), path, qid, "answers")]
        if not answers:
            raise DataError(path, "no reference answers", record=qid, field="answers")
        if with_ocr and qid not in ocr:
            raise DataError(root / TEXTVQA_OCR_FILES[0], "question_id missing from the OCR file", record=qid)
        question = ocr[qid] if with_ocr else str(require(record, "question", path, qid))
        examples.append(
            Example(
                id=qid,
                image=root / "train_images" / f"{require(record, 'image_id', path, qid)}.jpg",
                prompt=VQA_PROMPT.format(question=question),
                target={"answers": answers, "canonical": most_common(answers)},
                prior_key=str(record.get("question", "")).split(" ")[0].lower() or "all",
            )
        )
    return check_unique(examples, path)


def score_textvqa(example: Example, output: ModelOutput, context: ScoreContext) -> Scored:
    return Scored(
        normalize_textvqa_answer(output.text), textvqa_score(output.text, example.target["answers"])
    )


TASKS = [
    Task(
        "textvqa-ocr",
        "vqa",
        "textvqa",
        lambda root, split: _load(root, True),
        score_textvqa,
        f"TextVQA val with OCR tokens ({TEXTVQA_ANNOTATIONS}, {TEXTVQA_OCR_FILES[0]}, train_images/)",
    ),
    Task(
        "textvqa-pure",
        "vqa",
        "textvqa",
        lambda root, split: _load(root, False),
        score_textvqa,
        f"TextVQA val without OCR tokens ({TEXTVQA_ANNOTATIONS}, train_images/)",
    ),
]
