"""Errors a user can cause. The CLI prints them as one line, without a traceback.

Two helpers make such lines everywhere: `first_line(e)`, an exception's message as a
line, and `require(extra, module, what)`, an optional extra imported or named in one
line (not installed, or installed but not importable, with the reason)."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any


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


def first_line(error: BaseException, named: bool = False) -> str:
    """An exception's message on one line: its first line, or its type's name when it has
    none; `named` puts the type's name in front ("OSError: disk full")."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else ""
    kind = type(error).__name__
    if not line:
        return kind
    return f"{kind}: {line}" if named else line


def require(
    extra: str,
    module: str,
    what: str,
    *,
    attribute: str = "",
    package: str = "",
    also: str = "",
    error: type[VaekitError] = ConfigError,
) -> Any:
    """`module` of the optional extra `vaekit[extra]`, imported (or its `attribute`, which a
    lazily importing package such as diffusers imports only then); or `error` in one line:
    "`what` needs `package`: pip install 'vaekit[extra]'`also`" where it is not installed,
    "... is installed but cannot be imported: <why>" where it is there but does not import
    (a dependency missing or broken beside this torch). `package` names what to install
    where the module's top-level name does not ("the datasets library")."""
    top = module.split(".")[0]
    name = package or top
    try:
        imported = importlib.import_module(module)
        return getattr(imported, attribute) if attribute else imported
    except Exception as e:  # absent, or installed but broken (a torchvision unfit for torch)
        if isinstance(e, ModuleNotFoundError) and not _installed(top):
            raise error(f"{what} needs {name}: pip install 'vaekit[{extra}]'{also}") from None
        raise error(f"{name} is installed but cannot be imported: {first_line(e)}") from None


def _installed(package: str) -> bool:
    """Whether the top-level `package` is there to import (None in sys.modules: not)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # ValueError: a module object without a spec
        return False
