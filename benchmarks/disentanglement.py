"""MIG and DCI of the VAE, a beta-VAE, beta-TCVAE and FactorVAE on the factor set, trained
alike: the disentanglement table of issue 26, at a size this machine's CPUs can afford.

    python benchmarks/disentanglement.py [--n 2000] [--size 32] [--epochs 5] [--latent-dim 10]
        [--seeds 3]

1. `scripts/make_shapes.py --factors` writes N images of seeded factors (shape, scale, x,
   y, colour) at SIZE px into a temporary folder;
2. the same conv VAE (channels 32, 64; `--latent-dim` latents, batch 64) is trained on
   them for `--epochs` under each objective, once per training seed 0..SEEDS-1: the ELBO,
   beta 4, `loss.objective tcvae` with tc_weight 6, `loss.objective factorvae` with
   tc_weight 10 (the discriminator at its defaults, the paper's);
3. `vaekit evaluate RUN --data FOLDER --disentanglement --json` scores each on every image,
   with its test -ELBO and seconds of training.

The table gives each score's mean ± standard deviation over the seeds (the factor set is
the same for all). The numbers compare the objectives at one short budget; they are not
what any of them reaches trained to convergence. Writes
benchmarks/results/disentanglement.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, write_results  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
OBJECTIVES = {  # name: the flags that make it
    "VAE (ELBO)": [],
    "beta-VAE, beta 4": ["--loss.beta", "4"],
    "beta-TCVAE, tc_weight 6": ["--loss.objective", "tcvae", "--loss.tc_weight", "6"],
    "FactorVAE, tc_weight 10": ["--loss.objective", "factorvae", "--loss.tc_weight", "10"],
}
SCORES = ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness")


def vaekit(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "vaekit", *args], check=True, env=ENV, capture_output=True, text=True
    )
    return done.stdout


def one(
    name: str, flags: list[str], folder: Path, work: Path, args: Any, seed: int
) -> dict[str, Any]:
    run = work / f"{name.split(',')[0].replace(' ', '-')}-{seed}"
    started = time.perf_counter()
    vaekit(
        "train", "--data", str(folder), "--data.image_size", str(args.size),
        "--model.arch", "conv", "--model.channels", "32,64", "--latent-dim",
        str(args.latent_dim), "--epochs", str(args.epochs), "--batch-size", "64",
        "--train.progress", "false", "--train.seed", str(seed), "--out", str(run), *flags,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    scores = json.loads(vaekit("evaluate", str(run), "--data", str(folder),
                               "--disentanglement", "--json"))  # fmt: skip
    test = json.loads(vaekit("evaluate", str(run), "--json", "--iw-samples", "0"))
    load = [round(v, 2) for v in os.getloadavg()]
    row = {"objective": name, "flags": flags, "seed": seed, "train_seconds": seconds,
           "nelbo": test["nelbo"], "load_average": load}  # fmt: skip
    row.update({k: scores["disentanglement"][k] for k in SCORES})
    print(json.dumps(row), file=sys.stderr)
    return row


def spread(values: list[float], digits: int) -> str:
    """mean ± standard deviation (the value alone for one)."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--latent-dim", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3, help="training seeds 0..N-1")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    parser.add_argument("--name", default="disentanglement")
    args = parser.parse_args()
    info = machine()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "factors"
        subprocess.run(
            [sys.executable, str(ROOT / "scripts/make_shapes.py"), str(folder), "--n",
             str(args.n), "--size", str(args.size), "--factors"], check=True, env=ENV,
        )  # fmt: skip
        runs = [(name, flags, folder, Path(tmp), args, seed) for seed in range(args.seeds)
                for name, flags in OBJECTIVES.items()]  # fmt: skip
        with ThreadPoolExecutor(args.jobs) as pool:  # each run its own vaekit processes
            rows = list(pool.map(lambda run: one(*run), runs))
    table = [["objective", "seeds", "MIG", "DCI dis.", "DCI compl.", "DCI inform.", "test -ELBO",
              "train s"]]  # fmt: skip
    for name in OBJECTIVES:
        runs = [r for r in rows if r["objective"] == name]
        table.append(
            [name, str(len(runs)), *(spread([r[k] for r in runs], 3) for k in SCORES),
             spread([r["nelbo"] for r in runs], 1),
             spread([r["train_seconds"] for r in runs], 0)]
        )  # fmt: skip
    info["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    notes = [
        f"{args.n} factor images at {args.size} px (scripts/make_shapes.py --factors, seed 0), "
        f"a conv VAE (channels 32, 64; {args.latent_dim} latents), {args.epochs} epochs, batch "
        f"64, training seeds 0..{args.seeds - 1} for every objective (each cell: mean ± "
        "standard deviation over the seeds); MIG and DCI on all images' posterior means, "
        f"-ELBO on the run's test split; train s: wall seconds ({args.jobs} runs at once), "
        "which the machine's load inflates (load average at the end: "
        f"{info['load_average_end']}). A short budget: a comparison at this budget, not the "
        "methods' converged scores.",
    ]
    write_results(args.name, {"machine": info, "args": vars(args), "rows": rows},
                  table, notes)  # fmt: skip


if __name__ == "__main__":
    main()
