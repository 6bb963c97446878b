"""What a request may ask of this machine: memory estimates, checked before allocating.

A small input can ask for a huge output (`sample --n 100000000`, a config.json with a
latent of 10^9): rather than let the kernel kill the process without a word, the size a
request needs is estimated first and compared with the memory this machine has, and a
request that cannot fit ends in one line that says the estimate and the limit.
"""

from __future__ import annotations

import os

from .errors import ConfigError

GIB = 2**30


def physical_memory() -> int:
    """Bytes of RAM on this machine (8 GiB where the system cannot say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 * GIB


def available_memory() -> int:
    """Bytes this process may still allocate: the RAM free now (Linux's MemAvailable, else
    the total), or less where a limit on the address space (`ulimit -v`) says so."""
    free = _meminfo("/proc/meminfo", "MemAvailable:") or physical_memory()
    soft = address_space_limit()
    if soft is None:
        return free
    used = _meminfo("/proc/self/status", "VmSize:") or 0
    return max(0, min(free, soft - used))


def address_space_limit() -> int | None:
    """The soft limit on this process's address space (`ulimit -v`) in bytes, or None."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):  # Windows, or not reported
        return None
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _meminfo(path: str, key: str) -> int | None:
    """A 'Key:  N kB' line of a /proc file, in bytes (None where there is none)."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_fits(nbytes: float, what: str, fix: str, limit: int | None = None) -> None:
    """Refuse `what` when its estimated `nbytes` exceed `limit` (default: the memory free
    now), in one line with both numbers and the `fix`."""
    limit = available_memory() if limit is None else limit
    if nbytes > limit:
        raise ConfigError(
            f"{what} would need about {human_bytes(nbytes)} of memory, more than the "
            f"{human_bytes(limit)} this machine has free; {fix}"
        )


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; exact enough for a message."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.3g} {unit}"
        size /= 1024
    return f"{size:,.3g} PiB"
