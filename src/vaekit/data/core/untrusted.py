"""Reading data files that may be hostile: only regular files are opened, and what a
file's header claims is bounded before anything is decompressed or allocated.

A FIFO or a device named like an image would block a reader forever or never end; a few
megabytes of compressed zeros, or an .npy header that lies about its shape, must not
become gigabytes of memory (or a kill by the kernel with no message). Each is refused in
one line naming the file, with the claimed size and the limit.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from ...errors import DataError, first_line
from ...limits import address_space_limit, human_bytes, physical_memory

# One dataset may take at most this fraction of the machine's memory (or of the process's
# address-space limit, when lower): the rest is left to the model and the training step.
MEMORY_FRACTION = 0.5
# ... but never less than this, so that a machine that reports little memory still loads
# small datasets.
MEMORY_FLOOR = 1 << 30
# Labels are class indices 0..K-1; more classes than this is a mislabelled file (a class
# list of 10^12 names would not fit in memory).
MAX_CLASSES = 1 << 16

_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}

# bytes per example that vaekit's bookkeeping takes before any row is read: the seeded
# permutation, the sorted train and test indices, the labels and the streaming index
INDEX_BYTES = 40


def memory_limit() -> int:
    """The most bytes one dataset's arrays may take: MEMORY_FRACTION of the smaller of
    physical memory and RLIMIT_AS, at least MEMORY_FLOOR."""
    known = [m for m in (physical_memory(), address_space_limit()) if m is not None]
    return max(MEMORY_FLOOR, int(min(known) * MEMORY_FRACTION))


def check_index_memory(name: str, n: int) -> None:
    """Refuse a source of `n` examples whose indices alone (INDEX_BYTES each) would pass
    the memory limit, before any index is built (a __len__ of 10**9 asks for 40 GB)."""
    needed, limit = n * INDEX_BYTES, memory_limit()
    if needed > limit:
        raise DataError(
            f"{name} has {n:,} examples: indexing them would need about "
            f"{human_bytes(needed)} of memory, over the limit of {human_bytes(limit)}; give "
            f"at most {limit // INDEX_BYTES:,} (torch.utils.data.Subset takes a part)"
        )


def over_limit(what: str, needed: int, limit: int) -> DataError:
    """The one-line refusal of `what` (a file, or file:array) that needs `needed` bytes."""
    return DataError(
        f"{what} would need about {human_bytes(needed)} of memory once decompressed, over "
        f"the limit of {human_bytes(limit)} ({MEMORY_FRACTION:.0%} of this machine's "
        "memory); use a smaller file"
    )


def open_regular(path: str | Path) -> IO[bytes]:
    """`path` opened for binary reading, only if it is a regular file (links followed).

    Checked before opening (opening a FIFO blocks until a writer comes, opening a device
    may act on it) and again on the open descriptor, which is opened non-blocking so that
    a FIFO swapped in between cannot block either. Raises DataError naming the file for
    anything else; OSError (FileNotFoundError, PermissionError ...) as open() would.
    """
    _require_regular(path, os.stat(path).st_mode)
    nonblock = getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, os.O_RDONLY | nonblock | getattr(os, "O_BINARY", 0))
    try:
        _require_regular(path, os.fstat(fd).st_mode)
        if nonblock:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _require_regular(path: str | Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise DataError(f"{path}: not a regular file ({kind}); only regular files are read")


@dataclass(frozen=True)
class NpyHeader:
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int  # where the data starts
    nbytes: int  # what the header claims the data takes


def read_npy_header(f: IO[bytes], size: int, source: str) -> NpyHeader:
    """The header of the .npy stream `f` (at its start) of `size` bytes, checked: no
    Python objects, no negative dimensions, and no more data claimed than `size` holds."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):  # 3.0 differs only in allowing utf-8 field names
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unknown .npy format version {version}")
    except (ValueError, SyntaxError, EOFError) as e:
        raise DataError(f"{source} is not a valid .npy array ({first_line(e)})") from None
    if dtype.hasobject:
        raise DataError(
            f"{source} holds Python objects (pickled arrays), which vaekit never loads; "
            "save plain numeric arrays"
        )
    if any(d < 0 for d in shape):
        raise DataError(f"{source}: its header gives an impossible shape {shape}; it is corrupt")
    nbytes = dtype.itemsize * int(np.prod(shape, dtype=object))  # Python ints: no overflow
    offset = f.tell()
    if nbytes > size - offset:
        raise DataError(
            f"{source}: its header claims {nbytes} bytes of data (shape {shape}, {dtype}) "
            f"but the file holds {max(0, size - offset)}; it is truncated or corrupt"
        )
    return NpyHeader(tuple(shape), dtype, offset, nbytes)
