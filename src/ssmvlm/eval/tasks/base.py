"""What a task is: examples loaded from an official layout, a prompt, answer extraction and a metric."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ssmvlm.data.box_frames import BOX_FRAMES, BoxFrame
from ssmvlm.utils.errors import DataError

if TYPE_CHECKING:
    from ssmvlm.eval.tasks.hf_parquet import ParquetImage

VQA_PROMPT = "{question}\nAnswer the question using a single word or phrase."
REFER_PROMPT = (
    'Please provide the bounding box coordinate of the region this sentence describes: "{sentence}"'
)

Group = Literal["vqa", "loc"]
# The frames boxes are scored in are the frames a model can answer in (``model.box_frame``).
BoxConvention = BoxFrame
BOX_CONVENTIONS = BOX_FRAMES


@dataclass(frozen=True)
class Example:
    """One evaluation item. ``target`` holds what the scorer needs and stays JSON-serializable."""

    id: str
    image: Path | ParquetImage  # a file, or an image cell of a Hugging Face parquet shard
    prompt: str
    target: dict[str, Any]
    subset: str | None = None  # breakdown key: question family, POPE split, RefCOCO variant, clutter level
    prior_key: str = "all"  # the "question type" the prior baseline conditions on


@dataclass(frozen=True)
class ModelOutput:
    text: str
    probs: dict[str, float] | None = None


@dataclass(frozen=True)
class Scored:
    answer: Any
    score: float  # per-example score in [0, 1]; the task score is its mean on a 0–100 scale
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoreContext:
    """What scoring needs besides the example: the model's frame (for boxes), the primary box convention."""

    image_transform: Any = None  # ssmvlm.data.transforms.ImageTransform, or None for the prior baseline
    box_convention: BoxConvention = "raw"


Loader = Callable[[Path, str], list[Example]]
Scorer = Callable[[Example, ModelOutput, ScoreContext], Scored]
Summarizer = Callable[[Sequence[dict[str, Any]]], dict[str, Any]]


@dataclass(frozen=True)
class Task:
    name: str
    group: Group
    family: str  # the key under which a user gives this dataset's root folder
    load: Loader
    score: Scorer
    describe: str
    candidates: tuple[str, ...] = ()  # first-token candidates (probability-scored tasks)
    generate: bool = True  # whether free-form generation is needed (False: candidates only)
    split_aware: bool = False  # the loader reads the requested split (ShapeScenes); real sets have one split
    summarize: Summarizer | None = None


def dataset_root(data_root: Path | Mapping[str, Path], family: str) -> Path:
    """The folder holding one dataset: an explicit ``{family: path}`` entry, ``DIR/family`` or ``DIR``."""
    if isinstance(data_root, Mapping):
        if family not in data_root:
            raise DataError("--data", f"no folder given for dataset '{family}' (expected {family}=DIR)")
        return Path(data_root[family])
    root = Path(data_root)
    return root / family if (root / family).is_dir() else root


def require(record: Any, key: str, file: Path, where: str | int) -> Any:
    """``record[key]``, or a DataError naming the file, the record and the missing field."""
    if not isinstance(record, Mapping):
        raise DataError(file, f"expected an object, got {type(record).__name__}", record=where)
    if key not in record:
        raise DataError(file, "missing field", record=where, field=key)
    return record[key]


def require_list(value: Any, file: Path, where: str | int, key: str) -> list:
    if not isinstance(value, list):
        raise DataError(file, f"expected a list, got {type(value).__name__}", record=where, field=key)
    return value


def most_common(values: list[str]) -> str:
    """The most frequent answer; ties go to the smallest, so the canonical answer never depends on hash order."""
    return min(set(values), key=lambda value: (-values.count(value), value))


def relative_image(name: Any, file: Path, where: str | int, key: str = "image") -> str:
    """An image path named by an annotation record, normalized; one that would leave the dataset's folder
    (absolute, or climbing with ``..``) is refused with a one-line error naming the file, record and field."""
    from ssmvlm.data.images import check_inside_root

    if not isinstance(name, str) or not name:
        raise DataError(file, f"expected a non-empty path string, got {name!r}", record=where, field=key)
    return str(check_inside_root(name, Path(), source=file, record=where, field=key))


def image_under(root: Path, name: Any, file: Path, where: str | int, key: str = "image") -> Path:
    """``root / name`` after :func:`relative_image`'s check."""
    return root / relative_image(name, file, where, key)


def first_layout(root: Path, layouts: Sequence[tuple[str, Sequence[str]]]) -> tuple[str, list[Path]]:
    """The first ``(name, relative files)`` layout whose files all exist under ``root``: its name and paths.

    The error lists every layout tried, so a user whose download looks different sees what was expected.
    """
    for name, files in layouts:
        paths = [root / f for f in files]
        if all(p.is_file() for p in paths):
            return name, paths
    tried = "; ".join(f"{name} ({', '.join(files)})" for name, files in layouts)
    raise DataError(root, f"no known layout found; tried: {tried}")


def find_file(root: Path, names: Sequence[str]) -> Path:
    """The first of ``names`` that exists under ``root``; the error lists what was looked for."""
    for name in names:
        if (root / name).is_file():
            return root / name
    raise DataError(root, f"none of {', '.join(names)} found")


def iter_jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) of a JSONL annotation file, with one-line errors for bad lines or bytes."""
    if not path.is_file():
        raise DataError(path, "file not found")
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise DataError(path, f"not UTF-8 text ({exc.reason})", record=f"line {number}") from None
            except json.JSONDecodeError as exc:
                raise DataError(path, f"malformed JSON ({exc.msg})", record=f"line {number}") from None
            yield number, record


def check_unique(examples: list[Example], file: Path) -> list[Example]:
    seen: set[str] = set()
    for example in examples:
        if example.id in seen:
            raise DataError(file, "duplicate id", record=example.id)
        seen.add(example.id)
    return examples


def mean_score(records: Sequence[dict[str, Any]]) -> float:
    return 100.0 * sum(r["score"] for r in records) / len(records) if records else 0.0
