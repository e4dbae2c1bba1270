"""Evaluation results sent to the trackers training uses (``logging.loggers: [tensorboard, wandb]``).

One tracker run per evaluation: TensorBoard writes ``OUT/tensorboard/`` (one event file per evaluation), W&B one
run of job type ``eval`` in ``OUT/wandb/`` (``WANDB_MODE=offline`` keeps it local). Logged, for the model and each
control (``blind``, ``prior``):

- scalars ``{source}/{task}/score`` (0–100), ``…/ci95_low``, ``…/ci95_high``, ``{source}/{task}/{subset}`` for
  each breakdown subset, every numeric task metric as ``{source}/{task}/metrics/{path}``, and the aggregates
  ``{source}/aggregate/{group}/{weighted|macro}``;
- tables: the per-task table (TensorBoard: the Markdown of ``results.md`` as text; W&B: a ``wandb.Table`` with one
  row per task and one column per source).

A tracker that is asked for but not installed is skipped with a warning; results.json is always written.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ssmvlm.utils.io import read_json
from ssmvlm.utils.progress import console

TRACKERS = ("tensorboard", "wandb")


def run_loggers(run_dir: str | Path) -> list[str]:
    """The trackers a trained run logged to (its config.json ``logging.loggers``), or none."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return []
    loggers = read_json(path).get("logging", {}).get("loggers", [])
    return [str(name) for name in loggers] if isinstance(loggers, list) else []


def scalars(results: Mapping[str, Any]) -> dict[str, float]:
    """Every number worth plotting in a results.json, by tracker key."""
    sources = {"model": results, **results.get("controls", {})}
    out: dict[str, float] = {}
    for source, summary in sources.items():
        for task, result in summary.get("tasks", {}).items():
            out[f"{source}/{task}/score"] = float(result["score"])
            low, high = result.get("ci95", (None, None))
            if low is not None:
                out[f"{source}/{task}/ci95_low"], out[f"{source}/{task}/ci95_high"] = float(low), float(high)
            for subset, part in result.get("breakdown", {}).items():
                out[f"{source}/{task}/{subset}"] = float(part["score"])
            for key, value in _numbers(result.get("metrics", {})):
                out[f"{source}/{task}/metrics/{key}"] = value
        for group, values in summary.get("aggregates", {}).items():
            for kind in ("weighted", "macro"):
                if kind in values:
                    out[f"{source}/aggregate/{group}/{kind}"] = float(values[kind])
    return out


def _numbers(tree: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from _numbers(value, f"{prefix}/{key}" if prefix else str(key))
    elif isinstance(tree, int | float) and not isinstance(tree, bool):
        yield prefix, float(tree)


def task_rows(results: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """(columns, rows) of the per-task table: task, group, n, then the score of the model and each control."""
    controls = results.get("controls", {})
    columns = ["task", "group", "n", "model", *controls]
    rows = []
    for name, task in results["tasks"].items():
        scores = [controls[c]["tasks"].get(name, {}).get("score") for c in controls]
        rows.append([name, task["group"], task["n"], task["score"], *scores])
    return columns, rows


def log_results(
    results: Mapping[str, Any],
    out_dir: str | Path,
    loggers: Sequence[str],
    *,
    name: str,
    config: Mapping[str, Any] | None = None,
) -> list[str]:
    """Send ``results`` to each of ``loggers``; returns the trackers written to."""
    from ssmvlm.eval.report import render_markdown
    from ssmvlm.train.metrics import importable

    out = Path(out_dir)
    values = scalars(results)
    columns, rows = task_rows(results)
    written = []
    for logger in dict.fromkeys(loggers):
        if logger not in TRACKERS:
            console.print(f"[yellow]warning:[/yellow] unknown logger {logger!r} ignored", highlight=False)
        elif not importable(logger):
            console.print(f"[yellow]warning:[/yellow] {logger} is not installed; not logged there", highlight=False)
        elif logger == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            with SummaryWriter(str(out / "tensorboard")) as writer:
                for key, value in values.items():
                    writer.add_scalar(f"eval/{key}", value, 0)
                writer.add_text("eval/results", render_markdown(dict(results)), 0)
            written.append(logger)
        else:
            import wandb

            run = wandb.init(dir=str(out), name=name, job_type="eval", config=dict(config or {}), reinit="create_new")
            run.log({f"eval/{key}": value for key, value in values.items()})
            run.log({"eval/tasks": wandb.Table(columns=columns, data=rows)})
            run.summary.update({f"eval/{key}": value for key, value in values.items()})
            run.finish()
            written.append(logger)
    return written
