"""Every benchmark script still imports against today's vaekit. The benchmarks run for
minutes to hours and are not part of the suite, so an API they use can change under them
unseen (benchmarks/presets.py imported a builder that the settings record had replaced)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT

BENCHMARKS = ROOT / "benchmarks"


def test_every_benchmark_script_imports() -> None:
    names = sorted(p.stem for p in BENCHMARKS.glob("*.py"))
    assert "presets" in names and "families" in names
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(BENCHMARKS)])}
    done = subprocess.run(
        [sys.executable, "-c", code, *names],
        capture_output=True,
        text=True,
        env=env,
        cwd=BENCHMARKS,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
