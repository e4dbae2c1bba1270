"""`ssmvlm chat`: Ask a trained VLM about an image."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(help="Ask a trained VLM about an image: one question, or a conversation (no --prompt).")


@app.callback(invoke_without_command=True)
def chat(
    run: Path = typer.Option(..., "--run", help="A trained run directory (ssmvlm train --out)."),
    image: Path | None = typer.Option(None, "--image", help="The image to ask about (none: text only)."),
    prompt: str | None = typer.Option(
        None, "--prompt", help="The question, as a user would type it (none: a conversation read from stdin)."
    ),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens"),
    sample: bool = typer.Option(False, "--sample", help="Sample instead of greedy decoding."),
    temperature: float = typer.Option(1.0, "--temperature"),
    seed: int = typer.Option(0, "--seed", help="Seed for sampling."),
    device: str | None = typer.Option(None, "--device"),
) -> None:
    """Print the model's answer to PROMPT about IMAGE; without --prompt, hold a conversation line by line.

    In a conversation each stdin line is one user turn and each answer one stdout line; the model sees the
    whole conversation (Vicuna v1.5 turns) and the image is encoded once. ``/reset`` starts over with the same
    image; ``/exit`` or end of input ends it.
    """
    import torch

    from ssmvlm.data.images import open_image
    from ssmvlm.vlm import load_vlm

    torch.manual_seed(seed)
    vlm = load_vlm(run, device=device)
    picture = open_image(image) if image is not None else None
    if prompt is None:
        _conversation(vlm, picture, max_new_tokens=max_new_tokens, do_sample=sample, temperature=temperature)
        return
    answer = vlm.generate(
        [picture], [prompt], max_new_tokens=max_new_tokens, do_sample=sample, temperature=temperature
    )[0]
    typer.echo(answer)


def _conversation(vlm: Any, picture: Any, **generation: Any) -> None:
    from ssmvlm.utils.progress import console
    from ssmvlm.vlm.conversation import Conversation

    conversation = Conversation(vlm, picture)
    interactive = sys.stdin.isatty()
    if interactive:
        console.print("[dim]one message per line; /reset starts over, /exit or Ctrl-D ends[/dim]")
    while True:
        if interactive:
            console.print("[bold]you>[/bold] ", end="")
        line = sys.stdin.readline()
        message = line.strip()
        if not line or message == "/exit":
            return
        if message == "/reset":
            conversation.turns.clear()
        elif message:
            typer.echo(conversation.ask(message, **generation))
