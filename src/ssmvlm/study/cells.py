"""Executing one cell in its run folder, and reading its result back.

A cell is complete when its run directory holds ``DONE`` (written last, after ``result.json``), so an
interrupted study resumes where it stopped. A cell that raises gets ``error.txt`` (message and traceback) and
``log.txt``, and the study goes on. The stage itself runs through :data:`ssmvlm.study.stages.STAGE_RUNNERS`.
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Any

from ssmvlm.study.matrix import Cell
from ssmvlm.study.stages import STAGE_RUNNERS
from ssmvlm.utils.errors import DataError
from ssmvlm.utils.io import atomic_write_json, atomic_write_text, read_json

DONE_FILE = "DONE"
RESULT_FILE = "result.json"
ERROR_FILE = "error.txt"
CELL_FILE = "cell.json"
LOG_FILE = "log.txt"

log = logging.getLogger(__name__)


def is_done(cell: Cell, out: str | Path) -> bool:
    return (cell.run_dir(Path(out)) / DONE_FILE).is_file()


def is_done_key(key: str, out: str | Path) -> bool:
    """Whether the cell ``stage/id`` is complete (for cells known by key only, such as a row's training)."""
    return (Path(out) / "runs" / key / DONE_FILE).is_file()


def cells_from_other_code(cells: list[Cell], out: str | Path) -> dict[str, str]:
    """Of these finished cells, those whose run record names other code than this run's: ``{key: its version}``.

    A cell's id covers its configuration, not the code that ran it, so a study resumed after an upgrade reuses
    results the new code would not have produced; the caller says so. Cells without a readable record, or either
    side without a known version, are left out."""
    from ssmvlm.utils import provenance

    current = provenance.current_code_version()
    if current is None:
        return {}
    other = {}
    for cell in cells:
        path = cell.run_dir(Path(out)) / provenance.RUN_RECORD
        try:
            record = read_json(path)
        except (OSError, DataError):
            continue
        version = provenance.code_version(record) if isinstance(record, dict) else None
        if version is not None and version != current:
            other[cell.key] = version
    return other


def read_result(cell_or_key: Cell | str, out: str | Path) -> dict[str, Any]:
    key = cell_or_key.key if isinstance(cell_or_key, Cell) else cell_or_key
    return read_json(Path(out) / "runs" / key / RESULT_FILE)


def first_error_line(cell: Cell, out: str | Path) -> dict[str, Any]:
    """The first line of the error of this cell or of the upstream cell that blocked it, and its file."""
    for key in [cell.key, *reversed(cell.deps)]:
        path = Path(out) / "runs" / key / ERROR_FILE
        if path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            return {"error": lines[1] if len(lines) > 1 else lines[0], "error_file": str(path)}
    return {}


def execute_cell(cell: Cell, out: str | Path, device: str = "auto", threads: int | None = None) -> dict[str, Any]:
    """Run one cell here unless it is complete; never raises for a failure of the stage itself.

    Returns ``{"status": "cached" | "done" | "failed", "seconds": ..., "error": ...}``.
    """
    run_dir = cell.run_dir(Path(out))
    if is_done(cell, out):
        return {"status": "cached", "seconds": 0.0, "error": None}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    atomic_write_json(
        run_dir / CELL_FILE,
        {"stage": cell.stage, "id": cell.id, "config": cell.record, "deps": cell.deps, "labels": cell.labels},
    )
    handler = logging.FileHandler(run_dir / LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    previous_level = root.level
    root.setLevel(min(previous_level, logging.INFO) if previous_level else logging.INFO)
    start = time.perf_counter()
    try:
        if threads:
            import torch

            torch.set_num_threads(threads)
        from ssmvlm.utils.device import resolve_device

        upstream = {dep: read_result(dep, out) for dep in cell.deps}
        result = STAGE_RUNNERS[cell.stage](cell, run_dir, upstream, str(resolve_device(device)))
        seconds = time.perf_counter() - start
        atomic_write_json(run_dir / RESULT_FILE, result)
        if not (run_dir / "run.json").is_file():
            from ssmvlm.utils.provenance import write_run_record

            write_run_record(run_dir, cell.record, cell.record.get("seed"), stage=cell.stage, labels=cell.labels)
        atomic_write_json(run_dir / DONE_FILE, {"seconds": seconds})
        return {"status": "done", "seconds": seconds, "error": None}
    except Exception as exc:  # a crashed cell is recorded and the study goes on
        seconds = time.perf_counter() - start
        message = f"{type(exc).__name__}: {exc}"
        atomic_write_text(
            run_dir / ERROR_FILE, f"{cell.key} ({cell.describe()})\n{message}\n\n{traceback.format_exc()}"
        )
        log.error("cell %s failed: %s", cell.key, message)
        return {"status": "failed", "seconds": seconds, "error": message}
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        handler.close()
