"""Hugging Face parquet releases of the evaluation sets, read from a local folder.

A user points ``--data FAMILY=DIR`` at a hub snapshot (``huggingface-cli download REPO --local-dir DIR``):
the split's shards may sit at any depth (``DIR/data/validation-00000-of-00003.parquet``, or the hub's
``refs/convert/parquet`` form ``DIR/default/validation/0000.parquet``). Every shard of the split is read, the
number of rows read is printed, and each shard's columns are checked against the dataset card before a row is
used. Images stay in the parquet files: an example holds a :class:`ParquetImage` reference that is decoded when
the runner opens it, so a 30 GB release is never loaded into memory at once.

Layouts (columns from the public dataset cards of the lmms-lab releases, which lmms-eval reads):

- ``lmms-lab/VQAv2``, split ``validation``: question_id, question, image_id, answers [{answer, ...}], image;
  multiple_choice_answer, question_type and answer_type when present.
- ``lmms-lab/GQA``: config ``testdev_balanced_instructions`` (id, imageId, question, answer, types) joined on
  imageId with config ``testdev_balanced_images`` (id, image), split ``testdev``.
- ``lmms-lab/textvqa``, split ``validation``: question_id, question, answers [str], image, ocr_tokens [str].
- ``lmms-lab/VizWiz-VQA``, split ``val``: question_id, question, answers [str], category, image.
- ``lmms-lab/POPE``: split ``test`` with category = adversarial | popular | random, or config ``Full`` with
  those three splits; question_id, question, answer (yes/no), image.
- ``lmms-lab/RefCOCO``, ``RefCOCOplus``, ``RefCOCOg``, split ``val``: question_id, answer [sentences],
  bbox [x, y, w, h] pixels, image.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

from ssmvlm.eval.tasks.base import REFER_PROMPT, VQA_PROMPT, Example, check_unique, most_common
from ssmvlm.eval.tasks.boxes import box_target
from ssmvlm.eval.tasks.vizwiz import VIZWIZ_PROMPT
from ssmvlm.utils.errors import DataError

IMAGE_COLUMN = "image"
POPE_SPLITS = ("adversarial", "popular", "random")
# Folder names a hub snapshot of each RefCOCO variant gets, beside the task's own name.
REFCOCO_FOLDERS = {"refcoco": ("RefCOCO",), "refcoco+": ("RefCOCOplus", "RefCOCO+"), "refcocog": ("RefCOCOg",)}


@dataclass(frozen=True)
class ParquetImage:
    """One image cell of a parquet shard (``row`` counts from the start of its row group)."""

    file: Path
    row_group: int
    row: int
    column: str = IMAGE_COLUMN

    def __str__(self) -> str:
        return f"{self.file} (row group {self.row_group}, row {self.row}, column '{self.column}')"

    def read_bytes(self) -> bytes:
        import pyarrow as pa

        where = f"row group {self.row_group} row {self.row}"
        try:
            cell = _row_group_cells(self.file, self.row_group, self.column)[self.row]
        except (pa.ArrowException, OSError) as exc:
            raise DataError(self.file, f"unreadable image cell ({exc})", record=where, field=self.column) from None
        return image_bytes(cell, self.file, where, self.column)

    def open(self) -> BinaryIO:
        return io.BytesIO(self.read_bytes())


@lru_cache(maxsize=4)
def _row_group_cells(file: Path, row_group: int, column: str) -> list[Any]:
    # The runner asks for images in shard order, so keeping the last few row groups decoded means each row
    # group (about 100 images in a hub release) is read once per pass.
    import pyarrow.parquet as pq

    return pq.ParquetFile(file).read_row_group(row_group, columns=[column]).column(0).to_pylist()


def image_bytes(cell: Any, file: Path, where: str, column: str) -> bytes:
    """The encoded image of a cell: the ``datasets`` Image struct {bytes, path}, or plain binary."""
    if isinstance(cell, bytes | bytearray):
        return bytes(cell)
    if isinstance(cell, dict):
        if cell.get("bytes"):
            return bytes(cell["bytes"])
        if cell.get("path"):
            # An image stored by reference: its path is absolute or relative to the shard's folder.
            for candidate in (Path(cell["path"]), file.parent / cell["path"]):
                if candidate.is_file():
                    return candidate.read_bytes()
            raise DataError(file, f"image has no bytes and its path {cell['path']!r} is not found", record=where)
    raise DataError(file, "image cell is empty", record=where, field=column)


def find_shards(root: Path, splits: Sequence[str], *, config: str | None = None) -> list[Path]:
    """Every ``*.parquet`` below ``root`` (any depth) of one of ``splits``, in path order.

    A shard belongs to split S when its file is named ``S-….parquet`` / ``S.parquet`` (``push_to_hub``) or it
    sits in a folder named S (``refs/convert/parquet``). ``config``: only shards inside a folder of that name.
    """
    if not root.is_dir():
        return []
    shards = []
    for path in sorted(root.rglob("*.parquet")):
        folders = path.relative_to(root).parts[:-1]
        if any(part.startswith(".") for part in folders) or (config is not None and config not in folders):
            continue
        stem = path.name.removesuffix(".parquet")
        if any(stem == s or stem.startswith(f"{s}-") or s in folders for s in splits):
            shards.append(path)
    return shards


def shard_columns(path: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(path, f"not a readable parquet file ({exc})") from None


@dataclass(frozen=True)
class Row:
    """One row's non-image cells, where it came from (for error messages) and its image, if read."""

    file: Path
    index: int
    cells: dict[str, Any]
    image: ParquetImage | None

    @property
    def where(self) -> str:
        return f"row {self.index}"

    def get(self, column: str, default: Any = None) -> Any:
        value = self.cells.get(column)
        return default if value is None else value

    def require(self, column: str) -> Any:
        value = self.cells.get(column)
        if value is None:
            raise DataError(self.file, "empty cell", record=self.where, field=column)
        return value


