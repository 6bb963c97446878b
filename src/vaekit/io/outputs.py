"""Where a command writes: checked before it loads data or trains, so that a bad --out is
one line at once instead of a traceback after minutes of work; and `write_numbers`, the
.npy / .npz / .csv / .parquet files of numbers that sample and reconstruct write.

A usable output location is a directory (existing, or creatable under the nearest existing
one) that this process can create files in; a path through a dangling symlink, a symlink
loop or a regular file is none. Writability is tested by creating (and removing) a
temporary file, the one test that also holds for root and for read-only mounts.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

from ..errors import ConfigError, require
from . import fileio


def _where(what: str, path: Path, p: Path) -> str:
    """How a message names `p`, a part of the output `path`."""
    return f"{what} {path}" if p == path else f"{what} {path}: {p}"


def _broken_link(path: Path, what: str, p: Path) -> ConfigError | None:
    """The error for `p` (`path` or one of its parents) as a symlink to nowhere, else None."""
    if not os.path.islink(p) or os.path.exists(p):
        return None
    try:
        os.stat(p)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return ConfigError(f"{_where(what, path, p)} is a symlink loop; choose another {what}")
    return ConfigError(
        f"{_where(what, path, p)} is a symlink to {os.readlink(p)}, which does not exist; "
        f"create it or choose another {what}"
    )


def _nearest_directory(path: Path, what: str, start: Path) -> Path:
    """The nearest existing one of `start` and its parents; it must be a directory."""
    for p in (start, *start.parents):
        error = _broken_link(path, what, p)
        if error is not None:
            raise error
        if os.path.exists(p):
            if not p.is_dir():
                raise ConfigError(
                    f"{_where(what, path, p)} is a file, not a directory; choose another {what}"
                )
            return p
    return Path.cwd()  # not reached: a relative path ends in ".", an absolute one in "/"


def _probe(directory: Path, what: str, path: Path, name: str = "probe") -> None:
    """Create and remove a temporary file named as fileio's for `name` would be, so that
    a name too long for the file system is caught here too."""
    try:
        fd, name = tempfile.mkstemp(prefix=f"{fileio.TMP_PREFIX}{name}.", dir=directory)
    except OSError as e:
        raise ConfigError(
            f"{what} {path}: cannot create files in {directory} ({e.strerror}); choose a "
            f"writable {what}"
        ) from None
    os.close(fd)
    Path(name).unlink(missing_ok=True)


def check_dir(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """`path` as an output directory: an existing one, or one that can be created."""
    path = Path(path)
    with _os_errors(what, path):
        nearest = _nearest_directory(path, what, path)
        _check_names(path, what, nearest)
        _probe(nearest, what, path)
    return path


def _check_names(path: Path, what: str, directory: Path) -> None:
    """Every part of `path` short enough for the file system (the directories yet to be
    created are not probed by a file)."""
    try:
        longest = os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):
        longest = 255
    for part in path.parts:
        if len(os.fsencode(part)) > longest:
            raise ConfigError(
                f"{what} {str(path)[:100]}...: a name of {len(part)} characters is longer than "
                f"the {longest} this file system allows; choose another {what}"
            )


@contextlib.contextmanager
def _os_errors(what: str, path: Path) -> Iterator[None]:
    """What the file system says about `path` itself (a name too long, a loop) as one line."""
    try:
        yield
    except OSError as e:
        raise ConfigError(
            f"{what} {str(path)[:200]}: {e.strerror or e}; choose another {what}"
        ) from None


def make_dir(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """`check_dir`, then create the directory (and its parents)."""
    path = check_dir(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # changed since the check, or a limit (name length, quota)
        raise ConfigError(f"{what} {path}: cannot create it ({e.strerror})") from None
    return path


def check_file(path: str | os.PathLike[str], what: str = "--out", example: str = "out.png") -> Path:
    """`path` as an output file: not a directory, in a directory that can hold it."""
    path = Path(path)
    with _os_errors(what, path):
        if path.is_dir():
            raise ConfigError(f"{what} {path} is a directory; name a file, e.g. {path / example}")
        error = _broken_link(path, what, path)
        if error is not None:
            raise error
        _probe(_nearest_directory(path, what, path.parent), what, path, path.name)
    return path


NUMBERS = (".npy", ".npz", ".csv", ".parquet")  # what a command writes numbers to


def write_numbers(path: Path, arrays: dict[str, np.ndarray], columns: Sequence[str] = ()) -> None:
    """Arrays a command computed, by `path`'s suffix: .npy the first one, .npz all of them
    by name, .csv / .parquet the first one as a table of rows (N, F) under `columns` (names
    of the training table's columns; x0, x1, ... when unknown). Written atomically."""
    import numpy as np

    first = next(iter(arrays.values()))
    buffer = io.BytesIO()
    if path.suffix == ".npy":
        np.save(buffer, first, allow_pickle=False)
    elif path.suffix == ".npz":
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
    elif path.suffix in (".csv", ".parquet"):
        rows = first.reshape(first.shape[0], -1)
        names = list(columns) if len(columns) == rows.shape[1] else []
        frame = _frame(rows, names or [f"x{i}" for i in range(rows.shape[1])], path)
        if path.suffix == ".csv":
            frame.to_csv(buffer, index=False)
        else:
            frame.to_parquet(buffer, index=False)
    else:
        raise ConfigError(f"--out {path}: write numbers to {', '.join(NUMBERS)}")
    fileio.write_bytes(path, buffer.getvalue())


def _frame(rows: np.ndarray, names: list[str], path: Path) -> Any:
    pd = require("tables", "pandas", f"writing {path.suffix} files")
    if path.suffix == ".parquet":
        require("tables", "pyarrow", "writing .parquet files")
    return pd.DataFrame(rows, columns=names)
