"""Progress bars on a terminal only: redirected to a file or a pipe, a bar's every refresh
would be one more line of the log (training's per-epoch line says the same once)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm


def interactive() -> bool:
    """True where a person watches: a terminal on stderr, or a Jupyter kernel."""
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) or in_kernel()


def in_kernel() -> bool:
    """Whether this process is a running Jupyter kernel: IPython's shell with a kernel, not
    merely ipykernel imported (a notebook runner, or pytest after a notebook test, imports
    it without being one)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def bar(iterable: Iterable[Any] | None = None, *, show: bool = True, **kwargs: Any) -> tqdm:
    """tqdm, shown only when `show` and someone watches (see `interactive`)."""
    return tqdm(iterable, disable=not (show and interactive()), **kwargs)
