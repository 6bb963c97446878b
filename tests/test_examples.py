"""The examples run: every notebook in examples/ executes top to bottom in a real kernel of
this environment, on tiny settings (`VAEKIT_EXAMPLES_TINY=1`), and each `.ipynb` is the
twin of its jupytext percent script (`NAME.py`), outputs stripped.

After editing an example: `jupytext --to ipynb examples/NAME.py` (jupytext is in the dev
extras) writes its twin.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext", reason="the [dev] extras install jupytext")
nbclient = pytest.importorskip("nbclient", reason="the [dev] extras install nbclient")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))


def test_there_are_examples() -> None:
    assert len(SCRIPTS) >= 3
    assert sorted(p.stem for p in EXAMPLES.glob("*.ipynb")) == [p.stem for p in SCRIPTS]


def _sources(notebook) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_the_notebook_is_the_scripts_twin_without_outputs(script: Path) -> None:
    notebook = jupytext.read(script.with_suffix(".ipynb"))
    assert _sources(notebook) == _sources(jupytext.read(script)), (
        f"{script.with_suffix('.ipynb').name} differs from {script.name}: run "
        f"`jupytext --to ipynb examples/{script.name}`"
    )
    assert all(not cell.get("outputs") for cell in notebook.cells), "outputs are not stripped"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_the_notebook_runs_top_to_bottom(
    script: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbformat

    notebook = nbformat.read(script.with_suffix(".ipynb"), as_version=4)
    monkeypatch.setenv("VAEKIT_EXAMPLES_TINY", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # the kernel is this interpreter, so it imports the vaekit under test
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(p) for p in sys.path if p]))
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    errors = [
        out
        for cell in notebook.cells
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert errors == []
