"""Running a study: every cell once, in dependency order, resumable, a crash recorded and isolated.

A cell is complete when its run directory holds ``DONE`` (written last, after ``result.json``), so an
interrupted study resumes where it stopped and a spec that gains a backbone reruns only that backbone's cells.
A cell that raises gets ``error.txt`` (message and traceback) and ``log.txt``; the cells below it are
reported as blocked and every other cell still runs. After the main cells, the instability diagnosis picks
the cells to stabilize and their ablation variants run the same way; then the report is written.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ssmvlm.config import to_dict
from ssmvlm.study.analysis import AblationRequest, diagnose, load_losses, plan_ablations
from ssmvlm.study.launchers import CellFunction, Launcher, make_launcher
from ssmvlm.study.matrix import Cell, StudyMatrix, VlmChoice, add_vlm_cells, expand_matrix
from ssmvlm.study.spec import StudySpec, load_spec, validate_spec
from ssmvlm.study.stages import TRAIN_LOG
from ssmvlm.utils.io import append_jsonl, atomic_write_json, atomic_write_text, read_json

DONE_FILE = "DONE"
RESULT_FILE = "result.json"
ERROR_FILE = "error.txt"
CELL_FILE = "cell.json"
LOG_FILE = "log.txt"
SPEC_FILE = "spec.yaml"
MATRIX_FILE = "matrix.json"
ABLATIONS_FILE = "ablations.json"
EVENTS_FILE = "events.jsonl"

log = logging.getLogger(__name__)


# -- one cell -------------------------------------------------------------------------------------------


def is_done(cell: Cell, out: str | Path) -> bool:
    return (cell.run_dir(Path(out)) / DONE_FILE).is_file()


def read_result(cell_or_key: Cell | str, out: str | Path) -> dict[str, Any]:
    key = cell_or_key.key if isinstance(cell_or_key, Cell) else cell_or_key
    return read_json(Path(out) / "runs" / key / RESULT_FILE)


def execute_cell(cell: Cell, out: str | Path, device: str = "auto", threads: int | None = None) -> dict[str, Any]:
    """Run one cell here unless it is complete; never raises for a failure of the stage itself.

    Returns ``{"status": "cached" | "done" | "failed", "seconds": ..., "error": ...}``.
    """
    from ssmvlm.study.stages import STAGE_RUNNERS

    run_dir = cell.run_dir(Path(out))
    if is_done(cell, out):
        return {"status": "cached", "seconds": 0.0, "error": None}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    atomic_write_json(
        run_dir / CELL_FILE,
        {"stage": cell.stage, "id": cell.id, "config": cell.config, "deps": cell.deps, "labels": cell.labels},
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

        upstream = {dep.split("/", 1)[0]: read_result(dep, out) for dep in cell.deps}
        result = STAGE_RUNNERS[cell.stage](cell, run_dir, upstream, str(resolve_device(device)))
        seconds = time.perf_counter() - start
        atomic_write_json(run_dir / RESULT_FILE, result)
        if not (run_dir / "run.json").is_file():
            from ssmvlm.utils.provenance import write_run_record

            write_run_record(run_dir, cell.config, cell.config.get("seed"), stage=cell.stage, labels=cell.labels)
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


# -- scheduling -----------------------------------------------------------------------------------------


def schedule(
    matrix: StudyMatrix,
    out: Path,
    launcher: Launcher,
    *,
    show_progress: bool = True,
    poll_seconds: float = 0.2,
) -> dict[str, str]:
    """Run every incomplete cell of ``matrix`` as soon as its dependencies are complete.

    Returns the status of every cell: ``done`` (ran now), ``cached``, ``failed`` or ``blocked`` (an upstream
    cell failed). Up to ``launcher.capacity`` cells run at once.
    """
    from rich.markup import escape

    from ssmvlm.utils.progress import console, progress_bar

    # A live bar only on a terminal: in a log file (workers, CI, nohup) the ✓/✗ lines say the same.
    show_progress = show_progress and console.is_terminal
    status: dict[str, str] = {cell.key: "cached" for cell in matrix if is_done(cell, out)}
    pending = [cell for cell in matrix if cell.key not in status]
    running: dict[str, tuple[Cell, Any]] = {}
    stages = [stage for stage in ("dataset", "pretrain", "train", "eval") if matrix.by_stage(stage)]
    with progress_bar(disable=not show_progress) as bar:
        overall = bar.add_task("study", total=len(matrix), completed=len(status), status="")
        per_stage = {
            stage: bar.add_task(
                f"  {stage}",
                total=len(matrix.by_stage(stage)),
                completed=sum(1 for c in matrix.by_stage(stage) if c.key in status),
                status="",
            )
            for stage in stages
        }
        while pending or running:
            for cell in list(pending):
                if len(running) >= launcher.capacity:
                    break
                upstream = [status.get(dep) for dep in cell.deps]
                if any(s in ("failed", "blocked") for s in upstream):
                    status[cell.key] = "blocked"
                    pending.remove(cell)
                    _record(out, cell, "blocked", 0.0, "an upstream cell failed")
                    bar.advance(overall)
                    bar.advance(per_stage[cell.stage])
                    continue
                if all(s in ("done", "cached") for s in upstream):
                    pending.remove(cell)
                    running[cell.key] = (cell, _submit(launcher, cell))
            bar.update(overall, status=escape(", ".join(c.describe() for c, _ in running.values())[:80]))
            finished = [key for key, (_, handle) in running.items() if handle.done()]
            if not finished:
                time.sleep(poll_seconds)
                continue
            for key in finished:
                cell, handle = running.pop(key)
                outcome = _outcome(cell, out, handle)
                status[key] = "done" if outcome["status"] == "done" else outcome["status"]
                _record(out, cell, status[key], outcome["seconds"], outcome["error"])
                bar.advance(overall)
                bar.advance(per_stage[cell.stage])
                if status[key] == "failed":
                    where = cell.run_dir(out) / ERROR_FILE
                    message = escape(f"{cell.describe()}: {outcome['error']} (see {where})")
                    console.print(f"[red]✗[/red] {message}", highlight=False)
                elif status[key] == "done":
                    message = escape(f"{cell.describe()} ({outcome['seconds']:.1f} s)")
                    console.print(f"[green]✓[/green] {message}", highlight=False)
    return status


def _submit(launcher: Launcher, cell: Cell) -> Any:
    """The launcher's handle, or a failed one when the launcher itself is broken (a dead worker pool)."""
    from concurrent.futures import Future

    try:
        return launcher.submit(cell)
    except Exception as exc:  # the cell is recorded as failed and the others go on
        future: Future = Future()
        future.set_exception(exc)
        return future


