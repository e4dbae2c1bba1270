"""`ssmvlm study`: Run a whole encoder study and write its report."""

from __future__ import annotations

import typer

app = typer.Typer(help="Run a whole encoder study and write its report.", no_args_is_help=True)
