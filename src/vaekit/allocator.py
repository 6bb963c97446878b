"""glibc malloc settings for a process whose tensors come and go in tens of megabytes."""

from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD = 32 * 2**20  # the largest value glibc accepts on 64-bit systems
TRIM_THRESHOLD = 2**30
ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # mallopt's (malloc.h)


def tune_malloc() -> bool:
    """Keep freed tensor memory in the heap for reuse instead of handing it to the kernel.

    By default glibc gives blocks above a self-adjusting threshold (at most 32 MiB) their
    own fresh pages and unmaps them when freed, and returns the heap's free top to the
    kernel once it exceeds twice that threshold; each further thread gets an arena of
    its own, whose heaps of at most 64 MiB are unmapped as they empty. A conv VAE's
    activations of 10-40 MB are then zero-filled page by page on every step: half the CPU
    time of a conv log p(x) estimate was system time, and shapes64 trains ~20% more
    images/s with fixed thresholds and one arena (benchmarks/results/allocator.md). Peak
    memory stays about the same (676 MiB against 645 there); the process keeps up to
    TRIM_THRESHOLD of freed heap instead of returning it.

    The `vaekit` command calls this at start; Python users may too. Returns whether it
    applied: glibc only, and never over a MALLOC_* setting in the environment.
    """
    if not sys.platform.startswith("linux") or any(name in os.environ for name in ENVIRONMENT):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no C library symbols, or one without mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (_M_ARENA_MAX, 1),
    )
    # mallopt returns 1 on success (musl's stub returns 0)
    return all(mallopt(param, value) == 1 for param, value in settings)