def _outcome(cell: Cell, out: Path, handle: Any) -> dict[str, Any]:
    try:
        return handle.result()
    except Exception as exc:  # the worker itself died (OOM, segfault, lost job)
        message = f"{type(exc).__name__}: {exc}"
        atomic_write_text(cell.run_dir(out) / ERROR_FILE, f"{cell.key}\nthe worker running it died: {message}\n")
        return {"status": "failed", "seconds": 0.0, "error": message}


def _record(out: Path, cell: Cell, status: str, seconds: float, error: str | None) -> None:
    append_jsonl(
        Path(out) / EVENTS_FILE,
        {
            "time": time.time(),
            "cell": cell.key,
            "status": status,
            "seconds": round(seconds, 3),
            "error": error,
        },
    )


# -- the study ------------------------------------------------------------------------------------------


@dataclass
class StudyOutcome:
    out: Path
    matrix: StudyMatrix
    status: dict[str, str]
    results: pd.DataFrame
    ablations: list[AblationRequest] = field(default_factory=list)
    report_files: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[str]:
        return [key for key, s in self.status.items() if s in ("failed", "blocked")]


def save_spec(spec: StudySpec, out: Path) -> None:
    atomic_write_text(out / SPEC_FILE, yaml.safe_dump(to_dict(spec), sort_keys=False))


