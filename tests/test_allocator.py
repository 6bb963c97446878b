"""glibc malloc tuning: freed tensor memory stays in the heap for the next step."""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys

import pytest

from vaekit import allocator


def _has_glibc_mallinfo2() -> bool:
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        return hasattr(ctypes.CDLL(None), "mallinfo2")
    except OSError:
        return False


glibc = pytest.mark.skipif(
    not _has_glibc_mallinfo2(), reason="mallopt's thresholds and mallinfo2 are glibc's (2.33+)"
)
TUNE_MALLOC = allocator.tune_malloc  # conftest swaps it for a no-op in this process

PROBE = """
import ctypes, sys, torch
from vaekit.allocator import tune_malloc

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
applied = tune_malloc()
before = mallinfo2().hblkhd
first = torch.ones(5_000_000)  # 20 MB: its own fresh mapping, or from the heap?
mapped = (mallinfo2().hblkhd - before) >> 20
del first
for _ in range(3):  # what conv steps do: tens of MB of activations, then all freed
    tensors = [torch.ones(2_500_000) for _ in range(6)]  # 6 x 10 MB
    del tensors
print(applied, mapped, mallinfo2().fordblks >> 20)  # MiB freed but kept in the heap
"""


def _probe(**env: str) -> tuple[str, int, int]:
    """Run PROBE in a fresh process: tune_malloc's result, the MiB mapped apart for a first
    20 MB tensor, and the freed MiB the heap kept."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        check=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}, **env},
    )
    applied, mapped, kept = out.stdout.split()
    return applied, int(mapped), int(kept)


@glibc
def test_tuned_malloc_keeps_freed_tensor_memory_for_reuse() -> None:
    # glibc's defaults keep or return it depending on what was freed before (measured:
    # 1 MiB kept in one fresh process, 77 in the next); tuned, it is always kept, so the
    # next step's tensors reuse pages instead of faulting fresh zeroed ones in
    applied, mapped, kept = _probe()
    assert applied == "True"
    assert mapped == 0  # by default a 20 MB block gets pages of its own (glibc: > 128 KiB)
    assert kept >= 55


@glibc
def test_a_malloc_setting_in_the_environment_wins() -> None:
    applied, mapped, kept = _probe(MALLOC_TRIM_THRESHOLD_="0")
    assert applied == "False"
    assert mapped >= 19  # glibc's own 128 KiB threshold
    assert kept < 10  # trimmed at once, as the user asked


def test_the_vaekit_command_tunes_malloc(monkeypatch: pytest.MonkeyPatch) -> None:
    from vaekit import cli

    calls: list[int] = []
    monkeypatch.setattr(allocator, "tune_malloc", lambda: calls.append(1) or True)
    assert cli.main(["data", "list"]) == 0
    assert calls == [1]


def test_glibc_tunables_of_the_user_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")
    assert TUNE_MALLOC() is False


def test_tune_malloc_does_nothing_off_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert TUNE_MALLOC() is False  # no glibc: nothing to set, nothing raised
