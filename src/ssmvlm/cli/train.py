"""`ssmvlm train`: Train a VLM (frozen encoder, connector, LLM) with a fixed recipe."""

from __future__ import annotations

import typer

app = typer.Typer(help="Train a VLM (frozen encoder, connector, LLM) with a fixed recipe.", no_args_is_help=True)
