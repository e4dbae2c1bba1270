"""`ssmvlm zoo`: The vision backbone zoo: list backbones and inspect one."""

from __future__ import annotations

import typer

app = typer.Typer(help="The vision backbone zoo: list backbones and inspect one.", no_args_is_help=True)
