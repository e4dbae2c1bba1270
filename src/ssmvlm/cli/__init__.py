"""The ``ssmvlm`` command line: one typer app, one sub-app per stage of a study.

Each group lives in its own module and imports heavy dependencies (torch, timm, transformers) inside its
commands, so ``ssmvlm --help`` stays fast.
"""

from __future__ import annotations

import errno
import os

import typer
from rich.markup import escape

from ssmvlm import __version__
from ssmvlm.cli import bench, chat, convert, data, evaluate, predict, pretrain, study, train, zoo
from ssmvlm.utils.errors import SsmvlmError
from ssmvlm.utils.progress import console

app = typer.Typer(
    name="ssmvlm",
    help="Controlled vision-encoder studies for LLaVA-style VLMs (SSM encoders first-class).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(data.app, name="data")
app.add_typer(zoo.app, name="zoo")
app.add_typer(pretrain.app, name="pretrain")
app.add_typer(train.app, name="train")
app.add_typer(evaluate.app, name="evaluate")
app.add_typer(chat.app, name="chat")
app.add_typer(predict.app, name="predict")
app.add_typer(study.app, name="study")
app.add_typer(bench.app, name="bench")
app.add_typer(convert.app, name="convert")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ssmvlm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Controlled vision-encoder studies for LLaVA-style VLMs."""


def main() -> None:
    """Entry point: ssmvlm's own errors print as one red line and exit with status 2, without a traceback."""
    try:
        app()
    except SsmvlmError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    except OSError as exc:
        # A full disk met by a writer other than ssmvlm's own (a library saving a file): still one line.
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        console.print(f"[red]error:[/red] {escape(where + 'cannot write (' + os.strerror(exc.errno) + ')')}")
        raise SystemExit(2) from None
