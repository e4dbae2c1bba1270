"""One process per output folder: an advisory ``fcntl.flock`` on a lock file inside it.

The kernel drops the lock when its holder exits in any way (SIGKILL included), so a killed run never leaves a
stale lock behind; a second process on the same folder is refused at once with the holder's pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from ssmvlm.utils.errors import ConfigError

LOCK_FILE = ".ssmvlm.lock"


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str) -> Iterator[Path]:
    """Hold the lock of ``folder`` for the ``with`` block; ``what`` names the command in the refusal."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    # Opened without truncation: the pid inside belongs to the holder until this process owns the lock.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise ConfigError(
                "--out",
                f"{folder} is in use by another {what} (pid {holder}, lock {path}); wait for it to finish or "
                "pick another --out",
            ) from None
        # The lock file is rewritten in place, not atomically: replacing it would give a new file another
        # process could lock at the same time.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock
