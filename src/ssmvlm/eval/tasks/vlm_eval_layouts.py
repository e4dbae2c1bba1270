"""TRI vlm-evaluation's folders: its prepared index files and its ``download/`` names.

``--data FAMILY=DIR`` may point at a vlm-evaluation root (the folder holding ``download/`` and ``datasets/``),
at ``ROOT/datasets/<name>`` or at ``ROOT/download/<name>``.

Prepared form (``scripts/datasets/prepare.py``): ``datasets/<name>/metadata*.json``, an object of
example id → fields, with ``img_path`` relative to the root. The full file (``metadata.json`` or
``metadata-full.json``) is read when present, else the largest ``metadata-slim-N.json``.

Download form (``vlm_eval/tasks/registry.py``): the official files under vlm-evaluation's own names,

- ``download/vqa-v2/``: ``v2_val2014_questions.json``, ``v2_val2014_annotations.json``, ``images_val2014/``
- ``download/vizwiz/``: ``val.json`` (or ``Annotations/val.json``), ``val_images/``
- ``download/text-vqa/``: ``textvqa_val_v051_ocr.jsonl``, ``TextVQA_0.5.1_val.json``, ``train_val_images/``
- ``download/pope/``: ``coco_pope_{adversarial,popular,random}.json``, ``val_images/``
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ssmvlm.data.images import check_inside_root, image_size
from ssmvlm.eval.tasks.base import (
    REFER_PROMPT,
    VQA_PROMPT,
    Example,
    check_unique,
    iter_jsonl_records,
    most_common,
    require,
    require_list,
)
from ssmvlm.eval.tasks.boxes import box_target
from ssmvlm.eval.tasks.pope import POPE_SPLITS, load_pope_files
from ssmvlm.eval.tasks.textvqa import OCR_MARKER
from ssmvlm.eval.tasks.vizwiz import VIZWIZ_PROMPT, read_vizwiz_annotations
from ssmvlm.eval.tasks.vqav2 import load_vqav2_layout
from ssmvlm.utils.errors import DataError
from ssmvlm.utils.io import read_json

# Our task family → vlm-evaluation's dataset folder name.
DATASET_NAMES = {
    "vqav2": "vqa-v2",
    "gqa": "gqa",
    "vizwiz": "vizwiz",
    "textvqa": "text-vqa",
    "pope": "pope",
    "refcoco": "refcoco",
}
REFER_DATASETS = {"refcoco": "RefCOCO", "refcoco+": "RefCOCO+", "refcocog": "RefCOCOg"}
_ANSWER_SUFFIX = "\nAnswer the question using a single word or phrase."


# -- the prepared index files -----------------------------------------------------------------------------


def find_metadata(root: Path, name: str) -> tuple[Path, Path] | None:
    """(index file, vlm-evaluation root) for dataset ``name`` under ``root``, or None."""
    for folder, base in ((root / "datasets" / name, root), (root, root.parent.parent)):
        if folder is root and (root.name, root.parent.name) != (name, "datasets"):
            continue  # DIR itself only when it is ROOT/datasets/<name>
        files = sorted(folder.glob("metadata*.json")) if folder.is_dir() else []
        if not files:
            continue
        full = [f for f in files if f.name in ("metadata.json", "metadata-full.json")]
        if full:
            return full[0], base

        def slim_size(path: Path) -> int:
            match = re.fullmatch(r"metadata-slim-(\d+)\.json", path.name)
            return int(match.group(1)) if match else -1

        return max(files, key=slim_size), base
    return None


def _read_index(root: Path, name: str) -> tuple[Path, Path, list[tuple[str, dict[str, Any]]]]:
    found = find_metadata(root, name)
    if found is None:
        raise DataError(root, f"no datasets/{name}/metadata*.json found")
    path, base = found
    index = read_json(path)
    if not isinstance(index, dict):
        raise DataError(path, f"expected an object of example id → fields, got {type(index).__name__}")
    for key, entry in index.items():
        if not isinstance(entry, dict):
            raise DataError(path, f"expected an object, got {type(entry).__name__}", record=key)
    return path, base, list(index.items())


def _image(base: Path, entry: dict[str, Any], path: Path, key: str) -> Path:
    return check_inside_root(require(entry, "img_path", path, key), base, source=path, record=key, field="img_path")


def _answer_texts(value: Any, path: Path, key: str, field: str) -> list[str]:
    """Answers as strings: a list of strings, of {answer} records, or (VizWiz) a list holding that list."""
    items = require_list(value, path, key, field)
    if len(items) == 1 and isinstance(items[0], list):
        items = items[0]
    texts = [str(require(item, "answer", path, key)) if isinstance(item, dict) else str(item) for item in items]
    if not texts:
        raise DataError(path, "no reference answers", record=key, field=field)
    return texts


def load_vqav2_index(root: Path) -> list[Example]:
    path, base, entries = _read_index(root, "vqa-v2")
    examples = []
    for key, entry in entries:
        answers = _answer_texts(require(entry, "all_answers", path, key), path, key, "all_answers")
        examples.append(
            Example(
                id=str(require(entry, "question_id", path, key)),
                image=_image(base, entry, path, key),
                prompt=VQA_PROMPT.format(question=require(entry, "question", path, key)),
                target={"answers": answers, "canonical": str(require(entry, "answer", path, key))},
                subset=str(entry["answer_type"]) if "answer_type" in entry else None,
                prior_key=str(entry.get("question_type", "all")),
            )
        )
    return check_unique(examples, path)


def load_gqa_index(root: Path) -> list[Example]:
    path, base, entries = _read_index(root, "gqa")
    examples = []
    for key, entry in entries:
        answer = str(require(entry, "answer", path, key))
        examples.append(
            Example(
                id=str(require(entry, "question_id", path, key)),
                image=_image(base, entry, path, key),
                prompt=VQA_PROMPT.format(question=require(entry, "question", path, key)),
                target={"answer": answer, "canonical": answer},
            )
        )
    return check_unique(examples, path)


def load_vizwiz_index(root: Path) -> list[Example]:
    path, base, entries = _read_index(root, "vizwiz")
    examples = []
    for key, entry in entries:
        image = _image(base, entry, path, key)
        answers = _answer_texts(require(entry, "answers", path, key), path, key, "answers")
        answerable = bool(require(entry, "answerable", path, key))
        examples.append(
            Example(
                id=image.stem,  # the image name, as the official layout's ids (the index keys are positions)
                image=image,
                prompt=VIZWIZ_PROMPT.format(question=require(entry, "question", path, key)),
                target={
                    "answers": answers,
                    "answerable": answerable,
                    "canonical": most_common(answers),
                },
                subset="answerable" if answerable else "unanswerable",
            )
        )
    return check_unique(examples, path)


def load_textvqa_index(root: Path, with_ocr: bool) -> list[Example]:
    path, base, entries = _read_index(root, "text-vqa")
    examples = []
    for key, entry in entries:
        # The prepared question is LLaVA's OCR prompt; "Pure" cuts the OCR tokens off, as vlm-evaluation does.
        question = str(require(entry, "question", path, key)).removesuffix(_ANSWER_SUFFIX)
        if not with_ocr:
            question = question.split(OCR_MARKER)[0]
        answers = _answer_texts(require(entry, "answers", path, key), path, key, "answers")
        examples.append(
            Example(
                id=str(require(entry, "question_id", path, key)),
                image=_image(base, entry, path, key),
                prompt=VQA_PROMPT.format(question=question),
                target={"answers": answers, "canonical": most_common(answers)},
                prior_key=question.split(" ")[0].lower() or "all",
            )
        )
    return check_unique(examples, path)


def load_pope_index(root: Path) -> list[Example]:
    path, base, entries = _read_index(root, "pope")
    examples = []
    for key, entry in entries:
        split = str(require(entry, "split", path, key))
        if split not in POPE_SPLITS:
            raise DataError(path, f"split must be one of {', '.join(POPE_SPLITS)}", record=key, field="split")
        label = str(require(entry, "answer", path, key)).strip().lower()
        if label not in ("yes", "no"):
            raise DataError(path, f"answer must be 'yes' or 'no', got {label!r}", record=key, field="answer")
        examples.append(
            Example(
                id=f"{split}/{require(entry, 'split_question_id', path, key)}",
                image=_image(base, entry, path, key),
                prompt=VQA_PROMPT.format(question=require(entry, "question", path, key)),
                target={"label": label, "canonical": label.capitalize()},
                subset=split,
                prior_key=split,
            )
        )
    return check_unique(examples, path)


def load_refcoco_index(root: Path, variant: str) -> list[Example]:
    """One variant's examples. The index keeps only the box normalized to the raw image and rounded to 2
    decimals, so the pixel box (for the model-frame score) is that box times the image size."""
    path, base, entries = _read_index(root, "refcoco")
    sizes: dict[Path, tuple[int, int]] = {}
    examples = []
    for key, entry in entries:
        if require(entry, "refer_dataset", path, key) != REFER_DATASETS[variant]:
            continue
        image = _image(base, entry, path, key)
        if image not in sizes:
            sizes[image] = image_size(image, record=f"{path.name} {key}")
        width, height = sizes[image]
        box = require(entry, "bbox", path, key)
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) for v in box)):
            raise DataError(path, "bbox must be 4 numbers [x1, y1, x2, y2] in [0, 1]", record=key, field="bbox")
        target = box_target((box[0] * width, box[1] * height, box[2] * width, box[3] * height), width, height)
        sentence = str(require(entry, "ref_expression", path, key))
        examples.append(
            Example(
                id=f"{require(entry, 'ref_id', path, key)}/{require(entry, 'sent_id', path, key)}",
                image=image,
                prompt=REFER_PROMPT.format(sentence=sentence),
                target={**target, "canonical": [float(v) for v in box], "sentence": sentence},
                subset=variant,
            )
        )
    return check_unique(examples, path)


# -- vlm-evaluation's download/ names ---------------------------------------------------------------------


def download_folder(root: Path, name: str, marker: str) -> Path | None:
    """``root/download/<name>`` or ``root`` itself, whichever holds ``marker``."""
    for folder in (root / "download" / name, root):
        if (folder / marker).exists():
            return folder
    return None


def _download_or_error(root: Path, name: str, marker: str) -> Path:
    folder = download_folder(root, name, marker)
    if folder is None:
        raise DataError(root, f"no download/{name}/{marker} found")
    return folder


def load_vqav2_download(root: Path) -> list[Example]:
    folder = _download_or_error(root, "vqa-v2", "v2_val2014_questions.json")
    return load_vqav2_layout(
        folder / "v2_val2014_questions.json",
        folder / "v2_val2014_annotations.json",
        lambda image_id: folder / "images_val2014" / f"COCO_val2014_{int(image_id):012d}.jpg",
        subset_field="answer_type",
    )


def load_vizwiz_download(root: Path) -> list[Example]:
    folder = _download_or_error(root, "vizwiz", "val_images")
    path = next((p for p in (folder / "val.json", folder / "Annotations" / "val.json") if p.is_file()), None)
    if path is None:
        raise DataError(folder, "neither val.json nor Annotations/val.json found")
    return read_vizwiz_annotations(path, folder / "val_images")


def load_textvqa_download(root: Path, with_ocr: bool) -> list[Example]:
    folder = _download_or_error(root, "text-vqa", "train_val_images")
    path = folder / "TextVQA_0.5.1_val.json"
    data = require_list(require(read_json(path), "data", path, "root"), path, "root", "data")
    ocr: dict[str, str] = {}
    if with_ocr:
        ocr_path = folder / "textvqa_val_v051_ocr.jsonl"
        for line, record in iter_jsonl_records(ocr_path):
            qid = str(require(record, "question_id", ocr_path, f"line {line}"))
            ocr[qid] = str(require(record, "text", ocr_path, qid)).removesuffix(_ANSWER_SUFFIX)
    examples = []
    for index, record in enumerate(data):
        qid = str(require(record, "question_id", path, index))
        if with_ocr and qid not in ocr:
            raise DataError(folder / "textvqa_val_v051_ocr.jsonl", "question_id missing from the OCR file", record=qid)
        answers = _answer_texts(require(record, "answers", path, qid), path, qid, "answers")
        question = ocr[qid] if with_ocr else str(require(record, "question", path, qid))
        examples.append(
            Example(
                id=qid,
                image=folder / "train_val_images" / f"{require(record, 'image_id', path, qid)}.jpg",
                prompt=VQA_PROMPT.format(question=question),
                target={"answers": answers, "canonical": most_common(answers)},
                prior_key=str(record.get("question", "")).split(" ")[0].lower() or "all",
            )
        )
    return check_unique(examples, path)


def load_pope_download(root: Path) -> list[Example]:
    folder = _download_or_error(root, "pope", "val_images")
    files = {split: folder / f"coco_pope_{split}.json" for split in POPE_SPLITS}
    return load_pope_files(files, lambda name: folder / "val_images" / name)


def iter_tasks() -> Iterator[tuple[str, str, Callable[[Path], bool], Callable[[Path, str], list[Example]]]]:
    """(task name, layout name, detect(root), load(root, split)) for every vlm-evaluation layout."""

    def prepared(name: str) -> Callable[[Path], bool]:
        return lambda root: find_metadata(root, name) is not None

    def downloaded(name: str, marker: str) -> Callable[[Path], bool]:
        return lambda root: download_folder(root, name, marker) is not None

    yield "vqav2", "vlm-evaluation datasets/", prepared("vqa-v2"), lambda root, split: load_vqav2_index(root)
    yield "gqa", "vlm-evaluation datasets/", prepared("gqa"), lambda root, split: load_gqa_index(root)
    yield "vizwiz", "vlm-evaluation datasets/", prepared("vizwiz"), lambda root, split: load_vizwiz_index(root)
    for task, ocr in (("textvqa-ocr", True), ("textvqa-pure", False)):
        yield (
            task,
            "vlm-evaluation datasets/",
            prepared("text-vqa"),
            (lambda root, split, ocr=ocr: load_textvqa_index(root, ocr)),
        )
    yield "pope", "vlm-evaluation datasets/", prepared("pope"), lambda root, split: load_pope_index(root)
    for variant in REFER_DATASETS:
        yield (
            variant,
            "vlm-evaluation datasets/",
            prepared("refcoco"),
            (lambda root, split, variant=variant: load_refcoco_index(root, variant)),
        )
    yield (
        "vqav2",
        "vlm-evaluation download/",
        downloaded("vqa-v2", "v2_val2014_questions.json"),
        lambda root, split: load_vqav2_download(root),
    )
    yield (
        "vizwiz",
        "vlm-evaluation download/",
        downloaded("vizwiz", "val_images"),
        (lambda root, split: load_vizwiz_download(root)),
    )
    for task, ocr in (("textvqa-ocr", True), ("textvqa-pure", False)):
        yield (
            task,
            "vlm-evaluation download/",
            downloaded("text-vqa", "train_val_images"),
            (lambda root, split, ocr=ocr: load_textvqa_download(root, ocr)),
        )
    yield (
        "pope",
        "vlm-evaluation download/",
        downloaded("pope", "val_images"),
        (lambda root, split: load_pope_download(root)),
    )
