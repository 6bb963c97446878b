"""What an export to diffusers must hold before it is written: a model trained on images
in [0, 1], and a folder that diffusers rebuilds into the model it came from (an
AutoencoderKL, or a VQModel for a VQ-VAE: its codes must then be the same, exactly).

Units: vaekit's autoencoderkl reads images in [0, 1] and feeds its diffusers encoder
2x - 1, which is diffusers' convention for images in [-1, 1]. A model trained on other
data (float data in [-1, 1] with data.normalize none, say) computes encoder(2x - 1) on
them, which diffusers' AutoencoderKL fed the same data does not; no exact conversion
exists (folding 2x - 1 into conv_in changes what its zero padding means), so it is
refused.

Rebuild: the written config.json and weights are read back by diffusers'
`from_pretrained`, and the rebuilt model's posterior (mean and log-variance) and decoded
images on seeded inputs are compared with vaekit's. The two compute the same operations,
vaekit's CPU kernels summing in another order: measured, they agree to 2e-7 (latents)
and 2e-6 (images) on the tests' two-level model, and to 7e-7 and 1.4e-5 on Stable
Diffusion's four-level layout (128-512 channels, two blocks a level) at 128 px. The
tolerance, TOLERANCE times the larger of 1 and the outputs' largest magnitude, leaves
70 times that for larger images and deeper models' float32 rounding, while a config
diffusers reads differently (a decoder act_fn it does not carry: relu for silu) differs
by tenths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from .init import quiet

TOLERANCE = 1e-3  # relative to max(1, the largest |output|), in float32
SAMPLES = 2  # seeded images compared


def check_units(model: Any) -> None:
    """Refuse a model whose training data were not images in [0, 1]."""
    if not model.normalization.bounded:
        raise ConfigError(
            "this model was trained on data outside [0, 1] (data.normalize none on float "
            "data); the export maps images in [0, 1] to diffusers' [-1, 1], so diffusers "
            "would compute something else on these data: train on images in [0, 1] (data "
            "in [-1, 1] become (x + 1) / 2)"
        )


def check_rebuilt(model: Any, folder: Path, seed: int = 0) -> None:
    """Refuse the export in `folder` unless diffusers' AutoencoderKL.from_pretrained (a
    VQModel's, for a VQ-VAE) rebuilds it into a model that computes what `model` (a vaekit
    VAE) does."""
    import diffusers

    vq = model.posterior_kind == "vq"
    with quiet():
        rebuilt = getattr(diffusers, "VQModel" if vq else "AutoencoderKL").from_pretrained(
            folder, torch_dtype=torch.float32, low_cpu_mem_usage=False
        )
    rebuilt.eval()
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(SAMPLES, *model.input_shape, generator=generator)  # images in [0, 1]
    with torch.no_grad():
        pairs = _vq_pairs(model, rebuilt, x) if vq else _kl_pairs(model, rebuilt, x)
    for name, (ours, theirs) in pairs.items():
        gap = (ours - theirs).abs().max().item()
        bound = TOLERANCE * max(1.0, theirs.abs().max().item())
        if not gap <= bound:  # NaN too
            raise ConfigError(
                f"diffusers would rebuild this export into another model: {name} differ "
                f"from vaekit's by up to {gap:.3g} (allowed {bound:.1g}) on seeded "
                "images, so its config.json describes another model than the run's (edited "
                "by hand?); nothing was written"
            )


Pairs = dict[str, tuple[torch.Tensor, torch.Tensor]]


def _kl_pairs(model: Any, rebuilt: Any, x: torch.Tensor) -> Pairs:
    """vaekit's and diffusers' AutoencoderKL posterior and decoded images on x."""
    mean, logvar = model.posterior(model.prepare(x))  # (B, D) each
    posterior = rebuilt.encode(2 * x - 1).latent_dist  # diffusers' units: [-1, 1]
    images = (rebuilt.decode(posterior.mean).sample + 1) / 2
    return {
        "the posterior means": (mean.view_as(posterior.mean), posterior.mean),
        "the log-variances": (logvar.view_as(posterior.logvar), posterior.logvar),
        "the decoded images": (model.decode(mean), images),
    }


def _vq_pairs(model: Any, rebuilt: Any, x: torch.Tensor) -> Pairs:
    """vaekit's and diffusers' VQModel latents (z_e), codes and decoded images on x. Both
    quantise vaekit's z_e, so that the codes compare the codebooks exactly (a z_e that
    rounds differently could fall on another code near a tie)."""
    z_e = model.pre_quantize(model.prepare(x))  # (B, C, h, w)
    latents = rebuilt.encode(2 * x - 1).latents
    ours = model.quantize(z_e)
    _, _, (_, _, codes) = rebuilt.quantize(z_e)
    images = (rebuilt.decode(z_e).sample + 1) / 2  # VQModel.decode quantises z_e first
    differ = (ours.codes.flatten() != codes.flatten()).float()  # 1 where a code differs
    return {
        "the latents (z_e)": (z_e, latents),
        "the codes": (differ, torch.zeros_like(differ)),
        "the decoded images": (model.decode(ours.z_q), images),
    }
