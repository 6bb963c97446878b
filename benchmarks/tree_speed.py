"""Training speed of this tree against an earlier commit's, alternating in one run.

    python benchmarks/tree_speed.py [--baseline a7ba06b] [--rounds 6] [--conv-steps 20]

For a redesign that must not slow anything down: the baseline commit is checked out into
a temporary git worktree, and two worker processes, one importing each tree's `vaekit`
(PYTHONPATH=<tree>/src), take turns on the same measurements, one at a time, the order
alternating each round:

- mlp: one epoch of `mlp_speed.vaekit_epochs` (the mnist-mlp preset on Fashion-MNIST,
  batch 128, fp32), its samples/s;
- conv: `conv_speed.ours_images_per_s` (the conv VAE at PyTorch-VAE's VanillaVAE size,
  64x64, batch 64, fp32: warm-up steps, then timed steps), its images/s.

Both workers run the measurement functions of this checkout's benchmarks, which use only
the API both trees share (vaekit.load_config, vaekit.train, vaekit.data). Each round's
ratio is this tree over the baseline in the same round (load shifts both alike); the
result is the median over rounds. Writes benchmarks/results/tree_speed.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, write_results  # noqa: E402

# The worker: imports the vaekit its PYTHONPATH names, loads the data once, then answers
# one measurement per line of stdin ("mlp" or "conv") with one JSON line.
WORKER = r"""
import json, sys, tempfile
from pathlib import Path
sys.path.insert(0, {bench!r})
import torch, vaekit
from vaekit.data import Dataset, load_data
import mlp_speed, conv_speed
print(json.dumps({{"vaekit": vaekit.__file__}}), flush=True)
torch.set_flush_denormal(True)
fashion = load_data(vaekit.load_config(None, {{"data.name": "fashion-mnist"}}).data, progress=False)
batch, warmup, steps = 64, 3, {conv_steps}
g = torch.Generator().manual_seed(0)
x = torch.randint(0, 256, (batch * (warmup + steps), 3, 64, 64), generator=g, dtype=torch.uint8)
images = Dataset("bench", x, x[:256])
work = Path(tempfile.mkdtemp(prefix="vaekit-tree-speed-"))
for line in sys.stdin:
    what = line.strip()
    if what == "mlp":
        records, _ = mlp_speed.vaekit_epochs(fashion, work / "mlp", "fp32")
        value = records[-1]["samples_per_s"]
    else:
        value = conv_speed.ours_images_per_s(images, batch, warmup, steps, "fp32", work)
    print(json.dumps({{"value": value}}), flush=True)
"""


class Worker:
    """One tree's vaekit in a process of its own, answering measurements on request."""

    def __init__(self, tree: Path, conv_steps: int) -> None:
        code = WORKER.format(bench=str(ROOT / "benchmarks"), conv_steps=conv_steps)
        env = {**os.environ, "PYTHONPATH": str(tree / "src")}
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tree,
        )
        self.vaekit = self._read()["vaekit"]
        if not Path(self.vaekit).resolve().is_relative_to(tree.resolve()):
            raise SystemExit(f"the worker for {tree} imported {self.vaekit}")

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"a worker stopped (exit code {self.process.wait()})")
        return json.loads(line)

    def measure(self, what: str) -> float:
        assert self.process.stdin is not None
        self.process.stdin.write(what + "\n")
        self.process.stdin.flush()
        return float(self._read()["value"])

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait()


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="a7ba06b", help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--conv-steps", type=int, default=20, help="timed conv steps")
    parser.add_argument("--only", choices=("mlp", "conv"), help="measure one benchmark only")
    parser.add_argument(
        "--name", default="tree_speed", help="results file name (benchmarks/results/NAME.json)"
    )
    args = parser.parse_args(argv)
    kinds = (args.only,) if args.only else ("mlp", "conv")
    info = machine()
    base_commit, head_commit = git("rev-parse", args.baseline), git("rev-parse", "HEAD")
    with tempfile.TemporaryDirectory() as tmp:
        baseline_tree = Path(tmp) / "baseline"
        git("worktree", "add", "--detach", str(baseline_tree), base_commit)
        try:
            workers = {
                "this tree": Worker(ROOT, args.conv_steps),
                "baseline": Worker(baseline_tree, args.conv_steps),
            }
            values = {w: {k: [] for k in kinds} for w in workers}  # type: dict[str, dict[str, list[float]]]
            load = []
            for r in range(args.rounds):
                order = list(workers) if r % 2 == 0 else list(reversed(workers))
                for what in kinds:
                    for name in order:
                        load.append(os.getloadavg()[0])
                        values[name][what].append(workers[name].measure(what))
                        print(
                            f"round {r + 1}: {what:4} {name:9} {values[name][what][-1]:10,.0f}/s",
                            file=sys.stderr,
                            flush=True,
                        )
            for worker in workers.values():
                worker.close()
        finally:
            git("worktree", "remove", "--force", str(baseline_tree))
    ratios = {
        what: [
            a / b for a, b in zip(values["this tree"][what], values["baseline"][what], strict=True)
        ]
        for what in kinds
    }
    result = {
        "machine": info,
        "baseline": base_commit,
        "this_tree": head_commit,
        "rounds": args.rounds,
        "per_second": values,
        "ratio_per_round": {k: [round(v, 4) for v in vs] for k, vs in ratios.items()},
        "ratio_median": {k: round(statistics.median(vs), 4) for k, vs in ratios.items()},
        "load_average": [min(load), max(load)],
    }
    labels = {
        "mlp": "mnist-mlp, one Fashion-MNIST epoch (samples/s)",
        "conv": "conv VAE at VanillaVAE size, 64x64, batch 64 (images/s)",
    }
    table = [["benchmark (fp32)", "baseline (median)", "this tree (median)", "ratio (median)"]]
    for what, label in ((k, labels[k]) for k in kinds):
        table.append(
            [
                label,
                f"{statistics.median(values['baseline'][what]):,.0f}",
                f"{statistics.median(values['this tree'][what]):,.0f}",
                f"{statistics.median(ratios[what]):.3f}",
            ]
        )
    notes = [
        f"This tree ({head_commit[:7]}) against {base_commit[:7]}, {args.rounds} rounds, the "
        "two trees' workers taking turns, one measurement at a time; each ratio is taken "
        f"within a round. Load average during the run: {min(load):.2f} to {max(load):.2f}."
    ]
    md = write_results(args.name, result, table, notes)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
