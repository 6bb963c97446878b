"""glibc malloc settings for a process whose tensors come and go in tens of megabytes."""

from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD = 32 * 2**20  # the largest value glibc accepts on 64-bit systems
TRIM_THRESHOLD = 2**30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)


def tune_malloc() -> bool:
    """Keep freed tensor memory in the heap for reuse instead of handing it to the kernel.

    By default glibc gives blocks above a self-adjusting threshold (at most 32 MiB) their
    own fresh pages and unmaps them when freed, and returns the heap's free top to the
    kernel once it exceeds twice that threshold. A conv VAE's activations of 10-40 MB
    are then zero-filled page by page, step after step: shapes64 trains 1.24x the
    images/s with the thresholds fixed, with a fifth of the system time
    (benchmarks/results/allocator.md). The price is memory: each thread's heap keeps up
    to TRIM_THRESHOLD of freed memory instead of returning it (peak RSS 790 MiB there,
    against 657 MiB).

    The `vaekit` command calls this at start; Python users may too. Returns whether it
    applied: glibc only, and never over the user's own MALLOC_* or glibc.malloc tunables.
    """
    if not sys.platform.startswith("linux"):
        return False
    if any(name.startswith("MALLOC_") for name in os.environ) or "glibc.malloc." in (
        os.environ.get("GLIBC_TUNABLES", "")
    ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no C library symbols, or one without mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # each one on its own (mallopt returns 1 on success; musl's stub returns 0)
    done = [
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1,
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1,
    ]
    return all(done)
