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

The images are the run's own training images, reloaded as every command reloads a run's
data (loading.own_data); a run whose data cannot be reloaded as they were (passed from
Python, changed or gone since) is refused in one line that asks for the factor.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..data.core.dataset import evenly_spaced, to_float
from ..errors import ConfigError, VaekitError

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
    reloaded as every command reloads a run's data (`loading.own_data`), or one line
    asking for the factor instead."""
    from ..loading import carved, own_data

    try:
        data = carved(own_data(model, str(run), ask=ASK))
    except VaekitError as e:
        raise ConfigError(
            f"the scaling factor is measured on the run's training images, which cannot be "
            f"reloaded here: {e}"
        ) from None
    if data.shape != tuple(model.input_shape):
        raise ConfigError(
            f"the scaling factor is measured on the run's training images, and data.name "
            f"{data.name!r} now gives images of shape {data.shape}, where the model reads "
            f"{tuple(model.input_shape)}: {ASK}"
        )
    return data.x_train
