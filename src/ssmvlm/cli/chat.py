"""`ssmvlm chat`: Ask a trained VLM about an image."""

from __future__ import annotations

import typer

app = typer.Typer(help="Ask a trained VLM about an image.", no_args_is_help=True)