def read_rows(
    shards: Sequence[Path],
    dataset: str,
    required: Sequence[str],
    optional: Sequence[str] = (),
    *,
    image: bool = True,
) -> list[Row]:
    """The rows of all ``shards``; each shard's columns are checked first (a one-line error names what lacks)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    needed = [*required, IMAGE_COLUMN] if image else list(required)
    rows: list[Row] = []
    for shard in shards:
        names = shard_columns(shard)
        missing = [c for c in needed if c not in names]
        if missing:
            raise DataError(
                shard, f"not the {dataset} layout: missing column(s) {', '.join(missing)} (has {', '.join(names)})"
            )
        try:
            parquet = pq.ParquetFile(shard)
            cells = parquet.read(columns=[c for c in (*required, *optional) if c in names]).to_pylist()
        except (pa.ArrowException, OSError) as exc:
            raise DataError(shard, f"not a readable parquet file ({exc})") from None
        if image:
            kind = parquet.schema_arrow.field(IMAGE_COLUMN).type
            if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or _is_image_struct(kind)):
                raise DataError(
                    shard, f"expected an image (struct {{bytes, path}} or binary), got {kind}", field="image"
                )
        images: list[ParquetImage | None] = [None] * len(cells)
        if image:
            images = [
                ParquetImage(shard, group, row)
                for group in range(parquet.metadata.num_row_groups)
                for row in range(parquet.metadata.row_group(group).num_rows)
            ]
        rows.extend(Row(shard, i, c, img) for i, (c, img) in enumerate(zip(cells, images, strict=True)))
    return rows


def _is_image_struct(kind: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0


def report_rows(task: str, rows: int, shards: Sequence[Path], root: Path) -> None:
    """Say how much was read, so that a truncated download shows up as a row count, not as a quiet score."""
    from ssmvlm.utils.progress import console

    console.print(f"{task}: read {rows:,} rows from {len(shards)} parquet shard(s) under {root}", highlight=False)


def _shards_or_error(root: Path, splits: Sequence[str], dataset: str, *, config: str | None = None) -> list[Path]:
    shards = find_shards(root, splits, config=config)
    if not shards:
        inside = f" inside a '{config}' folder" if config else ""
        raise DataError(root, f"no {dataset} parquet shards of split {'/'.join(splits)}{inside} found")
    return shards


def _text_list(value: Any, row: Row, column: str) -> list[str]:
    """A list of answers: strings, or objects with an ``answer`` field (VQAv2's answer records)."""
    if not isinstance(value, list):
        raise DataError(row.file, f"expected a list, got {type(value).__name__}", record=row.where, field=column)
    texts = []
    for item in value:
        if isinstance(item, dict):
            if item.get("answer") is None:
                raise DataError(row.file, "answer record without 'answer'", record=row.where, field=column)
            texts.append(str(item["answer"]))
        else:
            texts.append(str(item))
    if not texts:
        raise DataError(row.file, "no reference answers", record=row.where, field=column)
    return texts


# -- one loader per dataset ---------------------------------------------------------------------------------


def load_vqav2(root: Path, task: str = "vqav2") -> list[Example]:
    shards = _shards_or_error(root, ("validation",), "lmms-lab/VQAv2")
    rows = read_rows(
        shards,
        "lmms-lab/VQAv2",
        ("question_id", "question", "image_id", "answers"),
        ("multiple_choice_answer", "question_type", "answer_type"),
    )
    examples = []
    for row in rows:
        answers = _text_list(row.require("answers"), row, "answers")
        examples.append(
            Example(
                id=str(row.require("question_id")),
                image=row.image,  # type: ignore[arg-type]
                prompt=VQA_PROMPT.format(question=row.require("question")),
                target={"answers": answers, "canonical": str(row.get("multiple_choice_answer", answers[0]))},
                subset=str(row.get("answer_type")) if row.get("answer_type") is not None else None,
                prior_key=str(row.get("question_type", "all")),
            )
        )
    report_rows(task, len(rows), shards, root)
    return check_unique(examples, shards[0])


def load_gqa(root: Path, task: str = "gqa") -> list[Example]:
    questions = _shards_or_error(root, ("testdev",), "lmms-lab/GQA", config="testdev_balanced_instructions")
    image_shards = _shards_or_error(root, ("testdev",), "lmms-lab/GQA", config="testdev_balanced_images")
    images = {str(row.require("id")): row.image for row in read_rows(image_shards, "lmms-lab/GQA images", ("id",))}
    rows = read_rows(
        questions, "lmms-lab/GQA instructions", ("id", "imageId", "question", "answer"), ("types",), image=False
    )
    examples = []
    for row in rows:
        image_id = str(row.require("imageId"))
        if image_id not in images:
            raise DataError(row.file, f"imageId {image_id} not in the testdev_balanced_images shards", record=row.where)
        types = row.get("types", {})
        answer = str(row.require("answer"))
        examples.append(
            Example(
                id=str(row.require("id")),
                image=images[image_id],  # type: ignore[arg-type]
                prompt=VQA_PROMPT.format(question=row.require("question")),
                target={"answer": answer, "canonical": answer},
                subset=types.get("structural") if isinstance(types, dict) else None,
                prior_key=str(types.get("detailed") or "all") if isinstance(types, dict) else "all",
            )
        )
    report_rows(task, len(rows), questions, root)
    return check_unique(examples, questions[0])


def load_textvqa(root: Path, with_ocr: bool, task: str = "textvqa") -> list[Example]:
    shards = _shards_or_error(root, ("validation",), "lmms-lab/textvqa")
    required = ("question_id", "question", "answers", *(("ocr_tokens",) if with_ocr else ()))
    rows = read_rows(shards, "lmms-lab/textvqa", required)
    examples = []
    for row in rows:
        question = str(row.require("question"))
        answers = _text_list(row.require("answers"), row, "answers")
        if with_ocr:
            tokens = row.get("ocr_tokens", [])
            # LLaVA's OCR prompt (llava_textvqa_val_v051_ocr.jsonl), rebuilt from the same Rosetta tokens.
            question += "\nReference OCR token: " + ", ".join(str(t) for t in tokens)
        examples.append(
            Example(
                id=str(row.require("question_id")),
                image=row.image,  # type: ignore[arg-type]
                prompt=VQA_PROMPT.format(question=question),
                target={"answers": answers, "canonical": most_common(answers)},
                prior_key=str(row.get("question", "")).split(" ")[0].lower() or "all",
            )
        )
    report_rows(task, len(rows), shards, root)
    return check_unique(examples, shards[0])


def load_vizwiz(root: Path, task: str = "vizwiz") -> list[Example]:
    shards = _shards_or_error(root, ("val",), "lmms-lab/VizWiz-VQA")
    rows = read_rows(shards, "lmms-lab/VizWiz-VQA", ("question_id", "question", "answers", "category"))
    examples = []
    for row in rows:
        answers = _text_list(row.require("answers"), row, "answers")
        category = str(row.require("category"))
        # The release has no `answerable` flag; its category is VizWiz's answer_type, whose "unanswerable"
        # class is the unanswerable questions.
        answerable = category != "unanswerable"
        examples.append(
            Example(
                id=str(row.require("question_id")),
                image=row.image,  # type: ignore[arg-type]
                prompt=VIZWIZ_PROMPT.format(question=row.require("question")),
                target={"answers": answers, "answerable": answerable, "canonical": most_common(answers)},
                subset="answerable" if answerable else "unanswerable",
                prior_key=category,
            )
        )
    report_rows(task, len(rows), shards, root)
    return check_unique(examples, shards[0])


def _pope_rows(root: Path) -> tuple[list[tuple[str, Row]], list[Path]]:
    """(split, row) pairs: the default config's ``test`` shards (split from ``category``), else ``Full``'s."""
    dataset = "lmms-lab/POPE"
    test = find_shards(root, ("test",))
    if test:
        rows = read_rows(test, dataset, ("question_id", "question", "answer", "category"))
        return [(str(row.require("category")), row) for row in rows], test
    pairs, shards = [], []
    for split in POPE_SPLITS:
        split_shards = _shards_or_error(root, (split,), dataset)
        pairs += [(split, row) for row in read_rows(split_shards, dataset, ("question_id", "question", "answer"))]
        shards += split_shards
    return pairs, shards


def load_pope(root: Path, task: str = "pope") -> list[Example]:
    pairs, shards = _pope_rows(root)
    examples = []
    for split, row in pairs:
        if split not in POPE_SPLITS:
            raise DataError(
                row.file, f"category must be one of {', '.join(POPE_SPLITS)}, got {split!r}", record=row.where
            )
        label = str(row.require("answer")).strip().lower()
        if label not in ("yes", "no"):
            raise DataError(row.file, f"answer must be 'yes' or 'no', got {label!r}", record=row.where, field="answer")
        examples.append(
            Example(
                id=f"{split}/{row.require('question_id')}",
                image=row.image,  # type: ignore[arg-type]
                prompt=VQA_PROMPT.format(question=str(row.require("question")).strip()),
                target={"label": label, "canonical": label.capitalize()},
                subset=split,
                prior_key=split,
            )
        )
    report_rows(task, len(pairs), shards, root)
    return check_unique(examples, shards[0])


def refcoco_folder(root: Path, variant: str) -> Path:
    for name in (variant, *REFCOCO_FOLDERS[variant]):
        if (root / name).is_dir():
            return root / name
    return root


def is_lmms_refcoco(folder: Path) -> bool:
    """Whether ``folder`` holds lmms-lab's RefCOCO release (jxu124's has no image or bbox-with-answer columns)."""
    shards = find_shards(folder, ("val",))
    return bool(shards) and {"answer", "bbox", IMAGE_COLUMN} <= set(shard_columns(shards[0]))


def load_refcoco(root: Path, variant: str) -> list[Example]:
    from ssmvlm.data.images import image_size

    folder = refcoco_folder(root, variant)
    shards = _shards_or_error(folder, ("val",), f"lmms-lab RefCOCO ({variant})")
    rows = read_rows(shards, f"lmms-lab RefCOCO ({variant})", ("question_id", "answer", "bbox"))
    examples = []
    for row in rows:
        bbox = row.require("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
            raise DataError(row.file, "bbox must be 4 numbers [x, y, w, h]", record=row.where, field="bbox")
        assert row.image is not None  # read_rows was asked for images
        # The box is normalized by the raw image size, which only the encoded image holds.
        width, height = image_size(row.image)
        x, y, w, h = (float(v) for v in bbox)
        target = box_target((x, y, x + w, y + h), width, height)
        sentences = row.require("answer")
        if not isinstance(sentences, list) or not sentences:
            raise DataError(row.file, "expected a non-empty list of sentences", record=row.where, field="answer")
        for number, sentence in enumerate(sentences):
            examples.append(
                Example(
                    id=f"{row.require('question_id')}/{number}",
                    image=row.image,  # type: ignore[arg-type]
                    prompt=REFER_PROMPT.format(sentence=sentence),
                    target={**target, "sentence": str(sentence)},
                    subset=variant,
                )
            )
    report_rows(variant, len(rows), shards, folder)
    return check_unique(examples, shards[0])


def iter_tasks() -> Iterator[tuple[str, Callable[[Path], bool], Callable[[Path, str], list[Example]]]]:
    """(task name, detect(root), load(root, split)) for every task with a parquet layout."""
    yield "vqav2", lambda root: bool(find_shards(root, ("validation",))), lambda root, split: load_vqav2(root)
    yield (
        "gqa",
        lambda root: bool(find_shards(root, ("testdev",), config="testdev_balanced_instructions")),
        lambda root, split: load_gqa(root),
    )
    for name, ocr in (("textvqa-ocr", True), ("textvqa-pure", False)):
        yield (
            name,
            lambda root: bool(find_shards(root, ("validation",))),
            lambda root, split, ocr=ocr, name=name: load_textvqa(root, ocr, name),
        )
    yield "vizwiz", lambda root: bool(find_shards(root, ("val",))), lambda root, split: load_vizwiz(root)
    yield (
        "pope",
        lambda root: bool(find_shards(root, ("test", *POPE_SPLITS))),
        lambda root, split: load_pope(root),
    )
    for variant in REFCOCO_FOLDERS:
        yield (
            variant,
            lambda root, variant=variant: is_lmms_refcoco(refcoco_folder(root, variant)),
            lambda root, split, variant=variant: load_refcoco(root, variant),
        )
