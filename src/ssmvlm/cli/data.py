"""`ssmvlm data`: Make, inspect and validate datasets (ShapeScenes, LLaVA, evaluation sets)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Make, inspect and validate datasets (ShapeScenes, LLaVA, evaluation sets).", no_args_is_help=True)
