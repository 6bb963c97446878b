"""The IAF posterior with and without the encoder's context h (model.flow_context), at the
same budget: the `fashion-iaf` preset's model (784-512-512-16 MLP, Bernoulli pixels, 2
flow steps) trained for the same epochs from the same seeds on Fashion-MNIST, once with
flow_context 0 (pythae's VAE_IAF's form, the preset's) and once with flow_context K
(Kingma et al. 2016's), then the importance-weighted log p(x) and the -ELBO on the first
test images.

    python benchmarks/iaf_context.py                          # 3 epochs, seeds 0 and 1
    python benchmarks/iaf_context.py --epochs 5 --seeds 0,1,2 --context 16

Writes benchmarks/results/iaf_context.{json,md}. The numbers are seeded; the seconds
depend on the machine's load (read load_average_1min in the JSON before quoting them).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_results  # noqa: E402

import vaekit  # noqa: E402
from vaekit.config import load_config  # noqa: E402
from vaekit.data import load_data  # noqa: E402

PRESET = "fashion-iaf"


def run(context: int, seed: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Train the preset's model with model.flow_context `context`; its test numbers."""
    overrides: dict[str, Any] = {
        "train.out": str(out),
        "train.progress": False,
        "train.epochs": args.epochs,
        "train.seed": seed,
        "model.flow_context": context,
    }
    cfg = load_config(PRESET, overrides)
    start = time.perf_counter()
    result = vaekit.Trainer(None, cfg).fit()
    seconds = time.perf_counter() - start
    model = vaekit.load(result.run_dir)
    data = load_data(cfg.data, seed=cfg.train.seed, progress=False)
    x = data.x_test[: args.test_examples]
    stats = vaekit.evaluate(model, x, seed=0, iw_samples=args.iw_samples, progress=False)
    return {
        "flow_context": context,
        "seed": seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(seconds, 1),
        "test_nelbo": round(float(stats["nelbo"]), 2),
        "log_px": round(float(stats["log_px"]), 2),
        "log_px_stderr": round(float(stats["log_px_stderr"]), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    parser.add_argument("--context", type=int, default=16, help="K of the context runs")
    parser.add_argument("--iw-samples", type=int, default=1000)
    parser.add_argument("--test-examples", type=int, default=1000)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    info = machine()
    rows = []
    for seed in seeds:
        for context in (0, args.context):
            with tempfile.TemporaryDirectory() as tmp:
                rows.append(run(context, seed, args, Path(tmp) / "run"))
            print(rows[-1], flush=True)
    table = [["flow_context", "seed", "parameters", "test -ELBO", "IW log p(x)", "train s"]]
    for r in rows:
        table.append(
            [
                str(r["flow_context"]),
                str(r["seed"]),
                f"{r['parameters']:,}",
                f"{r['test_nelbo']:.2f}",
                f"{r['log_px']:.2f} ± {r['log_px_stderr']:.2f}",
                f"{r['train_seconds']:.0f}",
            ]  # fmt: skip
        )
    for context in (0, args.context):
        mine = [r for r in rows if r["flow_context"] == context]
        mean = sum(r["log_px"] for r in mine) / len(mine)
        table.append([str(context), "mean", "", "", f"{mean:.2f}", ""])
    diffs = [
        b["log_px"] - a["log_px"]
        for a, b in zip(rows[::2], rows[1::2], strict=True)  # the same seed, K against 0
    ]
    notes = [
        f"The `{PRESET}` preset's model, {args.epochs} epochs on Fashion-MNIST's 60,000 "
        f"training images per run (the same seeds with and without the context); IW log "
        f"p(x) with K = {args.iw_samples} on the first {args.test_examples} test images "
        "(nats per image; ± its standard error over the images), the -ELBO one seeded z "
        "each. Per seed, log p(x) with the context less without: "
        + ", ".join(f"{d:+.2f}" for d in diffs)
        + f" (mean {sum(diffs) / len(diffs):+.2f}"
        + (f", sd {statistics_sd(diffs):.2f})." if len(diffs) > 1 else ")."),
    ]
    write_results("iaf_context", {"machine": info, "args": vars(args), "runs": rows}, table, notes)


def statistics_sd(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


if __name__ == "__main__":
    main()