def run_study(
    spec: StudySpec,
    out: str | Path,
    *,
    launcher: Launcher | None = None,
    cell_function: CellFunction | None = None,
    show_progress: bool = True,
    write_report: bool = True,
) -> StudyOutcome:
    """Validate, expand, run the main cells, diagnose, run the ablations, collect and report."""
    from ssmvlm.utils.lock import folder_lock

    validate_spec(spec)
    with folder_lock(out, "ssmvlm study"):  # a second study on this folder is refused, not interleaved
        return _run_study(
            spec,
            Path(out),
            launcher=launcher,
            cell_function=cell_function,
            show_progress=show_progress,
            write_report=write_report,
        )


def _run_study(
    spec: StudySpec,
    out: Path,
    *,
    launcher: Launcher | None,
    cell_function: CellFunction | None,
    show_progress: bool,
    write_report: bool,
) -> StudyOutcome:
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    save_spec(spec, out)
    from ssmvlm.utils.provenance import write_run_record

    write_run_record(out, to_dict(spec), spec.seeds[0], kind="study")
    matrix = expand_matrix(spec)
    add_ablation_cells(matrix, spec, load_ablations(out))  # variants planned by an earlier, interrupted run
    atomic_write_json(out / MATRIX_FILE, matrix_rows(matrix, out))
    execution = spec.execution
    own_launcher = launcher is None
    if launcher is None:
        launcher = make_launcher(
            execution.launcher,
            out,
            device=execution.device,
            gpus=execution.gpus,
            workers_per_gpu=execution.workers_per_gpu,
            cpu_workers=execution.cpu_workers,
            threads=execution.threads,
            slurm=execution.slurm,
            cell_function=cell_function,
        )
    try:
        status = schedule(matrix, out, launcher, show_progress=show_progress)
        results = collect_results(matrix, out, status)
        requests = plan_ablations(results, diagnose(results, spec.diagnosis, load_losses(results)), spec.stabilization)
        requests = _merge_ablations(load_ablations(out), requests)
        if requests:
            atomic_write_json(out / ABLATIONS_FILE, [vars(r) for r in requests])
            if add_ablation_cells(matrix, spec, requests):
                atomic_write_json(out / MATRIX_FILE, matrix_rows(matrix, out))
                status = schedule(matrix, out, launcher, show_progress=show_progress)
                results = collect_results(matrix, out, status)
    finally:
        if own_launcher:
            launcher.close()
    outcome = StudyOutcome(out, matrix, status, results, requests, seconds=time.perf_counter() - start)
    if write_report:
        from ssmvlm.study.report import write_report as write

        outcome.report_files = write(out, spec, results, wall_seconds=outcome.seconds)
    return outcome


def rebuild_report(out: str | Path) -> list[Path]:
    """Re-collect a study's finished runs and write its report again (nothing is run)."""
    from ssmvlm.study.report import write_report

    out = Path(out)
    spec = load_spec(out / SPEC_FILE)
    matrix = expand_matrix(spec)
    add_ablation_cells(matrix, spec, load_ablations(out))
    return write_report(out, spec, collect_results(matrix, out))


def load_ablations(out: Path) -> list[AblationRequest]:
    path = out / ABLATIONS_FILE
    return [AblationRequest(**record) for record in read_json(path)] if path.is_file() else []


def _merge_ablations(old: list[AblationRequest], new: list[AblationRequest]) -> list[AblationRequest]:
    return list(dict.fromkeys([*old, *new]))


def add_ablation_cells(matrix: StudyMatrix, spec: StudySpec, requests: list[AblationRequest]) -> int:
    """Add the train/eval cells of each request; returns how many cells were new."""
    before = len(matrix)
    for request in requests:
        key = f"eval/{request.parent}"
        if key not in matrix:
            continue  # the spec changed since the request was planned
        labels = matrix[key].labels
        choice = VlmChoice(
            labels["backbone"],
            labels["init"],
            labels["seed"],
            labels["resolution"],
            request.resize_strategy,
            request.connector,
            variant=request.variant,
            parent=request.parent,
        )
        add_vlm_cells(matrix, spec, choice)
    return len(matrix) - before


