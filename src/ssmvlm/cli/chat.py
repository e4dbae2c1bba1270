"""`ssmvlm chat`: Ask a trained VLM about an image."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Ask a trained VLM about an image.")


@app.callback(invoke_without_command=True)
def chat(
    run: Path = typer.Option(..., "--run", help="A trained run directory (ssmvlm train --out)."),
    image: Path | None = typer.Option(None, "--image", help="The image to ask about (none: text only)."),
    prompt: str = typer.Option(..., "--prompt", help="The question, as a user would type it."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens"),
    sample: bool = typer.Option(False, "--sample", help="Sample instead of greedy decoding."),
    temperature: float = typer.Option(1.0, "--temperature"),
    seed: int = typer.Option(0, "--seed", help="Seed for sampling."),
    device: str | None = typer.Option(None, "--device"),
) -> None:
    """Print the model's answer to PROMPT about IMAGE."""
    import torch

    from ssmvlm.data.images import open_image
    from ssmvlm.vlm import load_vlm

    torch.manual_seed(seed)
    vlm = load_vlm(run, device=device)
    picture = open_image(image) if image is not None else None
    answer = vlm.generate(
        [picture], [prompt], max_new_tokens=max_new_tokens, do_sample=sample, temperature=temperature
    )[0]
    typer.echo(answer)
