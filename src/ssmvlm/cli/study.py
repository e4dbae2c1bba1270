"""`ssmvlm study`: Run a whole encoder study and write its report.

``ssmvlm study --preset quick --out runs/quick`` runs a study; ``key.path=value`` words anywhere on the line
override the spec (``ssmvlm study --preset quick seeds=[0,1]``); ``ssmvlm study report DIR`` rebuilds the
report of a study directory from its finished runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import typer
from typer.core import TyperGroup

_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


class _StudyGroup(TyperGroup):
    """A group whose own invocation also takes ``key=value`` spec overrides as bare words."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["study_overrides"] = [a for a in args if _OVERRIDE.match(a)]
        return super().parse_args(ctx, [a for a in args if not _OVERRIDE.match(a)])


app = typer.Typer(
    cls=_StudyGroup,
    help="Run a whole encoder study and write its report: ssmvlm study --preset quick [KEY=VALUE ...]. "
    "KEY=VALUE words override the spec (e.g. seeds=[0,1] eval.limit=50); "
    "ssmvlm study report DIR rebuilds the report of a finished or interrupted study.",
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def study(
    ctx: typer.Context,
    preset: str | None = typer.Option(None, "--preset", help="A packaged study: quick (CPU) or paper (GPUs)."),
    spec_file: Path | None = typer.Option(None, "--spec", help="A study spec YAML file."),
    out: Path | None = typer.Option(None, "--out", help="Study directory (default: runs/<preset or spec name>)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the run matrix; run nothing."),
    gpus: int | None = typer.Option(None, "--gpus", help="GPUs to use; more than one runs one worker per GPU."),
    launcher: str | None = typer.Option(None, "--launcher", help="local or submitit (Slurm)."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda (overrides execution.device)."),
) -> None:
    """Run a study: KEY=VALUE words override the spec (e.g. seeds=[0,1] eval.limit=50)."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.markup import escape
    from rich.table import Table

    from ssmvlm.study.matrix import STAGES
    from ssmvlm.study.runner import dry_run_listing, run_study
    from ssmvlm.study.spec import load_spec
    from ssmvlm.utils.errors import ConfigError
    from ssmvlm.utils.progress import console

    if preset is None and spec_file is None:
        raise ConfigError("study", "give --preset NAME or --spec FILE (see ssmvlm study --help)")
    overrides = list(ctx.meta.get("study_overrides", []))
    for key, value in (
        ("execution.gpus", gpus),
        ("execution.launcher", launcher),
        ("execution.device", device),
    ):
        if value is not None:
            overrides.append(f"{key}={value}")
    spec = load_spec(spec_file, preset=preset, overrides=overrides)
    out = out or Path("runs") / (preset or (spec_file.stem if spec_file else spec.name))
    if dry_run:
        rows = dry_run_listing(spec, out)
        table = Table(title=f"study {spec.name}: {len(rows)} cells in {out}")
        for column in ("stage", "id", "cell", "complete"):
            table.add_column(column)
        for row in rows:
            table.add_row(row["stage"], row["id"], escape(row["describe"]), "yes" if row["complete"] else "")
        console.print(table)
        counts = {stage: sum(r["stage"] == stage for r in rows) for stage in STAGES}
        console.print(
            "cells per stage: "
            + ", ".join(f"{k} {v}" for k, v in counts.items())
            + " (stabilization ablations are planned after the main cells, from the diagnosis)"
        )
        return
    outcome = run_study(spec, out)
    report = next((p for p in outcome.report_files if p.name == "report.html"), None)
    console.print(
        f"study {spec.name}: {len(outcome.matrix)} cells, {len(outcome.failed)} failed or blocked, "
        f"{len(outcome.ablations)} ablation runs, {outcome.seconds / 60:.1f} min; report: {report}"
    )
    if outcome.failed:
        console.print("[red]failed cells:[/red] " + ", ".join(outcome.failed) + " (see runs/<stage>/<id>/error.txt)")
        raise typer.Exit(1)


@app.command("report")
def report(out: Path = typer.Argument(..., help="A study directory (holds spec.yaml and runs/).")) -> None:
    """Rebuild a study's report (report.md, report.html, results.csv, figures) from its finished runs."""
    from ssmvlm.study.runner import rebuild_report
    from ssmvlm.utils.progress import console

    for path in rebuild_report(out):
        console.print(f"wrote {path}")
