"""Honest evaluation: the test-set ELBO and its terms, and the importance-weighted log p(x)."""

from __future__ import annotations

import math
from typing import Any

import torch
from tqdm.auto import tqdm

from . import losses
from .data.dataset import to_float
from .errors import DataError
from .models import VAE


def check_input(x: torch.Tensor, model: VAE, source: str = "input") -> torch.Tensor:
    """Bring x to float (N, C, H, W) in [0, 1] for `model`, or fail with a clear error."""
    if x.dtype == torch.uint8:
        x = to_float(x)
    x = x.float()
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if tuple(x.shape[1:]) != tuple(model.input_shape):
        raise DataError(f"{source}: images are {tuple(x.shape[1:])} but the model expects "
                        f"{tuple(model.input_shape)} (C, H, W)")
    if x.numel() and (not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1):
        raise DataError(f"{source}: values must lie in [0, 1] (found {float(x.min()):g}.."
                        f"{float(x.max()):g}); divide 0-255 data by 255")
    return x


def _batches(n: int, batch_size: int) -> list[slice]:
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


@torch.no_grad()
def elbo_stats(model: VAE, x: torch.Tensor, y: torch.Tensor | None = None,
               batch_size: int = 1000, seed: int = 0,
               device: torch.device | str | None = None) -> dict[str, float]:
    """Mean negative ELBO, reconstruction and KL per example over x, one z-sample each.

    The draw of z is seeded, so the same model and data always give the same numbers.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    total = {"nelbo": 0.0, "recon": 0.0, "kl": 0.0}
    n = x.shape[0]
    for s in _batches(n, batch_size):
        xb = to_float(x[s].to(device))
        yb = None if y is None else y[s].to(device)
        terms, _ = model.elbo_terms(xb, yb, generator=g)
        total["nelbo"] += float(terms.nelbo.double().sum())
        total["recon"] += float(terms.recon.double().sum())
        total["kl"] += float(terms.kl.double().sum())
    return {k: v / max(n, 1) for k, v in total.items()}


@torch.no_grad()
def iw_log_px(model: VAE, x: torch.Tensor, k: int, y: torch.Tensor | None = None,
              seed: int = 0, budget: int = 2_000_000, progress: bool = False,
              device: torch.device | str | None = None) -> torch.Tensor:
    """Per-example importance-weighted estimate of log p(x) with K samples, (N,) in float64.

    log p(x) ~ log (1/K) sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x) (Burda et al. 2015),
    computed with logsumexp. Examples and samples are batched together: each forward pass
    decodes about `budget` / (pixels) latent vectors, so memory stays bounded.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    pixels = math.prod(model.input_shape)
    rows = max(1, budget // pixels)  # decoded vectors per forward pass
    n = x.shape[0]
    out = torch.empty(n, dtype=torch.float64)
    if rows >= k:  # several examples per pass, all K samples each
        per_pass, k_chunk = max(1, rows // k), k
    else:  # one example per pass, K split into chunks
        per_pass, k_chunk = 1, rows
    bar = tqdm(total=n * k, disable=not progress, unit="sample", desc=f"log p(x), K={k}",
               leave=False)
    for s in _batches(n, per_pass):
        xb = to_float(x[s].to(device))
        yb = None if y is None else y[s].to(device)
        chunks = []
        for start in range(0, k, k_chunk):
            kk = min(k_chunk, k - start)
            chunks.append(model.log_importance_weights(xb, kk, yb, g).double())
            bar.update(kk * xb.shape[0])
        out[s] = losses.iw_bound(torch.cat(chunks, 0)).cpu()
    bar.close()
    return out


def evaluate(model: VAE, x: torch.Tensor, y: torch.Tensor | None = None, *,
             batch_size: int = 1000, seed: int = 0, iw_samples: int = 0,
             progress: bool = False) -> dict[str, Any]:
    """Test-set numbers in nats per example: the same ones `vaekit evaluate` prints.

    Returns nelbo, recon, kl, n; with `iw_samples` = K > 0 also log_px (the importance-
    weighted estimate) and its standard error over examples; bits/dim for 8-bit data.
    """
    was_training = model.training
    model.eval()
    try:
        xf = check_input(x, model)
        stats: dict[str, Any] = elbo_stats(model, xf, y, batch_size, seed)
        stats["n"] = int(xf.shape[0])
        dims = math.prod(model.input_shape)
        stats["nelbo_bits_per_dim"] = stats["nelbo"] / (dims * math.log(2))
        if iw_samples > 0:
            log_px = iw_log_px(model, xf, iw_samples, y, seed=seed + 1, progress=progress)
            stats["iw_samples"] = iw_samples
            stats["log_px"] = float(log_px.mean())
            stats["log_px_stderr"] = float(log_px.std(unbiased=True) / math.sqrt(len(log_px))
                                           ) if len(log_px) > 1 else 0.0
            stats["nll_bits_per_dim"] = -stats["log_px"] / (dims * math.log(2))
    finally:
        model.train(was_training)
    return stats
