"""glibc malloc tuning: freed tensor memory is reused instead of faulted in again."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vaekit import allocator

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="mallopt's thresholds are glibc's",
)

PROBE = """
import resource, sys, torch
from vaekit.allocator import tune_malloc
applied = tune_malloc() if sys.argv[1] == "tune" else None

def rounds(n):  # what a conv step does: tens of MB of activations, then all freed
    for _ in range(n):
        tensors = [torch.ones(2_500_000) for _ in range(6)]  # 6 x 10 MB, written
        del tensors

rounds(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(10)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, **env: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}, **env},
    )
    applied, faults = out.stdout.split()
    return applied, int(faults)


@glibc
def test_tuned_malloc_reuses_freed_memory_instead_of_faulting_it_in_again() -> None:
    _, plain = _faults("plain")
    applied, tuned = _faults("tune")
    assert applied == "True"
    # 10 rounds of 60 MB: ~146,000 fresh 4 KiB pages by default, ~15,000 tuned (measured)
    assert plain > 100_000
    assert tuned < plain / 4


@glibc
def test_a_malloc_setting_in_the_environment_wins() -> None:
    applied, faults = _faults("tune", MALLOC_TRIM_THRESHOLD_="0")
    assert applied == "False"
    assert faults > 100_000  # trim at once: every round faults its pages in again


def test_the_vaekit_command_tunes_malloc(monkeypatch: pytest.MonkeyPatch) -> None:
    from vaekit import cli

    calls: list[int] = []
    monkeypatch.setattr(allocator, "tune_malloc", lambda: calls.append(1) or True)
    assert cli.main(["data", "list"]) == 0
    assert calls == [1]


def test_tune_malloc_does_nothing_off_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert allocator.tune_malloc() is False  # no glibc: nothing to set, nothing raised
