"""The factor-set presets trained and scored: MIG and DCI of `factors-tcvae` and
`factors-factorvae`, which benchmarks/presets.py only counts (they need a generated folder).

    python benchmarks/factor_presets.py [--folder DIR] [--n 20000] [--epochs N] [--jobs 2]
        [--only factors-tcvae,factors-factorvae]

1. The factor set of the presets' comments (`scripts/make_shapes.py DIR --factors --n 20000`,
   64 px, seed 0) is written into `--folder` (default: a cache folder under the system's
   temporary directory, kept and reused while its factors.csv is there);
2. each preset is trained as `vaekit train --config NAME --data DIR` would, at its own
   settings, except `--epochs` when given (a shortened run: the table says so, and the
   projected CPU time of the preset's own epochs from the measured CPU-s per epoch);
3. it is scored as `vaekit evaluate RUN --data DIR --disentanglement` scores it (MIG and
   DCI on the posterior means of every image of the folder), with the test -ELBO
   (`vaekit evaluate`'s first number, one seeded z per test example).

Each preset trains in its own one-thread worker process (`--jobs` at once); the CPU
seconds are that process's own. Writes benchmarks/results/factor_presets.json and .md
(`--name`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, write_results  # noqa: E402

import vaekit  # noqa: E402
from vaekit.config import load_config  # noqa: E402
from vaekit.data import load_data  # noqa: E402
from vaekit.evaluation import disentanglement  # noqa: E402

PRESETS = ("factors-tcvae", "factors-factorvae")
SCORES = ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness")


def factor_folder(folder: Path | None, n: int, size: int) -> Path:
    """The factor set, written by scripts/make_shapes.py unless already there."""
    folder = folder or Path(tempfile.gettempdir()) / f"vaekit-bench-factors-{n}-{size}"
    if not (folder / "factors.csv").is_file():
        script = ROOT / "scripts" / "make_shapes.py"
        args = [str(folder), "--factors", "--n", str(n), "--size", str(size)]
        subprocess.run([sys.executable, str(script), *args], check=True)
    return folder


def train_and_score(job: tuple[str, Path, int | None, Path]) -> dict[str, Any]:
    """One preset trained on the folder (its own epochs unless given), then scored."""
    name, folder, epochs, out = job
    torch.set_num_threads(1)
    preset = load_config(name)
    overrides: dict[str, Any] = {"data.name": str(folder), "train.out": str(out)}
    overrides["train.progress"] = False
    if epochs is not None:
        overrides["train.epochs"] = epochs
    cfg = load_config(name, overrides)
    cpu, wall = time.process_time(), time.perf_counter()
    result = vaekit.Trainer(None, cfg).fit()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    model = vaekit.load(result.run_dir)
    data = load_data(cfg.data, seed=cfg.train.seed, progress=False)
    test = vaekit.evaluate(model, data.x_test, seed=0, iw_samples=0, progress=False)
    scores = disentanglement.of_run(model, folder, seed=0)
    row = {
        "preset": name,
        "preset_epochs": preset.train.epochs,
        "epochs": cfg.train.epochs,
        "shortened": cfg.train.epochs < preset.train.epochs,
        "train_cpu_s": round(cpu, 1),
        "train_wall_s": round(wall, 1),
        "cpu_s_per_epoch": round(cpu / cfg.train.epochs, 1),
        "test_examples": int(data.x_test.shape[0]),
        "test_nelbo": round(float(test["nelbo"]), 2),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        **{k: scores[k] for k in ("images", "factors", *SCORES)},
        "mig_per_factor": scores["mig_per_factor"],
        "informativeness_per_factor": scores["informativeness_per_factor"],
    }
    print(row, file=sys.stderr, flush=True)
    return row


def epochs_cell(r: dict[str, Any]) -> str:
    if not r["shortened"]:
        return f"{r['epochs']} (the preset's)"
    return f"**{r['epochs']} of the preset's {r['preset_epochs']} (shortened)**"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=None, help="the factor set (made if absent)")
    parser.add_argument("--n", type=int, default=20_000, help="images of the factor set")
    parser.add_argument("--epochs", type=int, default=None, help="fewer than the preset's")
    parser.add_argument("--jobs", type=int, default=2, help="presets trained at once")
    parser.add_argument("--only", default=",".join(PRESETS))
    parser.add_argument("--name", default="factor_presets")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    size = load_config(names[0]).data.image_size
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    info = machine()
    folder = factor_folder(args.folder, args.n, size)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(name, folder, args.epochs, Path(tmp) / name) for name in names]
        with ProcessPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(train_and_score, jobs))
    info["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    table = [["preset", "epochs", "MIG", "DCI dis.", "DCI compl.", "DCI inform.", "test -ELBO",
              "train CPU-s (per epoch)", "preset's epochs, projected CPU-s"]]  # fmt: skip
    for r in rows:
        table.append(
            [f"`{r['preset']}`", epochs_cell(r), *(f"{r[k]:.3f}" for k in SCORES),
             f"{r['test_nelbo']:.2f}", f"{r['train_cpu_s']:,.0f} ({r['cpu_s_per_epoch']:.0f})",
             f"{r['preset_epochs']}: {r['cpu_s_per_epoch'] * r['preset_epochs']:,.0f}"]
        )  # fmt: skip
    shortened = [r["preset"] for r in rows if r["shortened"]]
    notes = [
        f"{args.n:,} factor images at {size} px (scripts/make_shapes.py --factors, seed 0); "
        "each preset trained at its own settings (`vaekit train --config NAME --data DIR`) "
        f"{'for fewer epochs than its own' if shortened else 'for its own epochs'}, in a "
        f"one-thread worker process ({args.jobs} at once); train CPU-s: that process's own. "
        "MIG and DCI: `vaekit evaluate RUN --data DIR --disentanglement` on the posterior "
        "means of all images of the folder; test -ELBO: one seeded z per example of the "
        "run's test split.",
        f"Load average (1, 5, 15 min) at the end: {info['load_average_end']}; wall time "
        f"{time.perf_counter() - started:.0f} s.",
    ]
    if shortened:
        notes.insert(
            0,
            f"**Shortened runs** ({', '.join(shortened)}): `--epochs {args.epochs}`, fewer "
            "epochs than the preset's own. These are the scores at that budget, not the "
            "presets' numbers; the last column projects the CPU time of the preset's own "
            "epochs.",
        )
    result = {"machine": info, "settings": vars(args) | {"folder": str(folder)}, "rows": rows}
    print(write_results(args.name, result, table, notes))


if __name__ == "__main__":
    main()
