"""Opening dataset images safely: paths stay inside their data root, failures name the file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol

from PIL import Image, UnidentifiedImageError

from ssmvlm.utils.errors import DataError


def check_inside_root(
    relative: str | Path,
    root: str | Path,
    *,
    source: str | Path | None = None,
    record: str | int | None = None,
    field: str | None = None,
) -> Path:
    """``root / relative`` after checking that ``relative`` cannot leave ``root``.

    The check is lexical (absolute paths and ``..`` that climb above the root are refused) so that a data root
    holding symlinks to image folders elsewhere keeps working. ``source``/``record``/``field`` name where the
    path came from in the error message (defaults to the path itself).
    """
    text = os.fspath(relative)
    normalized = os.path.normpath(text)
    if os.path.isabs(text) or Path(text).drive or normalized == ".." or normalized.startswith(".." + os.sep):
        raise DataError(
            source if source is not None else text,
            f"image path {text!r} escapes the data root {os.fspath(root)!r}",
            record=record,
            field=field,
        )
    return Path(root) / normalized


class EncodedImage(Protocol):
    """An image stored inside another file (an image cell of a parquet shard); ``str()`` names where."""

    def open(self) -> BinaryIO: ...


ImageSource = str | Path | EncodedImage


def open_image(image: ImageSource, root: str | Path | None = None, *, record: str | int | None = None) -> Image.Image:
    """Open an image as RGB, fully decoded: a file, or an :class:`EncodedImage`.

    With ``root``, a path is relative to it and may not escape it (``..`` or an absolute path); without, it is
    opened as given (for paths already validated, such as :attr:`LlavaRecord.image`). A missing, unreadable or
    corrupt image raises a one-line :class:`DataError` naming it (and ``record``, when given).
    """
    with _reading(image, root, record) as opened:
        opened.load()  # decode now, so truncated files fail here and not deep inside a data loader
        return opened.convert("RGB")


def image_size(
    image: ImageSource, root: str | Path | None = None, *, record: str | int | None = None
) -> tuple[int, int]:
    """(width, height) read from the image's header, without decoding its pixels; errors as :func:`open_image`."""
    with _reading(image, root, record) as opened:
        return opened.size


@contextmanager
def _reading(image: ImageSource, root: str | Path | None, record: str | int | None) -> Iterator[Image.Image]:
    """``image`` opened by PIL; a missing file, or any failure to read or decode it within the block, is one
    DataError naming the image."""
    source: Path | BinaryIO
    if isinstance(image, str | Path):
        source = check_inside_root(image, root) if root is not None else Path(image)
        if not source.is_file():
            raise DataError(source, "image file not found", record=record)
        where: Path | EncodedImage = source
    else:
        where, source = image, image.open()
    try:
        with Image.open(source) as opened:
            yield opened
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(str(where), f"cannot decode image ({reason})", record=record) from None


SKIPPED_IMAGES_FILE = "skipped_images.txt"
NAMED_IN_WARNINGS = 3  # undecodable images a one-line warning names; the run folder's file lists them all


def undecodable_images(paths: list[Path], *, show_progress: bool = True) -> dict[int, str]:
    """``{index: reason}`` of the images in ``paths`` that fail to open and decode fully (checked one by one)."""
    from ssmvlm.utils.progress import progress_bar

    bad: dict[int, str] = {}
    with progress_bar(disable=not show_progress, transient=True) as progress:
        task = progress.add_task("decoding images", total=len(paths), status="")
        for index, path in enumerate(paths):
            try:
                open_image(path)
            except DataError as exc:
                bad[index] = str(exc)
            progress.advance(task)
    return bad


def describe_skipped_images(reasons: list[str], listed_in: Path | None = None) -> str:
    """One line naming the first few undecodable images (and where the full list is)."""
    named = "; ".join(reasons[:NAMED_IN_WARNINGS])
    more = f"; and {len(reasons) - NAMED_IN_WARNINGS} more" if len(reasons) > NAMED_IN_WARNINGS else ""
    where = f" (all listed in {listed_in})" if listed_in is not None else ""
    return f"{len(reasons)} undecodable image{'s' if len(reasons) != 1 else ''}: {named}{more}{where}"
