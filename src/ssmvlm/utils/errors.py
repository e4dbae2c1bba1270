"""Error types whose messages fit on one line and name what was wrong and where."""

from __future__ import annotations

from pathlib import Path


class SsmvlmError(Exception):
    """Base class for every error ssmvlm raises on purpose (bad input, bad config, bad checkpoint)."""


class DataError(SsmvlmError):
    """A data file or one of its records is malformed.

    The message names the file, the record (index or id) and the field, and says what was expected,
    so that a user can fix the input without reading a traceback.
    """

    def __init__(
        self,
        file: str | Path,
        message: str,
        *,
        record: str | int | None = None,
        field: str | None = None,
    ) -> None:
        self.file = str(file)
        self.record = record
        self.field = field
        where = self.file
        if record is not None:
            where += f" record {record}"
        if field is not None:
            where += f" field '{field}'"
        super().__init__(f"{where}: {message}")


class ConfigError(SsmvlmError):
    """A configuration key is unknown, mistyped or takes a value outside its allowed set."""

    def __init__(self, key_path: str, message: str, allowed: list[str] | None = None) -> None:
        self.key_path = key_path
        self.allowed = allowed
        text = f"{key_path}: {message}"
        if allowed:
            text += f" (allowed: {', '.join(map(str, allowed))})"
        super().__init__(text)


class CheckpointError(SsmvlmError):
    """A checkpoint cannot be read safely or does not fit the architecture it is loaded into."""


class StorageError(SsmvlmError):
    """A write failed for lack of space (or quota); files written before it are left intact."""


class TrainingDivergedError(SsmvlmError):
    """A non-finite loss; the message names the step, the batch and the last good checkpoint."""
