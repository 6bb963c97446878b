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
    return bool(getattr(stream, "isatty", lambda: False)()) or "ipykernel" in sys.modules


def bar(iterable: Iterable[Any] | None = None, *, show: bool = True, **kwargs: Any) -> tqdm:
    """tqdm, shown only when `show` and someone watches (see `interactive`)."""
    return tqdm(iterable, disable=not (show and interactive()), **kwargs)
