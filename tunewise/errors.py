"""User-facing errors: the CLI prints their message and exits 1, with no traceback.

Raise `TunewiseError` for anything the user can fix (a path, a column, a config value) and say
what to change; a bare exception is reserved for bugs in tunewise itself.
"""

from __future__ import annotations


def first_line(error: BaseException, limit: int | None = None) -> str:
    """An exception's message cut to its first line (and to `limit` characters), short enough to quote inside
    one of ours; its type's name when it has no message."""
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else type(error).__name__


class TunewiseError(Exception):
    """A problem with the user's input, with a message that names the fix."""


class ConfigError(TunewiseError):
    """The configuration is invalid or inconsistent with the model or data."""


class DataError(TunewiseError):
    """A data file is missing, unreadable or inconsistent with the config."""


class ExportRefused(TunewiseError):
    """An exported model that loses more of the run's quality than the tolerance allows; nothing was
    written. `result` holds every measurement behind the refusal (what export.json would have said)."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result
