"""Batch prediction: a JSONL of ``{image, prompt}`` records in, one prediction per record out.

Each input line is ``{"image": PATH, "prompt": TEXT}`` with an optional ``"id"`` (default: the line number);
``image`` is relative to the input file's folder (or absolute), or null for a text-only prompt. Every record is
checked before the model is asked anything. Predictions are appended to the output as they are produced, as
``{"id", "image", "prompt", "prediction"}``; a rerun keeps the finished ones and only predicts the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ssmvlm.eval.runner import _drop_truncated_tail
from ssmvlm.eval.tasks.base import iter_jsonl_records
from ssmvlm.utils.errors import ConfigError, DataError
from ssmvlm.utils.io import append_jsonl, iter_jsonl
from ssmvlm.utils.progress import progress_bar

if TYPE_CHECKING:
    from PIL import Image


class Generator(Protocol):
    def generate(self, images: list[Image.Image | None], prompts: list[str], *, max_new_tokens: int) -> list[str]: ...


@dataclass(frozen=True)
class PredictRecord:
    id: str
    image: str | None  # as written in the input
    path: Path | None  # where that image is
    prompt: str
    line: int


def read_records(path: str | Path) -> list[PredictRecord]:
    """The input records, each checked (prompt a non-empty string, image an existing file or null, ids unique)."""
    path = Path(path)
    records: list[PredictRecord] = []
    seen: set[str] = set()
    for line, record in iter_jsonl_records(path):
        where = f"line {line}"
        if not isinstance(record, dict):
            raise DataError(path, f"expected an object, got {type(record).__name__}", record=where)
        prompt = record.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(path, "expected a non-empty string", record=where, field="prompt")
        image = record.get("image")
        image_path = None
        if image is not None:
            if not isinstance(image, str) or not image:
                raise DataError(path, f"expected an image path or null, got {image!r}", record=where, field="image")
            image_path = Path(image) if Path(image).is_absolute() else path.parent / image
            if not image_path.is_file():
                raise DataError(path, f"image file {image_path} not found", record=where, field="image")
        record_id = str(record.get("id", line))
        if record_id in seen:
            raise DataError(path, f"duplicate id {record_id!r}", record=where, field="id")
        seen.add(record_id)
        records.append(PredictRecord(record_id, image, image_path, prompt, line))
    if not records:
        raise DataError(path, "no records")
    return records


def read_finished(out: Path, records: Sequence[PredictRecord]) -> set[str]:
    """Ids already predicted in ``out``; a prediction made for another prompt or image is an error."""
    if not out.is_file():
        return set()
    _drop_truncated_tail(out)  # a line cut by a crash would otherwise be glued to the next record
    by_id = {record.id: record for record in records}
    finished: set[str] = set()
    for line, stored in enumerate(iter_jsonl(out, tolerate_truncated_tail=True), start=1):
        if not isinstance(stored, dict) or not isinstance(stored.get("prediction"), str):
            raise DataError(out, "expected an object with a string 'prediction'", record=f"line {line}")
        record = by_id.get(str(stored.get("id")))
        if record is None:
            raise DataError(out, f"id {stored.get('id')!r} is not in the input; use a new --out", record=f"line {line}")
        if (stored.get("prompt"), stored.get("image")) != (record.prompt, record.image):
            raise DataError(
                out,
                f"id {record.id!r} was predicted for another prompt or image; use a new --out",
                record=f"line {line}",
            )
        finished.add(record.id)
    return finished


def _open(record: PredictRecord, source: Path) -> Image.Image | None:
    from ssmvlm.data.images import open_image

    return None if record.path is None else open_image(record.path, record=f"{source} line {record.line}")


def predict_records(
    model: Generator,
    records: Sequence[PredictRecord],
    source: str | Path,
    out: str | Path,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 128,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Predict every record not yet in ``out``, appending each prediction as it is made."""
    if batch_size < 1:
        raise ConfigError("batch_size", f"must be at least 1, got {batch_size}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    finished = read_finished(out, records)
    todo = [record for record in records if record.id not in finished]
    with progress_bar(disable=not show_progress) as progress:
        bar = progress.add_task("predict", total=len(records), completed=len(finished), status="")
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            images = [_open(record, Path(source)) for record in batch]
            texts = model.generate(images, [r.prompt for r in batch], max_new_tokens=max_new_tokens)
            if len(texts) != len(batch):
                raise DataError("model.generate", f"returned {len(texts)} results for a batch of {len(batch)}")
            for record, text in zip(batch, texts, strict=True):
                append_jsonl(out, {"id": record.id, "image": record.image, "prompt": record.prompt, "prediction": text})
            progress.update(bar, advance=len(batch))
    return {"records": len(records), "already_done": len(finished), "predicted": len(todo), "out": str(out)}
