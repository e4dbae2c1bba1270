"""`ssmvlm evaluate`: Evaluate a trained VLM on VQA and grounding tasks."""

from __future__ import annotations

import typer

app = typer.Typer(help="Evaluate a trained VLM on VQA and grounding tasks.", no_args_is_help=True)
