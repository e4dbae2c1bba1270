"""LLaVA-format conversation data: ``[{id, image, conversations: [{from, value}, ...]}]``, validated up front.

One reader serves the real LLaVA mixes and ShapeScenes (``DIR/{split}/llava.json``). Every problem a user can
cause is reported as a one-line :class:`DataError` naming the file, the record (index and id) and the field;
with ``skip_bad=True`` bad records are dropped, counted and summarized in one warning line instead.

Images are only checked for existence here (decoding thousands of images up front would dominate start-up);
:func:`ssmvlm.data.images.open_image` decodes them at load time and names any corrupt file.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssmvlm.data.images import check_inside_root
from ssmvlm.utils.errors import DataError
from ssmvlm.utils.io import read_json

IMAGE_PLACEHOLDER = "<image>"
ROLES = ("human", "gpt")
VQA_PROMPT = "{question}\nAnswer the question using a single word or phrase."
GROUNDING_PROMPT = (
    'Please provide the bounding box coordinate of the region this sentence describes: "{sentence}"'
)

_NUMBER = r"\s*(-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*"
# A box in an answer is a bracketed list of exactly four numbers, e.g. "[0.12, 0.30, 0.55, 0.81]".
BOX_PATTERN = re.compile(r"\[" + ",".join([_NUMBER] * 4) + r"\]")
# Four bracketed items that float() reads but BOX_PATTERN does not, such as "[nan, 0.24, 0.58, 0.83]" or "inf".
_NON_FINITE_BOX = re.compile(r"\[" + ",".join([r"\s*([-+]?(?:nan|inf(?:inity)?|[\d.eE+-]+))\s*"] * 4) + r"\]", re.I)


@dataclass
class LlavaRecord:
    """One conversation. ``image`` is the validated path (data root joined), or None for text-only records;
    ``turns`` are ``(role, text)`` pairs alternating human → gpt, with the ``<image>`` placeholder removed."""

    id: str
    image: Path | None
    turns: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class LlavaLoadReport:
    """What :func:`load_llava_records` saw: kept and skipped records and the first skip reason."""

    total: int = 0
    skipped: int = 0
    first_reason: str | None = None


def default_image_root(json_path: str | Path) -> Path:
    """Where image paths of ``json_path`` are relative to when no root is given.

    ShapeScenes writes ``DIR/{split}/llava.json`` with paths relative to ``DIR`` (the folder holding its
    ``manifest.json``, checked by content); any other file's paths are taken relative to its own folder.
    """
    folder = Path(json_path).parent
    dataset = folder.resolve().parent  # resolved: "llava.json" given from inside a split folder works too
    return dataset if is_shapescenes_manifest(dataset / "manifest.json") else folder


# The generator name ShapeScenes writes into its manifest (ssmvlm.data.shapes.generate.GENERATOR), repeated
# here so that reading LLaVA data does not import the scene renderer.
SHAPESCENES_GENERATOR = "ssmvlm.shapescenes"


def is_shapescenes_manifest(path: Path) -> bool:
    """Whether ``path`` is a ShapeScenes manifest: its content is read, since a user's own dataset may hold a
    ``manifest.json`` of another kind one folder up (its images are then relative to the JSON's own folder)."""
    if not path.is_file():
        return False
    try:
        data = read_json(path)
    except DataError:
        return False
    return isinstance(data, dict) and data.get("generator") == SHAPESCENES_GENERATOR


def parse_boxes(text: str) -> list[tuple[float, float, float, float]]:
    """Every ``[x1, y1, x2, y2]`` box written in ``text``."""
    return [tuple(float(v) for v in match.groups()) for match in BOX_PATTERN.finditer(text)]  # type: ignore[misc]


def load_llava_records(
    json_path: str | Path,
    image_root: str | Path | None = None,
    *,
    skip_bad: bool = False,
    report: LlavaLoadReport | None = None,
) -> list[LlavaRecord]:
    """Read and validate a LLaVA conversation file.

    Checks: JSON syntax; a top-level list of objects; ``id`` (string or integer), ``conversations`` (a
    non-empty list of ``{from, value}`` string pairs alternating human → gpt), optional ``image`` (a string
    path that stays inside ``image_root`` and exists); a ``<image>`` placeholder only in records with an
    image; boxes written in answers of image records lie in [0, 1] with x1 ≤ x2 and y1 ≤ y2. Pass a
    :class:`LlavaLoadReport` to learn how many records were skipped.
    """
    json_path = Path(json_path)
    root = Path(image_root) if image_root is not None else default_image_root(json_path)
    data = read_json(json_path)
    if not isinstance(data, list):
        raise DataError(json_path, f"expected a JSON list of records, got {type(data).__name__}")
    report = report if report is not None else LlavaLoadReport()
    report.total = len(data)
    records: list[LlavaRecord] = []
    for index, raw in enumerate(data):
        try:
            records.append(_parse_record(raw, index, json_path, root))
        except DataError as exc:
            if not skip_bad:
                raise
            report.skipped += 1
            report.first_reason = report.first_reason or str(exc)
    if report.skipped:
        from rich.markup import escape

        from ssmvlm.utils.progress import console

        # Reasons quote fields like "conversations[1]" and boxes like "[0.1, ...]": escaped, not markup.
        console.print(
            f"[yellow]warning:[/yellow] skipped {report.skipped} of {report.total} bad records in "
            + escape(f"{json_path}; first: {report.first_reason}"),
            highlight=False,
            soft_wrap=True,
        )
    return records


def _parse_record(raw: Any, index: int, source: Path, root: Path) -> LlavaRecord:
    if not isinstance(raw, dict):
        raise DataError(source, f"expected an object, got {type(raw).__name__}", record=index)
    record_id = raw.get("id")
    if isinstance(record_id, bool) or not isinstance(record_id, str | int):
        problem = (
            "missing" if "id" not in raw else f"expected a string or integer, got {type(record_id).__name__}"
        )
        raise DataError(source, problem, record=index, field="id")
    where = f"{index} (id {str(record_id)!r})"
    image = _parse_image(raw, where, source, root)
    turns = _parse_turns(
        raw.get("conversations"), "conversations" in raw, where, source, has_image=image is not None
    )
    return LlavaRecord(id=str(record_id), image=image, turns=turns)


def _parse_image(raw: dict[str, Any], where: str, source: Path, root: Path) -> Path | None:
    if raw.get("image") is None:
        return None
    value = raw["image"]
    if not isinstance(value, str) or not value:
        raise DataError(
            source, f"expected a non-empty path string, got {value!r}", record=where, field="image"
        )
    path = check_inside_root(value, root, source=source, record=where, field="image")
    if not path.is_file():
        raise DataError(source, f"image file {str(path)!r} not found", record=where, field="image")
    return path


def _parse_turns(
    conversations: Any,
    present: bool,
    where: str,
    source: Path,
    *,
    has_image: bool,
) -> list[tuple[str, str]]:
    if not present:
        raise DataError(source, "missing", record=where, field="conversations")
    if not isinstance(conversations, list) or not conversations:
        raise DataError(
            source,
            f"expected a non-empty list of turns, got {conversations!r:.60}",
            record=where,
            field="conversations",
        )
    if len(conversations) % 2:
        raise DataError(
            source,
            f"{len(conversations)} turns: expected human/gpt pairs (an even count)",
            record=where,
            field="conversations",
        )
    turns: list[tuple[str, str]] = []
    for position, turn in enumerate(conversations):
        name = f"conversations[{position}]"
        if not isinstance(turn, dict):
            raise DataError(
                source, f"expected an object, got {type(turn).__name__}", record=where, field=name
            )
        for key in ("from", "value"):
            if key not in turn:
                raise DataError(source, "missing", record=where, field=f"{name}.{key}")
            if not isinstance(turn[key], str):
                raise DataError(
                    source,
                    f"expected a string, got {type(turn[key]).__name__}",
                    record=where,
                    field=f"{name}.{key}",
                )
        role, text = turn["from"], turn["value"]
        expected = ROLES[position % 2]
        if role != expected:
            raise DataError(
                source,
                f"role {role!r}: turns must alternate human → gpt, expected {expected!r}",
                record=where,
                field=f"{name}.from",
            )
        if IMAGE_PLACEHOLDER in text and (role == "gpt" or not has_image):
            reason = "in an answer" if role == "gpt" else "in a record without an image"
            raise DataError(
                source, f"{IMAGE_PLACEHOLDER} placeholder {reason}", record=where, field=f"{name}.value"
            )
        if role == "gpt" and has_image:
            _check_boxes(text, source, where, f"{name}.value")
        if role == "human":
            text = text.replace(IMAGE_PLACEHOLDER, "").strip()
        turns.append((role, text))
    return turns


def _check_boxes(text: str, source: Path, where: str, field_name: str) -> None:
    for match in _NON_FINITE_BOX.finditer(text):
        try:
            values = [float(v) for v in match.groups()]
        except ValueError:
            continue  # not four numbers: plain text that happens to be bracketed
        if not all(math.isfinite(v) for v in values):
            raise DataError(source, f"box {match.group(0)} has a non-finite coordinate", record=where, field=field_name)
    for box in parse_boxes(text):
        x1, y1, x2, y2 = box
        shown = "[" + ", ".join(f"{v:g}" for v in box) + "]"
        if not all(0.0 <= v <= 1.0 for v in box):
            raise DataError(source, f"box {shown} outside [0, 1]", record=where, field=field_name)
        if x2 < x1 or y2 < y1:
            raise DataError(source, f"box {shown} has x2 < x1 or y2 < y1", record=where, field=field_name)
