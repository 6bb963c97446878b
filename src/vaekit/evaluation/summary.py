"""The numbers of an evaluation for people: the lines `vaekit evaluate` prints, and the
(label, value, note) rows of the report's and the model card's metric tables."""

from __future__ import annotations

import math
from typing import Any

# metric key -> (label, what it means); other numeric keys are shown under their own name
METRIC_LABELS = {
    "nelbo": ("negative ELBO", "nats per example, an upper bound on -log p(x)"),
    "recon": ("reconstruction", "-E_q[log p(x|z)], nats per example"),
    "kl": ("KL(q(z|x) || p(z))", "nats per example"),
    "log_px": ("log p(x)", "importance-weighted estimate, nats per example"),
    "iw_elbo": ("ELBO on the same samples", "the mean of the K importance weights' logs"),
    "iw_ess": ("effective sample size", "of the K importance weights, mean per image"),
    "nelbo_bits_per_dim": ("negative ELBO", "bits per dimension"),
    "nll_bits_per_dim": ("-log p(x)", "bits per dimension, importance-weighted"),
    "active_units": ("active units", "Cov_x(E_q[z_d]) > 0.01 (Burda et al. 2015)"),
    "mse": ("reconstruction MSE", "per pixel, posterior mean decoded"),
    "psnr": ("PSNR", "dB"),
    "ssim": ("SSIM", "structural similarity"),
    "lpips": ("LPIPS", "reconstructions against the test images, lower is closer"),
    "rfid": ("rFID", "reconstructions against the test images"),
    "fid": ("FID", "prior samples against the test set"),
    "n": ("test images", "evaluated"),
    "objective": ("VQ-VAE objective", "reconstruction + codebook + beta x commitment, nats"),
    "vq": ("codebook + commitment", "nats per example"),
    "perplexity": ("codebook perplexity", "exp(entropy) of the code frequencies"),
    "codebook_usage": ("codebook usage", "the fraction of the codes used"),
    "codes_used": ("codes used", "at least once on the test set"),
    "codebook_size": ("codebook size", "codes"),
    "prior_nll": ("-log p(codes)", "the code prior on the test codes, nats per example"),
    "prior_bits_per_code": ("-log p(codes)", "bits per code"),
    "prior_bits_per_dim": ("-log p(codes)", "bits per image dimension (C x H x W values)"),
}
HIDDEN = {"iw_samples", "log_px_stderr", "seconds", "kl_per_dim", "activity"}


def number(value: float) -> str:
    if isinstance(value, int) or (
        isinstance(value, float) and value.is_integer() and abs(value) < 1e9
    ):
        return f"{int(value):,}"
    if not math.isfinite(value):
        return str(value)
    return f"{value:,.4f}" if abs(value) < 10 else f"{value:,.2f}"


