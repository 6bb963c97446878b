"""How fast is honest evaluation? The importance-weighted log p(x) of the 784-400-20 MLP VAE
over the 10,000 Fashion-MNIST test images for K = 1, 10, 100, 1000 (target: K=1000 in under
2 minutes on 2 CPU cores), against the ELBO, with bf16 decoding compared to fp32 and the
first version of the estimator (K-fold copy of x, BCE) as a baseline. The machine is
shared: each timing records the load average, and CPU time / threads estimates the wall
time on idle cores.

    python benchmarks/eval_speed.py [--run RUN] [--ks 1,10,100,1000] [--threads N]

Without --run it trains `mnist-mlp` on Fashion-MNIST for one epoch (~30-60 s) first.
Writes benchmarks/results/eval_speed.json (with the machine's description).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import vaekit
from vaekit import losses
from vaekit.data import load_data, to_float
from vaekit.evaluation.likelihood import DEFAULT_BUDGET, elbo_stats, importance_sampling
from vaekit.io import fileio

RESULTS = Path(__file__).resolve().parent / "results" / "eval_speed.json"


def machine() -> dict[str, object]:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        lscpu = ""
    return {
        "lscpu_head": lscpu.splitlines()[:10],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


def trained_model(run: str | None) -> Path:
    if run:
        return Path(run)
    out = Path(tempfile.mkdtemp(prefix="eval-speed-")) / "run"
    config = vaekit.load_config(
        "mnist-mlp",
        {
            "data.name": "fashion-mnist",
            "train.epochs": 1,
            "train.out": str(out),
            "train.progress": False,
        },
    )
    print(f"training {config.name} on fashion-mnist for 1 epoch into {out}", file=sys.stderr)
    return vaekit.train(config)


def timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    load = os.getloadavg()[0]
    started, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return result, {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "loadavg_before": load,
    }


@torch.no_grad()
def baseline(model: vaekit.VAE, x: torch.Tensor, k: int, budget: int = 2_000_000) -> torch.Tensor:
    """The first version: model.log_importance_weights per chunk (x copied K times, BCE)."""
    rows = max(1, budget // 784)
    per_pass, k_chunk = (max(1, rows // k), k) if rows >= k else (1, rows)
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(0, x.shape[0], per_pass):
        xb = x[i : i + per_pass]
        chunks = [
            model.log_importance_weights(xb, min(k_chunk, k - s), None, g).double()
            for s in range(0, k, k_chunk)
        ]
        out.append(losses.iw_bound(torch.cat(chunks, 0)))
    return torch.cat(out)


def summarize(values: torch.Tensor) -> dict[str, float]:
    return {
        "mean": float(values.mean()),
        "stderr": float(values.std(unbiased=True) / math.sqrt(values.numel())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a trained 784-400-20 run (default: train one)")
    parser.add_argument("--ks", default="1,10,100,1000")
    parser.add_argument("--n", type=int, default=10_000, help="test images")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument(
        "--baseline-n",
        type=int,
        default=200,
        help="images the old estimator is timed on (extrapolated to --n)",
    )
    parser.add_argument(
        "--sweep",
        default="1000000,4000000,16000000",
        help="memory budgets (decoded values per pass) timed at K=1000 on --baseline-n images",
    )
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    model = vaekit.load(trained_model(args.run))
    cfg = model.run_config
    data = load_data(cfg.data, progress=False)
    x = to_float(data.x_test[: args.n])
    result: dict[str, object] = {
        "machine": machine(),
        "run": str(args.run or "trained by this script"),
        "model": f"{cfg.model.arch} {784}-{'-'.join(map(str, cfg.model.hidden))}-"
        f"{cfg.model.latent_dim}, {cfg.model.likelihood}",
        "dataset": data.name,
        "n": int(x.shape[0]),
        "budget": DEFAULT_BUDGET,
    }
    elbo, t = timed(elbo_stats, model, x)
    result["elbo"] = {"mean": -elbo["nelbo"], **t}
    print(f"ELBO {-elbo['nelbo']:.3f} ({t['seconds']:.1f} s)", file=sys.stderr)
    runs: dict[str, object] = {}
    fp32_1000 = None
    for k in (int(v) for v in args.ks.split(",")):
        for precision in ("fp32", "bf16"):
            if precision == "bf16" and k != max(int(v) for v in args.ks.split(",")):
                continue  # bf16 is compared where it matters: the largest K
            est, t = timed(importance_sampling, model, x, k, seed=1, precision=precision)
            entry = {
                "log_px": summarize(est.log_px),
                "iw_elbo": float(est.elbo.mean()),
                "ess": float(est.ess.mean()),
                **t,
                "decoded_per_s": x.shape[0] * k / t["seconds"],
                # workers run single-threaded ops: CPU time is the work itself, so
                # this is the wall time on idle cores (the load can only add to it)
                "idle_cores_estimate_seconds": t["cpu_seconds"] / torch.get_num_threads(),
            }
            if precision == "fp32":
                fp32_1000 = est.log_px
            else:
                diff = est.log_px - fp32_1000
                entry["vs_fp32"] = {
                    "mean_diff": float(diff.mean()),
                    "mean_abs_diff": float(diff.abs().mean()),
                    "max_abs_diff": float(diff.abs().max()),
                }
            runs[f"K={k} {precision}"] = entry
            print(
                f"K={k:<5} {precision}: log p(x) {entry['log_px']['mean']:.3f} +- "
                f"{entry['log_px']['stderr']:.3f}, {t['seconds']:.1f} s "
                f"(cpu {t['cpu_seconds']:.1f} s, load {t['loadavg_before']:.1f})",
                file=sys.stderr,
            )
    result["iw"] = runs
    xs = x[: args.baseline_n]
    _, t = timed(baseline, model, xs, 1000)
    result["baseline_k1000"] = {
        **t,
        "n": int(xs.shape[0]),
        "extrapolated_seconds": t["seconds"] * x.shape[0] / xs.shape[0],
    }
    sweep = {}
    for budget in (int(v) for v in args.sweep.split(",") if v):
        _, t = timed(importance_sampling, model, xs, 1000, budget=budget)
        sweep[str(budget)] = {**t, "extrapolated_seconds": t["seconds"] * x.shape[0] / xs.shape[0]}
    result["budget_sweep_k1000"] = sweep
    # the same passes on torch's intra-op threads instead of side-by-side workers
    _, t = timed(importance_sampling, model, xs, 1000, workers=1)
    result["intra_op_threads_k1000"] = {
        **t,
        "extrapolated_seconds": t["seconds"] * x.shape[0] / xs.shape[0],
    }
    result["loadavg_after"] = os.getloadavg()[0]
    fileio.write_json(args.out, result)
    print(f"written {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
