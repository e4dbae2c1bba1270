"""`ssmvlm pretrain`: Matched backbone initialization: classification pretraining and dense adaptation."""

from __future__ import annotations

import typer

app = typer.Typer(help="Matched backbone initialization: classification pretraining and dense adaptation.", no_args_is_help=True)
