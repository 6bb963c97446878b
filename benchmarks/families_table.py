"""The table `families.py` writes: one row per family and side, the seeds of a family
folded into mean ± standard deviation (one seed: the number itself, and log p(x) ± its
standard error over the test images)."""

from __future__ import annotations

import argparse
import statistics
from typing import Any

LABELS = {"hierarchical": "Ladder (16, 8)"}


def _f(value: Any, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _spread(values: list[float], digits: int) -> str:
    """mean ± std over seeds (the number alone for one seed); n/a where none."""
    if not values:
        return "n/a"
    if len(values) == 1:
        return _f(values[0], digits)
    return f"{statistics.mean(values):,.{digits}f} ± {statistics.stdev(values):,.{digits}f}"


def _speed(r: dict[str, Any]) -> float:
    return float(r["samples"] / r["cpu_s"])


def _cells(runs: list[dict[str, Any]], others: list[dict[str, Any]]) -> list[str]:
    """One side's cells over its seeds (`others`: pythae's runs of the same seeds)."""

    def vals(key: str) -> list[float]:
        return [r[key] for r in runs if r.get(key) is not None]

    ratio = [_speed(r) / _speed(o) for r, o in zip(runs, others, strict=True)] if others else []
    lp = vals("log_px")
    if len(lp) == 1:
        log_px = f"{lp[0]:.2f} ± {runs[0]['log_px_stderr']:.2f}"
    else:
        log_px = _spread(lp, 2)
    objective = [r.get("nelbo", r.get("objective")) for r in runs]
    if runs[0].get("active_units") is not None:
        units = _spread([float(v) for v in vals("active_units")], 1 if len(runs) > 1 else 0)
    else:
        units = (f"{_spread(vals('perplexity'), 1)}, "
                 f"{_spread([100 * v for v in vals('codebook_usage')], 0)}%")  # fmt: skip
    bits = vals("prior_bits_per_code")
    return [
        _spread([float(r["steps"]) for r in runs], 0),
        _spread([float(r["cpu_s"]) for r in runs], 1),
        _spread([_speed(r) for r in runs], 0),
        _spread(ratio, 2) + "x" if ratio else "",
        _spread([v for v in objective if v is not None], 2),
        log_px,
        _spread(vals("psnr"), 2),
        _spread(vals("ssim"), 4),
        _spread(vals("fid_random"), 2 if not bits else 3),
        units,
        _spread(bits, 3) if bits else "",
    ]


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[list[str]]:
    head = ["family", "side", "seeds", "steps", "train CPU-s", "samples / CPU-s", "x pythae",
            "-ELBO (VQ: objective)", f"log p(x), K={args.iw_samples}", "PSNR dB", "SSIM",
            "FID (random net)", "active units (VQ: perplexity, usage)",
            "VQ: code prior, bits per code"]  # fmt: skip
    out = [head]
    for family in dict.fromkeys(r["family"] for r in rows):
        same = [r for r in rows if r["family"] == family]
        for side in ("vaekit", "pythae"):
            runs = [r[side] for r in same if side in r]
            if not runs:
                continue
            others = [r["pythae"] for r in same if "pythae" in r] if side == "vaekit" else []
            others = others if len(others) == len(runs) else []
            seeds = ",".join(str(r["seed"]) for r in same if side in r)
            out.append([LABELS.get(family, family), side, seeds, *_cells(runs, others)])
    return out


def notes(result: dict[str, Any]) -> list[str]:
    s, m = result["settings"], result["machine"]
    seeds = s.get("seeds", 1)
    lines = [
        f"Each side trained for {s['budget_s']:g} CPU seconds (process CPU time from its first "
        "step; one thread, fp32, Adam 1e-3, batch 128, all 60,000 training images), the two "
        "sides one after the other in one process, from the same initial weights of the same "
        "networks (the docstring of benchmarks/families.py gives them). samples / CPU-s: "
        "training images per CPU second over that window, the trainers' own per-epoch work "
        "included; x pythae: vaekit's over pythae's. vaekit's trainer flushes denormals "
        "for the process, so pythae's side, after it, runs with them flushed too.",
        "Both sides evaluated by the same code on the same test images: -ELBO with one "
        "seeded z-sample per image on all 10,000; log p(x) by importance sampling on the "
        f"first {s['iw_images']:,}"
        + (" (± the standard error over images); " if seeds == 1 else "; ")
        + "PSNR/SSIM of posterior-mean reconstructions on all 10,000; FID of "
        f"{s['fid_samples']:,} prior samples against as many test images with vaekit's seeded "
        "random feature network (comparable between rows only, at the same number of "
        "samples); active units: Var_x E[z|x] > 0.01. pythae's networks are vaekit's modules, "
        "evaluated as vaekit models (VampPrior and IAF: with pythae's trained prior and flow).",
    ]
    if s.get("jobs", 1) > 1:
        lines.append(
            f"{s['jobs']} families (or seeds) trained at once, each in a worker process of one "
            "thread; the budget and the rates are each process's own CPU time."
        )
    if seeds > 1:
        lines.append(f"{seeds} seeds per family (training seed and initial weights): each cell "
                     "is the mean ± the standard deviation over them.")  # fmt: skip
    vq_rows = [r for r in result["rows"] if "prior_cpu_s" in r.get("vaekit", {})]
    if s.get("prior_samples") and vq_rows:  # only where a VQ-VAE row trained its prior
        lines.append(
            "VQVAE: after each side's VQ-VAE, a prior over its codes, trained on the codes of "
            "the same training images for the same CPU seconds (benchmarks/families_prior.py: "
            "vaekit's gated PixelCNN by vaekit.train_prior, pythae's PixelCNNSampler); bits "
            "per code: its -log2 p of the 10,000 test images' codes over the 7x7 cells; FID of "
            f"{s['prior_samples']:,} samples through it against as many test images (fewer "
            "than the other rows: the FID of the VQ rows compares with the VQ rows only). "
            + "; ".join(_prior_line(r) for r in vq_rows)
        )
    lines.append(
        f"Load average (1, 5, 15 min) at the end: {m.get('load_average_end')}; "
        f"wall time {result['wall_s']:.0f} s."
    )
    if seeds > 1:  # each seed's own: the machine is shared
        lines.append("Load average after each family and seed: " + "; ".join(
            f"{f} {seed}: {load}" for f, seed, load in m.get("load_average_per_family", [])
        ) + ".")  # fmt: skip
    for row in result["rows"]:
        if "error" in row:
            lines.append(f"{row['family']} (seed {row['seed']}) failed: {row['error']}")
        if "vaekit_skipped" in row:
            lines.append(f"{row['family']}: {row['vaekit_skipped']}")
        for side in ("vaekit", "pythae"):
            if row.get(side, {}).get("no_samples"):
                lines.append(f"{row['family']} ({side}) has no samples: {row[side]['no_samples']}")
    return lines


def _prior_line(row: dict[str, Any]) -> str:
    v, p = row["vaekit"], row.get("pythae", {})
    text = (f"seed {row['seed']}: vaekit's prior ({v['prior_parameters']:,} parameters) "
            f"{v['prior_cpu_s']:.1f} CPU-s, one epoch over {v['prior_images']:,} images "
            f"({v['prior_steps']} steps)")  # fmt: skip
    if "prior_cpu_s" in p:
        text += (f", pythae's ({p['prior_parameters']:,} parameters) {p['prior_cpu_s']:.1f} "
                 f"CPU-s, {p['prior_steps']} steps")  # fmt: skip
    return text
