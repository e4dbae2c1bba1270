"""`ssmvlm predict`: Answer a JSONL of {image, prompt} records with a trained VLM."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Answer a JSONL of {image, prompt} records with a trained VLM.", no_args_is_help=True)


@app.callback(invoke_without_command=True)
def predict(
    run: Path = typer.Option(..., "--run", help="A trained run directory (ssmvlm train --out)."),
    input: Path = typer.Option(
        ..., "--input", help="JSONL of {image, prompt} (optional id); image paths relative to this file."
    ),
    out: Path = typer.Option(..., "--out", help="JSONL of predictions, appended as made; a rerun resumes it."),
    batch_size: int = typer.Option(8, "--batch-size"),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="Greedy decoding length limit."),
    device: str | None = typer.Option(None, "--device"),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Write one {id, image, prompt, prediction} line per input record to OUT."""
    from ssmvlm.eval.predict import predict_records, read_records
    from ssmvlm.utils.progress import console
    from ssmvlm.vlm import load_vlm

    records = read_records(input)  # every record is checked before the model is loaded
    summary = predict_records(
        load_vlm(run, device=device),
        records,
        input,
        out,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        show_progress=not quiet,
    )
    console.print(
        f"{summary['predicted']} predicted, {summary['already_done']} already in {out} ({summary['records']} records)",
        highlight=False,
    )
