"""Progress bars show on a terminal or in a running Jupyter kernel, and not in a process
that merely imported ipykernel (pytest after a notebook test did, and train-prior's
one-line errors gained a bar line)."""

from __future__ import annotations

import sys
import types

import pytest

from vaekit import progress


def test_importing_ipykernel_does_not_make_a_process_interactive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    assert not progress.interactive()
    assert progress.bar(range(3)).disable


def test_a_running_kernel_is_interactive(monkeypatch: pytest.MonkeyPatch) -> None:
    shell = types.SimpleNamespace(kernel=object())  # what ipykernel's shell carries
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    assert progress.in_kernel() and progress.interactive()
