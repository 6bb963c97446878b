"""Errors a user can cause. The CLI prints them as one line, without a traceback."""

from __future__ import annotations


class VaekitError(Exception):
    """A mistake a user can make and fix: bad path, bad file, bad option, bad checkpoint.

    The message is one line that names the thing and says how to fix it. Bugs are
    never wrapped in this class: they still raise with a traceback.
    """


class ConfigError(VaekitError):
    """A configuration key with a bad name, type or value."""


class DataError(VaekitError):
    """A dataset that is missing, malformed or out of range."""


class CheckpointError(VaekitError):
    """A checkpoint or resume state that is missing, corrupt or does not match."""


class DownloadError(VaekitError):
    """A file that could not be downloaded (offline, unreachable, truncated) or that did
    not match its SHA-256; nothing partial is kept."""


class TrainingInterrupted(VaekitError):
    """Training stopped by SIGINT/SIGTERM after saving; `exit_code` is 128 + signal."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class TrainingDiverged(VaekitError):
    """Too many consecutive non-finite updates; the last good checkpoint is kept."""
