"""The scaling factor a latent diffusion model needs: 1 / the standard deviation of the
autoencoder's latents on its training images, as diffusers' config records it.

Diffusion pipelines multiply the autoencoder's latents by `scaling_factor` so that the
diffusion model sees latents of about unit variance. Latent diffusion measured it on a
batch of training latents (`scale_by_std`: 1 / z.flatten().std()) and the latents it
measured are samples z = mean + std * eps of the posterior, not its means: they are what
the diffusion model is trained on (`latent_dist.sample()` in latent diffusion and in
diffusers' training scripts), and their variance includes the posterior's own. Here they
are drawn with a seeded generator, on up to MOST_IMAGES evenly spaced training images
(bounded time and memory on a large set), BATCH at a time, the sums kept in float64.

The images are the run's own training images, reloaded from its recorded data options;
a run whose data cannot be reloaded as they were (passed from Python, changed or gone
since; the fingerprint in state.pt tells) is refused in one line that asks for the factor.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..data import load_data
from ..data.core.dataset import evenly_spaced, to_float
from ..errors import ConfigError, VaekitError
from ..io.checkpoint import STATE_FILE

MOST_IMAGES = 128  # training images the factor is measured on, evenly spaced
BATCH = 16  # images encoded at a time
ASK = "pass --scaling-factor X (1 / the standard deviation of your latents)"


def scaling_factor(model: Any, x: torch.Tensor, seed: int = 0) -> tuple[float, int]:
    """1 / the standard deviation of posterior samples of `model` (a VAE) on up to
    MOST_IMAGES evenly spaced rows of the images x (N, C, H, W, as stored: uint8 or
    float), and how many images it read."""
    idx = evenly_spaced(x.shape[0], MOST_IMAGES)
    generator = torch.Generator().manual_seed(seed)
    total = squares = torch.zeros((), dtype=torch.float64)
    count = 0
    model.eval()
    device = model.device
    with torch.no_grad():
        for chunk in idx.split(BATCH):
            images = model.prepare(to_float(x.index_select(0, chunk)).to(device))
            mean, logvar = model.posterior(images)  # (B, D) each
            eps = torch.randn(mean.shape, generator=generator).to(device)  # the same draws
            z = (mean + torch.exp(0.5 * logvar) * eps).double().cpu()
            total, squares = total + z.sum(), squares + z.square().sum()
            count += z.numel()
    variance = (squares - total * total / count) / max(count - 1, 1)
    std = math.sqrt(max(variance.item(), 0.0)) if math.isfinite(variance.item()) else math.nan
    if not math.isfinite(std) or std <= 0:
        raise ConfigError(
            f"the latents of {len(idx)} training images have standard deviation {std:.3g}, so "
            f"no scaling factor can be measured; {ASK}"
        )
    return 1.0 / std, len(idx)


def training_images(model: Any, run: str | Path) -> torch.Tensor:
    """The training images (N, C, H, W, as stored) of the run `run` that trained `model`,
    reloaded from its data options, or one line asking for the factor instead."""
    why = "it records no training configuration"
    cfg = getattr(model, "run_config", None)
    if cfg is not None:
        try:
            data = load_data(cfg.data, seed=cfg.train.seed, progress=False)
            why = _differs(data, model, Path(run))
        except VaekitError as e:
            why = f"data.name {cfg.data.name!r}: {e}"
    if why:
        raise ConfigError(
            f"the scaling factor is measured on the run's training images, and those of "
            f"{run} cannot be reloaded ({why}); {ASK}"
        )
    return data.x_train


def _differs(data: Any, model: Any, run: Path) -> str:
    """Why the reloaded `data` are not the images the run trained on ('' when they are)."""
    name = f"data.name {model.run_config.data.name!r}"
    if data.shape != tuple(model.input_shape):
        return f"{name} now gives images of shape {data.shape}, the model reads {model.input_shape}"
    state = run / STATE_FILE
    if not state.is_file():  # a model folder without its training state: cannot be told
        return ""
    try:  # memory-mapped: only the fingerprint is read, not the weights
        recorded = torch.load(state, map_location="cpu", weights_only=True, mmap=True)["data"]
    except Exception as e:  # a damaged file; KeyError: saved without the record
        return f"{STATE_FILE} cannot be read ({type(e).__name__})"
    if recorded is not None and recorded != data.fingerprint():
        return (
            f"{name} now gives other images than it was trained on: data passed from "
            "Python, or changed since"
        )
    return ""
