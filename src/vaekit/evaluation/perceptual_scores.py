"""How close reconstructions of held-out images look to the images: LPIPS (Zhang et al. 2018)
and reconstruction FID (rFID), the numbers an autoencoder for latent diffusion is judged by.

Both compare each image with the decoded posterior mean of its encoding, the reconstruction
that MSE, PSNR and SSIM (metrics.py) measure, in [0, 1]. rFID is the Frechet distance between
the feature statistics of the images and of their reconstructions, with the feature networks
of FID of prior samples (metrics.fid_metric: Inception, seeded random, or a module). Batches
stream into the metric, so the images are never held twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from ..errors import ConfigError
from ..models import VAE
from . import metrics, perceptual

LPIPS_ROWS = 32  # images per LPIPS pass: VGG's first layers hold 64 maps of the full image
Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_images(model: VAE, what: str) -> None:
    """Refuse `what` (FID, rFID, LPIPS: metrics of images in [0, 1]) for a model of other
    data (table rows, unbounded values), in one line, before any work."""
    if not model.normalization.bounded or min(model.input_shape[1:]) < 2:
        kind = "table rows" if min(model.input_shape[1:]) < 2 else "values outside [0, 1]"
        raise ConfigError(
            f"{what} compares images in [0, 1]; this model's data are {kind} (shape "
            f"{tuple(model.input_shape)}), not such images: evaluate it without {what}"
        )


def pairs(
    model: VAE, x: torch.Tensor, y: torch.Tensor | None, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images, reconstructions) batch by batch, both in [0, 1] on the model's device."""
    if model.conditional and y is None:
        raise ConfigError("reconstructing images with a class-conditional model needs their labels")
    device = model.device
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            yb = None if y is None else torch.as_tensor(y[i : i + batch_size], device=device).long()
            xb = model.prepare(x[i : i + batch_size].to(device))
            yield xb, model.mean(model.decode(model.posterior(xb, yb)[0], yb))


def lpips_network(lpips: str | Distance, device: torch.device) -> tuple[Distance, str]:
    """The distance `lpips` names ('lpips-vgg', 'lpips-alex': weights from the standard place,
    downloaded on first use) or is, and its name for the results."""
    if isinstance(lpips, str):
        return perceptual.build_perceptual(lpips, device), lpips
    if isinstance(lpips, perceptual.LPIPS):
        random = perceptual.RANDOM in lpips.sources  # a smoke test, no perceptual metric
        return lpips, f"lpips-{lpips.net}" + (" (random weights)" if random else "")
    if not callable(lpips):
        raise ConfigError(
            f"lpips must be 'lpips-vgg', 'lpips-alex' or a distance d(a, b) -> (B,); got "
            f"{type(lpips).__name__}"
        )
    return lpips, type(lpips).__name__


def lpips(
    model: VAE, x: torch.Tensor, y: torch.Tensor | None, distance: Distance, batch_size: int
) -> float:
    """The mean LPIPS distance between the images x and their reconstructions."""
    check_images(model, "LPIPS")
    total, n = 0.0, 0
    with torch.no_grad():
        for xb, recon in pairs(model, x, y, batch_size):
            for i in range(0, xb.shape[0], LPIPS_ROWS):
                d = _distances(distance, recon[i : i + LPIPS_ROWS], xb[i : i + LPIPS_ROWS])
                total += float(d.double().sum())
                n += d.shape[0]
    return total / max(1, n)


def _distances(distance: Distance, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """distance(a, b) for B pairs of images, checked: one finite number per pair, as (B,)
    or (B, 1, 1, 1) (the lpips package's shape)."""
    d = distance(a, b)
    name = type(distance).__name__
    if not torch.is_tensor(d) or d.numel() != a.shape[0] or (d.dim() and d.shape[0] != a.shape[0]):
        got = f"a tensor {tuple(d.shape)}" if torch.is_tensor(d) else type(d).__name__
        raise ConfigError(
            f"the LPIPS distance {name} returned {got} for {a.shape[0]} pairs of images; it "
            f"must return one distance per pair, a tensor ({a.shape[0]},)"
        )
    d = d.reshape(-1)
    if not (d.is_floating_point() and bool(torch.isfinite(d).all())):
        kind = "non-finite" if d.is_floating_point() else str(d.dtype)
        raise ConfigError(
            f"the LPIPS distance {name} returned {kind} distances; it must return finite "
            "float distances"
        )
    return d


def rfid(
    model: VAE,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    feature: str | nn.Module = "inception",
    n: int = 10_000,
    seed: int = 0,
    batch_size: int = 500,
    weights: str | None = None,
) -> float:
    """FID between (up to) n images of x and their reconstructions."""
    check_images(model, "rFID")
    if min(n, x.shape[0]) < 2:
        raise ConfigError("rFID needs at least 2 images")
    metric, prepare = metrics.fid_metric(feature, model.input_shape[0], weights, seed)
    metric = metric.to(model.device)
    with torch.no_grad():
        for xb, recon in pairs(model, x[:n], None if y is None else y[:n], batch_size):
            metric.update(prepare(xb), real=True)
            metric.update(prepare(recon), real=False)
        return float(metric.compute())
