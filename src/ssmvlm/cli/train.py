"""`ssmvlm train`: Train a VLM (frozen encoder, connector, LLM) with a fixed recipe."""

from __future__ import annotations

import os
from pathlib import Path

import typer

# A callback, not a sub-command, so that `ssmvlm train [overrides...] --out DIR` takes options anywhere.
app = typer.Typer(
    help="Train a VLM (frozen encoder, connector, LLM) with a fixed recipe.",
    context_settings={"allow_interspersed_args": True},
)


@app.callback(invoke_without_command=True)
def train(
    overrides: list[str] = typer.Argument(
        None, help="Config overrides: key.path=value (e.g. model.backbone=vmamba_nano)."
    ),
    out: Path = typer.Option(..., "--out", help="Run directory (config, tokenizer, checkpoints, weights, metrics)."),
    config: str | None = typer.Option(None, "--config", help="A TrainConfig YAML file, or a preset (shapes-cpu)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its latest checkpoint."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Count and skip bad records and images."),
    stop_after: int | None = typer.Option(None, "--stop-after", help="Checkpoint and stop after this many steps."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    threads: int | None = typer.Option(
        None, "--threads", help="CPU threads for torch (default: one per core); recorded in run.json."
    ),
) -> None:
    """Train a VLM. Several GPUs: `torchrun --nproc-per-node N --no-python ssmvlm train ...`."""
    from ssmvlm.utils.threads import set_threads

    set_threads(threads)
    from ssmvlm.config import load_config
    from ssmvlm.train import TrainConfig, train_vlm
    from ssmvlm.train.recipe import resolve_config_path
    from ssmvlm.utils.progress import console

    items = list(overrides or [])
    if skip_bad:
        items.append("data.skip_bad=true")
    train_config = load_config(TrainConfig, resolve_config_path(config) if config else None, items)
    run_dir = train_vlm(train_config, out, resume=resume, stop_after=stop_after, show_progress=not quiet)
    if os.environ.get("RANK", "0") == "0":
        console.print(f"run written to {run_dir}", highlight=False)
