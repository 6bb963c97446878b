"""How an error names an option: as the command line spells it (`--resume`) while a CLI
command runs, as Python spells it (`resume=True`, `config.train.out`) when the library is
called from Python. The CLI wraps each command in `command_line()`; library code asks
`option(name)` when it words a fix, so one message serves both."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_CLI: ContextVar[bool] = ContextVar("vaekit_command_line", default=False)

# name -> (the CLI's spelling, Python's)
SPELLINGS = {
    "resume": ("--resume", "resume=True"),
    "overwrite": ("--overwrite", "overwrite=True"),
    "out": ("--out", "config.train.out"),
    "device": ("--device", "config.train.device"),
    "batch_size": ("--batch-size", "config.train.batch_size"),
    "epochs": ("--epochs", "config.train.epochs"),
    "lr": ("--lr", "config.optim.lr"),
}


@contextlib.contextmanager
def command_line() -> Iterator[None]:
    """Within this block, errors name the command line's flags."""
    token = _CLI.set(True)
    try:
        yield
    finally:
        _CLI.reset(token)


def on_command_line() -> bool:
    return _CLI.get()


def option(name: str, value: object = None) -> str:
    """`name` as the caller spells it; with `value`, set to it (`--device cpu`,
    `config.train.device='cpu'`)."""
    cli, python = SPELLINGS[name]
    if value is None:
        return cli if _CLI.get() else python
    return f"{cli} {value}" if _CLI.get() else f"{python}={value!r}"


def setting(key: str, value: object, cli_text: str) -> str:
    """A config key set to `value`, as the caller passes it: `--model.channels 8,16` on the
    command line (`cli_text`), `{'model.channels': [8, 16]}` (an override) in Python."""
    return f"--{key} {cli_text}" if _CLI.get() else f"{{{key!r}: {value!r}}}"
