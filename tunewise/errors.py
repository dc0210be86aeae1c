"""User-facing errors: the CLI prints their message and exits 1 (a `Stopped` run: 128 + the signal), with no
traceback.

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


class DiskFull(TunewiseError):
    """A write found the disk (or the user's quota) full; what was there before is unchanged
    (`tunewise.runs.atomic` writes every run-folder file whole or not at all)."""

    def __init__(self, message: str, path: object = None, needed: int | None = None, free: int | None = None):
        super().__init__(message)
        self.path, self.needed, self.free = path, needed, free


class Stopped(TunewiseError):
    """Training stopped on a signal (SIGTERM from a scheduler, Ctrl-C) after writing a checkpoint; `--resume`
    continues it. The CLI exits with `exit_code`: 128 + the signal's number, as a shell reports a process a
    signal ended (143 for SIGTERM, 130 for SIGINT), so a scheduler sees that the job did not finish. The
    message ends with RESUME_HINT, which the CLI replaces with the command it ran."""

    RESUME_HINT = "tunewise train CONFIG --resume"

    def __init__(self, message: str, signal_number: int, step: int):
        super().__init__(message)
        self.signal_number, self.step = signal_number, step
        self.exit_code = 128 + signal_number