def metrics_rows(stats: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The metrics table as (label, value, note) rows, known metrics first."""
    rows = []
    keys = [k for k in METRIC_LABELS if k in stats] + sorted(
        k for k in stats if k not in METRIC_LABELS and k not in HIDDEN
    )
    for key in keys:
        value = stats[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # per-dimension lists and the like have their own figure
        label, note = METRIC_LABELS.get(key, (key.replace("_", " "), ""))
        text = number(value)
        if f"{key}_features" in stats:  # fid, rfid: which network's features
            note += f", {stats[f'{key}_features']} features"
        if key == "lpips" and "lpips_net" in stats:
            note += f", {stats['lpips_net']}"
        if key == "log_px":
            label = f"log p(x), K = {stats.get('iw_samples', '?')}"
            if "log_px_stderr" in stats:
                text += f" ± {stats['log_px_stderr']:.3f}"
        rows.append((label, text, note))
    return rows


def _terms(stats: dict[str, Any]) -> list[str]:
    """The objective's lines: the negative ELBO and its terms, or a VQ-VAE's objective and
    terms and why it has no bound."""
    if "nelbo" in stats:
        return [
            f"  negative ELBO      {stats['nelbo']:11.3f}   "
            f"({stats['nelbo_bits_per_dim']:.4f} bits/dim)",
            f"  reconstruction     {stats['recon']:11.3f}",
            f"  KL                 {stats['kl']:11.3f}",
            *_layers(stats),
        ]
    return [
        f"  objective          {stats['objective']:11.3f}   (reconstruction + codebook "
        "+ beta x commitment)",
        f"  reconstruction     {stats['recon']:11.3f}",
        f"  codebook + commit. {stats['vq']:11.3f}",
        f"  no -ELBO or log p(x): {stats['no_density']}",
    ]


def _codes(stats: dict[str, Any]) -> list[str]:
    """A VQ-VAE's lines: how it uses its codebook, and its prior over the codes."""
    lines = []
    if "perplexity" in stats:
        lines.append(
            f"  codebook           perplexity {stats['perplexity']:.2f} of "
            f"{stats['codebook_size']:,} codes, {stats['codes_used']:,} used "
            f"({100 * stats['codebook_usage']:.1f}%)"
        )
    if "prior_nll" in stats:
        lines.append(
            f"  code prior         {stats['prior_nll']:11.3f}   (-log p(codes) of the test "
            f"codes: {stats['prior_bits_per_code']:.4f} bits per code, "
            f"{stats['prior_bits_per_dim']:.4f} bits per image dimension)"
        )
    return lines


def _layers(stats: dict[str, Any]) -> list[str]:
    """A hierarchical VAE's KL per layer (kl_1: z_1, read by the decoder), on one line."""
    layers: list[float] = []
    while f"kl_{len(layers) + 1}" in stats:
        layers.append(stats[f"kl_{len(layers) + 1}"])
    if not layers:
        return []
    shown = ", ".join(f"z_{i + 1} {kl:.3f}" for i, kl in enumerate(layers))
    return [f"    per layer:       {shown} (z_1 is read by the decoder)"]


def summary(stats: dict[str, Any], dataset: str = "the test set") -> str:
    """The lines `vaekit evaluate` prints for a result of `evaluate`."""
    lines = [f"test set: {stats['n']} examples of {dataset}, nats per example"]
    lines += _terms(stats)
    if "log_px" in stats:
        k = stats["iw_samples"]
        lines.append(
            f"  log p(x), K={k:<6} {stats['log_px']:11.3f} +- "
            f"{stats['log_px_stderr']:.3f}   ({stats['nll_bits_per_dim']:.4f} bits/dim;"
            f" importance-weighted, standard error over examples)"
        )
        lines.append(
            f"    same samples:    ELBO {stats['iw_elbo']:.3f}, effective sample size "
            f"{stats['iw_ess']:.1f} of {k}"
        )
    if "psnr" in stats:
        lines.append(
            f"  reconstructions    MSE {stats['mse']:.5f} per pixel, PSNR "
            f"{stats['psnr']:.2f} dB, SSIM {stats['ssim']:.4f}"
        )
    elif "mse" in stats:  # tables and unbounded data: no PSNR or SSIM
        lines.append(f"  reconstructions    MSE {stats['mse']:.5f} per value (model units)")
    if "lpips" in stats:
        lines.append(
            f"  LPIPS              {stats['lpips']:11.4f}   (reconstructions vs test images, "
            f"{stats['lpips_net']})"
        )
    if "rfid" in stats:
        lines.append(
            f"  rFID               {stats['rfid']:11.3f}   (reconstructions vs test images, "
            f"{stats['rfid_features']} features)"
        )
    if "active_units" in stats:
        dims = len(stats.get("activity", stats.get("kl_per_dim", [])))
        lines.append(
            f"  active units       {stats['active_units']} of {dims} "
            "(Cov_x E_q[z_d] > 0.01, Burda et al. 2015)"
        )
    if "kl_per_dim" in stats:
        kl = stats["kl_per_dim"]
        order = sorted(range(len(kl)), key=lambda i: -kl[i])
        shown = ", ".join(f"z{i} {kl[i]:.2f}" for i in order[:8])
        more = f", ... ({len(kl) - 8} more)" if len(kl) > 8 else ""
        lines.append(f"  KL per dimension   {shown}{more}")
    lines += _codes(stats)
    if "fid" in stats:
        lines.append(
            f"  FID                {stats['fid']:11.3f}   (prior samples vs test set, "
            f"{stats['fid_features']} features)"
        )
    total = sum(stats.get("seconds", {}).values())
    lines.append(f"evaluated in {total:.1f} s")
    return "\n".join(lines)
