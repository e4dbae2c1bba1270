"""`ssmvlm bench`: Measure encoder and VLM cost."""

from __future__ import annotations

import typer

app = typer.Typer(help="Measure encoder and VLM cost.", no_args_is_help=True)