def matrix_rows(matrix: StudyMatrix, out: Path) -> list[dict[str, Any]]:
    """One row per cell: stage, id, what it is, whether it is complete (the ``--dry-run`` listing)."""
    return [
        {
            "stage": cell.stage,
            "id": cell.id,
            "describe": cell.describe(),
            "complete": is_done(cell, out),
            "deps": cell.deps,
        }
        for cell in matrix
    ]


# -- collecting results ---------------------------------------------------------------------------------


def collect_results(matrix: StudyMatrix, out: Path, status: dict[str, str] | None = None) -> pd.DataFrame:
    """The results table (see :mod:`ssmvlm.study.analysis`): one row per eval cell and per control."""
    rows: list[dict[str, Any]] = []
    for cell in matrix.by_stage("eval"):
        train_key = next(dep for dep in cell.deps if dep.startswith("train/"))
        base = {
            "cell_id": cell.id,
            "train_id": train_key.split("/", 1)[1],
            **{k: cell.labels.get(k) for k in _LABELS},
            "run_dir": str(cell.run_dir(out)),
            "train_log": str(Path(out) / "runs" / train_key / TRAIN_LOG),  # kept by failed trainings too
        }
        cell_status = (status or {}).get(cell.key) or ("done" if is_done(cell, out) else "missing")
        if cell_status == "cached":
            cell_status = "done"
        if cell_status != "done":
            rows.append({**base, "row_type": "model", "status": cell_status, **_error_of(matrix, cell, out)})
            continue
        train = read_result(train_key, out) if (out / "runs" / train_key / DONE_FILE).is_file() else {}
        facts = {k: train.get(k) for k in ("family", "kind", "params", "tokens", "top1")}
        model, controls = extract_scores(read_result(cell, out).get("results", {}))
        rows.append({**base, **facts, "row_type": "model", "status": "done", **model})
        for name, scores in controls.items():
            rows.append({**base, **facts, "row_type": name, "status": "done", **scores})
    table = pd.DataFrame.from_records(rows)
    for column in (
        "vqa",
        "loc",
        "overall",
        "row_type",
        "status",
        "top1",
        "params",
        "tokens",
        "family",
        "kind",
    ):
        if column not in table:
            table[column] = math.nan
    return table


_LABELS = ("backbone", "init", "seed", "resolution", "resize_strategy", "connector", "variant", "parent")


def _error_of(matrix: StudyMatrix, cell: Cell, out: Path) -> dict[str, Any]:
    """The first line of the error of this cell or of the upstream cell that blocked it."""
    for key in [cell.key, *reversed(cell.deps)]:
        path = Path(out) / "runs" / key / ERROR_FILE
        if path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            return {"error": lines[1] if len(lines) > 1 else lines[0], "error_file": str(path)}
    return {}


def extract_scores(results: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Flatten an evaluation's results (``ssmvlm.eval``) into table columns, for the model and each control.

    Reads ``aggregates.{vqa,loc,overall}.{weighted,ci95}`` and ``tasks.<name>.score``; a group the evaluation
    did not cover stays NaN.
    """

    def flatten(block: dict[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = {}
        aggregates = block.get("aggregates", {})
        for score in ("vqa", "loc", "overall"):
            values = aggregates.get(score, {})
            row[score] = _number(values.get("weighted"))
            ci = values.get("ci95")
            if isinstance(ci, list | tuple) and len(ci) == 2:
                row[f"{score}_ci_low"], row[f"{score}_ci_high"] = _number(ci[0]), _number(ci[1])
        for name, task in block.get("tasks", {}).items():
            row[f"task:{name}"] = _number(task.get("score"))
        return row

    controls = {name: flatten(block) for name, block in results.get("controls", {}).items()}
    return flatten(results), controls


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def dry_run_listing(spec: StudySpec, out: Path) -> list[dict[str, Any]]:
    """Validate and expand without running; the rows of the matrix, complete ones marked."""
    validate_spec(spec)
    matrix = expand_matrix(spec)
    add_ablation_cells(matrix, spec, load_ablations(out))
    return matrix_rows(matrix, out)
