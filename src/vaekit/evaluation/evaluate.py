"""`vaekit evaluate` as a function: the test-set ELBO, the importance-weighted log p(x), and
the image and latent metrics (LPIPS and rFID of reconstructions too, when asked for), in one
dict (the same numbers the CLI prints)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import numpy as np
import torch

from ..arguments import is_whole
from ..data.core.streaming import LazyRows
from ..errors import ConfigError, DataError
from ..models import VAE, VQVAE, LadderVAE
from ..models.protocol import as_input
from ..models.vqvae import NO_DENSITY
from ..wording import on_command_line
from . import metrics, perceptual_scores
from .codebook import codebook_stats
from .likelihood import DEFAULT_BUDGET, elbo_stats, importance_sampling, layer_kl_stats
from .perceptual_scores import Distance
from .prior import prior_stats


def check_input(x: Any, model: VAE, source: str = "input") -> torch.Tensor:
    """Bring x (a tensor or numpy array, in the user's units; uint8 read as x / 255) to
    float (N, C, H, W) for `model`, or fail with a clear error. Data the model reads as
    bounded (images) must lie in [0, 1] once normalised."""
    if isinstance(x, LazyRows):  # a streamed test split: evaluated whole, like any other
        x = x.materialize()
    if isinstance(x, torch.Tensor | np.ndarray) and x.ndim == 3:  # one example (C, H, W)
        x = x[None]
    try:
        x = as_input(x, model.input_shape)  # the check every model input gets
    except DataError as e:
        raise DataError(f"{source}: {e}") from None
    if x.shape[0] == 0:
        raise DataError(f"{source}: no images to evaluate")
    if not torch.isfinite(x).all():
        raise DataError(f"{source} contains NaN or infinite values")
    if model.normalization.bounded:
        m = model.normalization.to_model(x)
        if m.min() < 0 or m.max() > 1:
            unit = "" if model.normalization.identity else " after the model's normalisation"
            raise DataError(
                f"{source}: values must lie in [0, 1]{unit} (found {float(x.min()):g}.."
                f"{float(x.max()):g}); divide 0-255 data by 255"
            )
    return x


def _mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    n = values.numel()
    mean = float(values.mean())
    return mean, float(values.std(unbiased=True) / math.sqrt(n)) if n > 1 else 0.0


Part = tuple[str, Callable[[], dict[str, Any]]]  # a named part of the numbers, and its work


@dataclass(frozen=True)
class EvaluateOptions:
    """What `evaluate` computes and how: its keyword arguments as one record."""

    batch_size: int = 1000  # examples per forward pass
    seed: int = 0  # of the z-samples (the importance samples take seed + 1)
    iw_samples: int = 0  # K importance samples per example for log p(x); 0: none
    progress: bool = False  # a progress bar over the importance samples
    budget: int = DEFAULT_BUDGET  # values one importance-sampling pass may hold
    precision: str = "fp32"  # of the importance sampling
    image_metrics: bool = True  # mse, psnr, ssim of the reconstructions
    latent_metrics: bool = True  # kl_per_dim and active_units
    fid: str | torch.nn.Module | None = None  # FID of prior samples (see `metrics.fid`)
    fid_samples: int = 10_000  # images FID and rFID compare, at most
    fid_weights: str | None = None  # a local file of the FID network's weights
    rfid: str | torch.nn.Module | None = None  # FID of the reconstructions, the same choices
    lpips: str | Distance | None = None  # LPIPS of the reconstructions

    def check(self, model: VAE) -> None:
        """One-line errors for options out of range or metrics the model cannot take,
        before any work."""
        counts = {"batch_size": (self.batch_size, 1), "iw_samples": (self.iw_samples, 0)}
        _check_counts(**counts, seed=(self.seed, 0))
        if self.fid is not None or self.rfid is not None:
            _check_counts(fid_samples=(self.fid_samples, 2))
        _check_density(model, self.iw_samples, self.fid)
        for what, asked in (("FID", self.fid), ("rFID", self.rfid), ("LPIPS", self.lpips)):
            if asked is not None and not (isinstance(asked, str) and asked == "none"):
                perceptual_scores.check_images(model, what)  # tables have no images


def evaluate(
    model: VAE,
    x: torch.Tensor | np.ndarray,
    y: torch.Tensor | None = None,
    *,
    batch_size: int = EvaluateOptions.batch_size,
    seed: int = EvaluateOptions.seed,
    iw_samples: int = EvaluateOptions.iw_samples,
    progress: bool = EvaluateOptions.progress,
    budget: int = EvaluateOptions.budget,
    precision: str = EvaluateOptions.precision,
    image_metrics: bool = EvaluateOptions.image_metrics,
    latent_metrics: bool = EvaluateOptions.latent_metrics,
    fid: str | torch.nn.Module | None = EvaluateOptions.fid,
    fid_samples: int = EvaluateOptions.fid_samples,
    fid_weights: str | None = EvaluateOptions.fid_weights,
    rfid: str | torch.nn.Module | None = EvaluateOptions.rfid,
    lpips: str | Distance | None = EvaluateOptions.lpips,
) -> dict[str, Any]:
    """Test-set numbers, nats per example: the same ones `vaekit evaluate` prints.

    Always: n, nelbo, recon, kl (one z-sample each, seeded) and nelbo_bits_per_dim. With
    `iw_samples` K > 0: log_px (the importance-weighted estimate) and its standard error
    over examples, iw_elbo (the ELBO on the same K samples), iw_ess and nll_bits_per_dim.
    `image_metrics`: mse, psnr, ssim of posterior-mean reconstructions. `latent_metrics`:
    kl_per_dim and active_units (Burda et al. 2015). `fid`: FID of prior samples against
    the images, with 'inception', 'random' or a feature network (see `metrics.fid`);
    `rfid`: FID of the reconstructions against the images, the same choices; both compare
    up to `fid_samples` images. `lpips`: LPIPS of the reconstructions, 'lpips-vgg',
    'lpips-alex' (weights downloaded on first use) or a distance (see
    `perceptual.build_perceptual`). `seconds` is the wall time of each part. The options
    are `EvaluateOptions`' (`evaluate_with` takes them as one record).
    """
    options = EvaluateOptions(
        batch_size=batch_size, seed=seed, iw_samples=iw_samples, progress=progress,
        budget=budget, precision=precision, image_metrics=image_metrics,
        latent_metrics=latent_metrics, fid=fid, fid_samples=fid_samples,
        fid_weights=fid_weights, rfid=rfid, lpips=lpips,
    )  # fmt: skip
    return evaluate_with(model, x, y, options)


def evaluate_with(
    model: VAE, x: torch.Tensor | np.ndarray, y: torch.Tensor | None, options: EvaluateOptions
) -> dict[str, Any]:
    """`evaluate` with its options as one record."""
    if not isinstance(model, VAE):
        raise ConfigError(f"evaluate takes a vaekit.VAE, not {type(model).__name__}")
    options.check(model)
    was_training = model.training
    model.eval()
    try:
        xf = check_input(x, model)
        # first the parts that need an extra or downloaded weights: a missing one fails at once
        first = _quality_parts(model, xf, y, options)
        return _timed(first, _parts(model, xf, y, options))
    finally:
        model.train(was_training)


def _parts(model: VAE, x: torch.Tensor, y: torch.Tensor | None, o: EvaluateOptions) -> list[Part]:
    """The ELBO (a VQ-VAE: its objective), and the log p(x), image and latent (a VQ-VAE:
    codebook) parts asked for."""
    parts: list[Part] = [("elbo", partial(_elbo, model, x, y, o.batch_size, o.seed))]
    if not model.has_density:  # a VQ-VAE: its objective's terms, no bound
        parts = [("objective", partial(_objective, model, x, y, o.batch_size, o.seed))]
    if o.iw_samples > 0:
        parts.append(("log_px", partial(_log_px, model, x, y, o)))
    if o.image_metrics:
        image = partial(metrics.reconstruction_metrics, model, x, y, o.batch_size)
        parts.append(("image_metrics", image))
    if o.latent_metrics and not model.has_density:  # its codebook's use instead
        parts.append(("codebook", partial(codebook_stats, model, x, o.batch_size)))
    if not model.has_density and model.has_prior:  # a VQ-VAE's prior over its codes
        parts.append(("prior", partial(prior_stats, model, x, o.batch_size)))
    elif o.latent_metrics:
        parts.append(("latent_metrics", partial(_latents, model, x, y, o.batch_size)))
    return parts


def _timed(first: list[Part], then: list[Part]) -> dict[str, Any]:
    """Run `first`, then `then`, timing each part; the results in the order `then`, `first`."""
    seconds: dict[str, float] = {}
    results: dict[str, dict[str, Any]] = {}
    for part, compute in first + then:
        started = time.perf_counter()
        results[part] = compute()
        seconds[part] = time.perf_counter() - started
    stats: dict[str, Any] = {}
    for part, _ in then + first:
        stats.update(results[part])
    stats["seconds"] = seconds
    return stats


def _quality_parts(
    model: VAE, x: torch.Tensor, y: torch.Tensor | None, o: EvaluateOptions
) -> list[Part]:
    """The FID, rFID and LPIPS parts asked for (LPIPS's network is built, and its weights
    downloaded, here)."""
    parts: list[Part] = []
    if o.fid is not None:
        parts.append(("fid", partial(_frechet, "fid", metrics.fid, model, x, y, o.fid, o)))
    if o.rfid is not None:
        rfid = partial(_frechet, "rfid", perceptual_scores.rfid, model, x, y, o.rfid, o)
        parts.append(("rfid", rfid))
    if o.lpips is not None and o.lpips != "none":
        distance, name = perceptual_scores.lpips_network(o.lpips, model.device)
        parts.append(
            (
                "lpips",
                lambda: {
                    "lpips": perceptual_scores.lpips(model, x, y, distance, o.batch_size),
                    "lpips_net": name,
                },
            )
        )
    return parts


def _feature_name(feature: str | torch.nn.Module) -> str:
    return feature if isinstance(feature, str) else type(feature).__name__


MAX_IW_SAMPLES = 1_000_000  # importance samples per image: far beyond the 5,000 papers use


def _check_counts(**counts: tuple[Any, int]) -> None:
    """Each argument a whole number from its low bound up (iw_samples at most
    MAX_IW_SAMPLES), or a one-line ConfigError naming it."""
    for name, (value, low) in counts.items():
        high = MAX_IW_SAMPLES if name == "iw_samples" else 2**62
        if not is_whole(value, low, high):
            raise ConfigError(f"{name} must be a whole number from {low} to {high}; got {value!r}")


def _pixels(model: VAE) -> bool:
    """The model's units are 8-bit images read as x / 255 (not table rows, not normalised)."""
    norm = model.normalization
    return not model.is_table and norm.identity and norm.bounded


def _check_density(model: VAE, iw_samples: int, fid: Any) -> None:
    """log p(x) needs a density, FID of prior samples a prior: a VQ-VAE has no density,
    and samples only with a prior over its codes (its reconstructions and codebook are
    evaluated)."""
    if model.has_density:
        return
    cli = on_command_line()
    asks: list[tuple[Any, str, str]] = [(iw_samples > 0, "log p(x)", "iw-samples")]
    asks += [] if model.has_prior else [(fid, "FID of prior samples", "fid")]
    for asked, what, name in asks:
        if asked is not None and asked is not False and asked != "none":
            drop = f"--{name}" if cli else f"{name.replace('-', '_')}="
            why = NO_DENSITY if name != "fid" else cast(VQVAE, model).no_prior_reason
            raise ConfigError(
                f"{why}; {what} cannot be estimated: drop {drop} (reconstructions, rFID, "
                "LPIPS and the codebook's perplexity are evaluated)"
            )


def _objective(
    model: VAE, x: torch.Tensor, y: torch.Tensor | None, batch_size: int, seed: int
) -> dict[str, Any]:
    """A VQ-VAE's objective and its terms, per example (the ELBO's place), and why there
    is no bound."""
    stats = elbo_stats(model, x, y, batch_size, seed)
    out: dict[str, Any] = dict(zip(model.term_names, stats.values(), strict=True))
    out["n"] = int(x.shape[0])
    out["no_density"] = NO_DENSITY
    return out


def _elbo(
    model: VAE, x: torch.Tensor, y: torch.Tensor | None, batch_size: int, seed: int
) -> dict[str, Any]:
    stats: dict[str, Any] = elbo_stats(model, x, y, batch_size, seed)
    if isinstance(model, LadderVAE):  # its KL per layer: kl_1 ... kl_L
        stats.update(layer_kl_stats(model, x, y, batch_size, seed))
    stats["n"] = int(x.shape[0])
    dims = math.prod(model.input_shape)
    stats["nelbo_bits_per_dim"] = metrics.bits_per_dim(
        stats["nelbo"], dims, model.likelihood, _pixels(model)
    )
    return stats


def _log_px(
    model: VAE, x: torch.Tensor, y: torch.Tensor | None, o: EvaluateOptions
) -> dict[str, Any]:
    k, precision = o.iw_samples, o.precision
    iw = importance_sampling(
        model, x, k, y, seed=o.seed + 1, budget=o.budget, precision=precision, progress=o.progress
    )
    stats: dict[str, Any] = {"iw_samples": k}
    stats["log_px"], stats["log_px_stderr"] = _mean_and_stderr(iw.log_px)
    stats["iw_elbo"] = float(iw.elbo.mean())
    stats["iw_ess"] = float(iw.ess.mean())
    dims = math.prod(model.input_shape)
    stats["nll_bits_per_dim"] = metrics.bits_per_dim(
        -stats["log_px"], dims, model.likelihood, _pixels(model)
    )
    if precision != "fp32":
        stats["iw_precision"] = precision
    return stats


def _latents(
    model: VAE, x: torch.Tensor, y: torch.Tensor | None, batch_size: int
) -> dict[str, Any]:
    units = metrics.active_units(model, x, y, batch_size=batch_size)
    out: dict[str, Any] = {"active_units": units.count, "activity": units.activity.tolist()}
    if model.closed_form_kl:  # else the KL does not split by dimension (no_kl_per_dim)
        out["kl_per_dim"] = metrics.kl_per_dimension(model, x, y, batch_size).tolist()
    return out


def _frechet(
    key: str,
    distance: Callable[..., float],
    model: VAE,
    x: torch.Tensor,
    y: torch.Tensor | None,
    feature: str | torch.nn.Module,
    o: EvaluateOptions,
) -> dict[str, Any]:
    """`key` ('fid': prior samples, or 'rfid': reconstructions, against x) and the feature
    network it used, from `distance` (metrics.fid or perceptual_scores.rfid)."""
    value = distance(
        model,
        x,
        y,
        feature=feature,
        n=o.fid_samples,
        seed=o.seed,
        batch_size=o.batch_size,
        weights=o.fid_weights,
    )
    return {key: value, f"{key}_features": _feature_name(feature)}
