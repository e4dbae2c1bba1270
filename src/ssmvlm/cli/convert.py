"""`ssmvlm convert`: the paper release's and prismatic-vlms' run folders ↔ ssmvlm runs."""

from __future__ import annotations

from pathlib import Path

import typer

from ssmvlm.utils.progress import console

app = typer.Typer(help="Convert release/prismatic-vlms run folders to ssmvlm runs and back.", no_args_is_help=True)


@app.command("from-release")
def from_release(
    src: Path = typer.Argument(..., help="A release or prismatic run folder (config.json, checkpoints/)."),
    out: Path = typer.Option(..., "--out", help="The ssmvlm run folder to write (new or empty)."),
    llm: Path = typer.Option(..., "--llm", help="Local Hugging Face folder with the LLM's config and tokenizer."),
    vision_checkpoint: str | None = typer.Option(
        None, "--vision-checkpoint", help="The encoder's upstream weights (DINO,SIGLIP files for a fused pair)."
    ),
) -> None:
    """Write SRC as an ssmvlm run that `ssmvlm chat/evaluate --run` read."""
    from ssmvlm.convert import from_release as convert

    result = convert(src, out, llm_dir=llm, vision_checkpoint=vision_checkpoint)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)
    console.print(f"wrote {result.path}", highlight=False)


@app.command("to-release")
def to_release(
    run: Path = typer.Argument(..., help="An ssmvlm run folder (ssmvlm train --out, or a converted one)."),
    out: Path = typer.Option(..., "--out", help="The release/prismatic run folder to write (new or empty)."),
    llm_backbone_id: str | None = typer.Option(
        None, "--llm-backbone-id", help="prismatic's id of the run's LLM (default: the converted source's)."
    ),
    model_id: str | None = typer.Option(None, "--model-id", help="model_id for config.json."),
) -> None:
    """Write RUN as config.json + checkpoints/latest-checkpoint.pt (prismatic's layout)."""
    from ssmvlm.convert import to_release as convert

    result = convert(run, out, llm_backbone_id=llm_backbone_id, model_id=model_id)
    console.print(f"wrote {result.path}", highlight=False)
