"""Training throughput of the `mnist-mlp` preset on Fashion-MNIST against the reference loop.

    python benchmarks/mlp_speed.py [--rounds 10] [--quality-epochs 10] [--threads 0]

Each round runs, in rotating order, one epoch of each: the reference loop
(reference_loop.py: per-sample Dataset, DataLoader, sigmoid + BCE, plain Adam),
`vaekit train --config mnist-mlp --data fashion-mnist` in fp32, and the same in bf16
autocast. Only one runs at a time. The reference is one run that goes on from round to
round (round r is its epoch r, as in a real run: its Adam state fills with denormals and
it slows down after the first epochs); it lives in a process of its own, because vaekit
turns on flush-to-zero in its process and the canonical loop does not. vaekit's are
fresh one-epoch runs in this process (its speed does not change from epoch to epoch).
Samples/s count the training loop only (vaekit's `samples_per_s`; the reference's
epoch time), and each ratio is taken within a round, so load from other processes
shifts both sides alike. Then, for the quality side of bf16, both precisions train
`--quality-epochs` epochs from the same seed and report the test -ELBO, evaluated once
after training (training reads no test set). vaekit trains on all 60,000 training
images, as the reference does (`data.val_fraction 0`: no validation set).

Writes benchmarks/results/mlp_speed.json and mlp_speed.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median, write_results  # noqa: E402

import vaekit  # noqa: E402
from vaekit.data import Dataset, load_data  # noqa: E402
from vaekit.evaluation.likelihood import elbo_stats  # noqa: E402


def vaekit_epochs(
    data: Dataset, out: Path, precision: str, epochs: int = 1, threads: int = 0
) -> tuple[list[dict], Path]:
    """Train the mnist-mlp preset on `data` (all of its training images, as the reference
    loop does); its per-epoch metrics records and its run."""
    overrides = {
        "data.name": "fashion-mnist",
        "train.epochs": epochs,
        "train.precision": precision,
        "train.progress": False,
        "train.out": str(out),
        "train.threads": threads,
    }
    if "val_fraction" in {f.name for f in dataclasses.fields(vaekit.config.DataConfig)}:
        overrides["data.val_fraction"] = 0  # tree_speed may run this against vaekit < 0.2
    cfg = vaekit.load_config("mnist-mlp", overrides)
    run = vaekit.train(cfg, data=data, overwrite=True)
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()], run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--quality-epochs",
        type=int,
        default=10,
        help="epochs of the fp32 vs bf16 quality check (0: skip it)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    data_cfg = {"data.name": "fashion-mnist", "data.val_fraction": 0}
    data = load_data(vaekit.load_config(None, data_cfg).data, progress=False)
    out = Path(tempfile.mkdtemp(prefix="vaekit-mlp-speed-"))
    reference = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve().parent / "reference_loop.py"),
            "--epochs",
            str(args.rounds),
            "--threads",
            str(args.threads),
            "--on-request",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reference.stdin is not None and reference.stdout is not None
    to_reference, from_reference = reference.stdin, reference.stdout
    reference_records: list[dict] = []

    def run_reference() -> float:
        to_reference.write("go\n")
        to_reference.flush()
        line = from_reference.readline()
        if not line:
            raise SystemExit(f"the reference loop stopped (exit code {reference.wait()})")
        reference_records.append(json.loads(line))
        return reference_records[-1]["samples_per_s"]

    loops = {
        "reference": run_reference,
        "vaekit fp32": lambda: vaekit_epochs(data, out, "fp32", threads=args.threads)[0][-1][
            "samples_per_s"
        ],
        "vaekit bf16": lambda: vaekit_epochs(data, out, "bf16", threads=args.threads)[0][-1][
            "samples_per_s"
        ],
    }
    names = list(loops)
    speeds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
            speeds[name].append(loops[name]())
            print(f"round {r + 1}: {name}: {speeds[name][-1]:,.0f} samples/s", flush=True)
    to_reference.close()
    reference.wait()
    ratios = {
        name: [s / ref for s, ref in zip(speeds[name], speeds["reference"], strict=True)]
        for name in names
    }

    quality: dict[str, dict] = {}
    for precision in ("fp32", "bf16") if args.quality_epochs else ():
        records, run = vaekit_epochs(data, out, precision, args.quality_epochs, args.threads)
        test = elbo_stats(vaekit.load(run), data.x_test, None, 1000, seed=0)
        quality[precision] = {
            "epochs": args.quality_epochs,
            "test_nelbo": test["nelbo"],
            "samples_per_s_median": median([r["samples_per_s"] for r in records]),
        }
        print(
            f"{precision}, {args.quality_epochs} epochs: test -ELBO "
            f"{quality[precision]['test_nelbo']:.2f}",
            flush=True,
        )

    info["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    result = {
        "machine": info,
        "rounds": args.rounds,
        "samples_per_s": {k: [round(v) for v in vs] for k, vs in speeds.items()},
        "samples_per_s_median": {k: round(median(vs)) for k, vs in speeds.items()},
        "ratio_to_reference_median": {k: round(median(v), 2) for k, v in ratios.items()},
        "quality": quality,
        "reference_records": reference_records,
    }
    table = [["loop (batch 128, 784-400-20)", "samples/s (median)", "x reference (same round)"]]
    labels = {
        "reference": "reference: per-sample Dataset + DataLoader, sigmoid + BCE, Adam",
        "vaekit fp32": "`vaekit train --config mnist-mlp` (fp32)",
        "vaekit bf16": "same, `--train.precision bf16`",
    }
    for name in names:
        table.append([labels[name], f"{median(speeds[name]):,.0f}", f"{median(ratios[name]):.2f}x"])
    notes = [
        f"Median over {args.rounds} rounds; each round runs one epoch (60,000 images) of "
        "each loop, in rotating order, one at a time; samples/s count the training "
        "loop only. The reference is one run across the rounds (its epochs 1 to "
        f"{args.rounds}: {', '.join(f'{r:,.0f}' for r in speeds['reference'])} samples/s), "
        "in a process of its own without vaekit's flush-to-zero; each vaekit epoch is a "
        "fresh run."
    ]
    if quality:
        notes.append(
            "Test -ELBO after {} epochs from the same seed: fp32 {:.2f}, bf16 {:.2f} nats.".format(
                args.quality_epochs, quality["fp32"]["test_nelbo"], quality["bf16"]["test_nelbo"]
            )
        )
    md = write_results("mlp_speed", result, table, notes)
    print(md.read_text())


if __name__ == "__main__":
    main()
