"""Running a study: every cell once, in dependency order, resumable, a crash recorded and isolated.

``run_study`` plans the cells (:mod:`ssmvlm.study.matrix`), schedules every incomplete one on a launcher
(:mod:`ssmvlm.study.launchers`, which runs :func:`ssmvlm.study.cells.execute_cell`) as soon as its dependencies
are complete, collects the results table (:mod:`ssmvlm.study.results`), asks the instability diagnosis which
cells to stabilize, runs their ablation variants the same way, and writes the report. A spec that gains a
backbone reruns only that backbone's cells; the cells below a failed one are reported as blocked and every other
cell still runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ssmvlm.config import to_dict
from ssmvlm.study.analysis import AblationRequest, diagnose, load_losses, plan_ablations
from ssmvlm.study.cells import ERROR_FILE, cells_from_other_code, is_done
from ssmvlm.study.launchers import CellFunction, Launcher, make_launcher
from ssmvlm.study.matrix import (
    ABLATIONS_FILE,
    STAGES,
    Cell,
    StudyMatrix,
    add_ablation_cells,
    expand_matrix,
    load_ablations,
    merge_ablations,
)
from ssmvlm.study.results import collect_results
from ssmvlm.study.spec import StudySpec, load_spec, validate_spec
from ssmvlm.utils.io import append_jsonl, atomic_write_json, atomic_write_text

SPEC_FILE = "spec.yaml"
MATRIX_FILE = "matrix.json"
EVENTS_FILE = "events.jsonl"


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
    # Among cells ready at once, those more cells wait on go first (a study's LLM warm-up before any one
    # encoder's pretraining); ties keep the matrix's order.
    waiting_on = downstream_counts(matrix)
    pending = sorted((cell for cell in matrix if cell.key not in status), key=lambda cell: -waiting_on[cell.key])
    running: dict[str, tuple[Cell, Any]] = {}
    stages = [stage for stage in STAGES if matrix.by_stage(stage)]
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


def _warn_on_other_code(matrix: StudyMatrix, out: Path) -> None:
    from rich.markup import escape

    from ssmvlm.utils.progress import console

    other = cells_from_other_code([cell for cell in matrix if is_done(cell, out)], out)
    if not other:
        return
    key, version = next(iter(other.items()))
    console.print(
        f"[yellow]warning:[/yellow] reusing {len(other)} finished cell(s) that other code computed (e.g. "
        + escape(f"{out / 'runs' / key}: {version[:12]}")
        + "); a cell's id covers its config, not the code, so delete a cell's folder to compute it again",
        highlight=False,
        soft_wrap=True,
    )


def downstream_counts(matrix: StudyMatrix) -> dict[str, int]:
    """How many cells depend on each cell, directly or through others."""
    dependents: dict[str, set[str]] = {cell.key: set() for cell in matrix}
    for cell in reversed(list(matrix)):  # a cell comes after everything it depends on
        for dep in cell.deps:
            dependents[dep] |= {cell.key} | dependents[cell.key]
    return {key: len(keys) for key, keys in dependents.items()}


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
    _warn_on_other_code(matrix, out)
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
        requests = merge_ablations(load_ablations(out), requests)
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


def dry_run_listing(spec: StudySpec, out: Path) -> list[dict[str, Any]]:
    """Validate and expand without running; the rows of the matrix, complete ones marked."""
    validate_spec(spec)
    matrix = expand_matrix(spec)
    add_ablation_cells(matrix, spec, load_ablations(out))
    return matrix_rows(matrix, out)
