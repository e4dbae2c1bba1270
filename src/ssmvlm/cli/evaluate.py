"""`ssmvlm evaluate`: Evaluate a trained VLM on VQA and grounding tasks."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Evaluate a trained VLM on VQA and grounding tasks.", no_args_is_help=True)


def _parse_data(value: str) -> Path | dict[str, Path]:
    """``DIR`` or ``family=DIR,family=DIR`` (e.g. ``vqav2=/data/vqav2,pope=/data/pope``)."""
    if "=" not in value:
        return Path(value)
    pairs = [item.split("=", 1) for item in value.split(",") if item]
    return {family.strip(): Path(path) for family, path in pairs}


@app.callback(invoke_without_command=True)
def evaluate(
    run: Path = typer.Option(..., "--run", help="Run directory of a trained VLM."),
    tasks: str = typer.Option(
        "shapes-vqa,shapes-pope,shapes-refexp", "--tasks", help="Comma-separated task names."
    ),
    data: str = typer.Option(
        ..., "--data", help="Dataset root DIR, or family=DIR pairs separated by commas."
    ),
    split: str = typer.Option("test", "--split", help="Split of split-aware datasets (ShapeScenes)."),
    limit: int | None = typer.Option(None, "--limit", help="Deterministic subsample of N examples per task."),
    batch_size: int = typer.Option(16, "--batch-size"),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default RUN/eval)."),
    controls: bool = typer.Option(
        True, "--controls/--no-controls", help="Also run the blind and prior controls."
    ),
    box_convention: str | None = typer.Option(
        None, "--box-convention", help="Primary box frame: raw or model (default: the one the model answers in)."
    ),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="Greedy decoding length limit."),
    device: str | None = typer.Option(None, "--device"),
    seed: int = typer.Option(0, "--seed"),
    threads: int | None = typer.Option(
        None, "--threads", help="CPU threads for torch (default: one per core); recorded in run.json."
    ),
    loggers: str | None = typer.Option(
        None,
        "--loggers",
        help="Trackers for the results, comma-separated: tensorboard, wandb (default: the run's logging.loggers; "
        "'' for none).",
    ),
) -> None:
    """Evaluate RUN on TASKS; writes predictions.jsonl, results.json, results.md and run.json."""
    from ssmvlm.utils.threads import set_threads

    set_threads(threads)
    from ssmvlm.eval.report import render_markdown
    from ssmvlm.eval.runner import evaluate_run
    from ssmvlm.utils.seed import seed_everything

    seed_everything(seed)
    results = evaluate_run(
        run,
        [t.strip() for t in tasks.split(",") if t.strip()],
        _parse_data(data),
        device=device,
        out_dir=out,
        split=split,
        limit=limit,
        batch_size=batch_size,
        controls=controls,
        seed=seed,
        box_convention=box_convention,
        max_new_tokens=max_new_tokens,
        loggers=None if loggers is None else [name.strip() for name in loggers.split(",") if name.strip()],
    )
    typer.echo(render_markdown(results))
