"""The discriminators of the adversarial terms: the PatchGAN of the latent-diffusion
autoencoder recipe, and FactorVAE's on latent codes (`LatentDiscriminator`, below).

taming-transformers' `NLayerDiscriminator` (pix2pix's PatchGAN), which latent-diffusion
and diffusers' research script `train_autoencoderkl.py` use as it is: a 4x4 stride-2
conv + LeakyReLU(0.2), then `layers - 1` more stride-2 convs with BatchNorm, doubling the
channels up to 8x, one stride-1 conv with BatchNorm, and a stride-1 conv to one logit per
patch. It is only ever used in training mode, so its BatchNorm layers keep no running
statistics (taming's do, unused): one non-finite batch cannot poison a checkpoint.

Written here because no maintained library ships it: taming-transformers' PyPI releases
are unmaintained 2021 snapshots of a research repository (0.0.1, and forks), and
diffusers has the recipe only as a research script that copies the class. The layers are
torch's own. Its initialisation, taming's `weights_init`, draws from a generator of its
own, so building it never moves the run's random streams.
"""

from __future__ import annotations

import torch
from torch import nn

KERNEL = 4  # the PatchGAN's kernel; padding 1, so a stride-2 layer halves a side (floor)


def patch_side(side: int, layers: int) -> int:
    """The side of the logit map for an input side: halved by each stride-2 layer, then
    one pixel less for each of the two stride-1 4x4 convs."""
    for _ in range(layers):
        side //= 2
    return side - 2


class PatchDiscriminator(nn.Module):
    """x (B, C, H, W) -> logits (B, 1, h, w), one per overlapping patch of x."""

    def __init__(self, in_channels: int, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        self.layers = layers
        seq: list[nn.Module] = [
            nn.Conv2d(in_channels, channels, KERNEL, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        ]
        mult = 1
        for n in range(1, layers + 1):  # the last of these is the stride-1 layer
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < layers else 1
            seq += [
                nn.Conv2d(channels * prev, channels * mult, KERNEL, stride, 1, bias=False),
                nn.BatchNorm2d(channels * mult, track_running_stats=False),
                nn.LeakyReLU(0.2),
            ]
        seq.append(nn.Conv2d(channels * mult, 1, KERNEL, stride=1, padding=1))
        self.main = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> PatchDiscriminator:
        """taming's `weights_init`: conv weights ~ N(0, 0.02), BatchNorm scales
        ~ N(1, 0.02) and shifts 0, drawn from `generator` (on the CPU, then copied); conv
        biases start at 0 (taming keeps torch's default, drawn from the global RNG)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(0.02 * torch.randn(m.weight.shape, generator=generator))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1.0 + 0.02 * torch.randn(m.weight.shape, generator=generator))
                m.bias.zero_()
        return self


def build_discriminator(
    in_channels: int, channels: int, layers: int, seed: int, device: torch.device
) -> PatchDiscriminator:
    """A PatchDiscriminator on `device`, initialised from `seed` alone: built on the meta
    device, so torch's default initialisation never draws from the global RNG."""
    with torch.device("meta"):
        model = PatchDiscriminator(in_channels, channels, layers)
    model = model.to_empty(device=device)
    return model.reset_parameters(torch.Generator().manual_seed(seed))


class LatentDiscriminator(nn.Module):
    """FactorVAE's discriminator (Kim & Mnih 2018, Appendix): z (B, D) -> one logit (B, 1),
    positive for a draw of q(z), negative for one of the product of its marginals: `layers`
    linear layers, the hidden ones of `hidden` units with LeakyReLU(0.2) (the paper: 6 and
    1,000; its two-way softmax is one logit here, the difference of its two)."""

    def __init__(self, latent_dim: int, hidden: int = 1000, layers: int = 6) -> None:
        super().__init__()
        sizes = [latent_dim] + [hidden] * (layers - 1)
        seq: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            seq += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
        seq.append(nn.Linear(sizes[-1], 1))
        self.main = nn.Sequential(*seq)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> LatentDiscriminator:
        """torch's own initialisation of a Linear layer, U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        for weights and biases, drawn from `generator` (on the CPU, then copied)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                bound = m.in_features**-0.5
                for p in (m.weight, m.bias):
                    p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)
        return self


def build_latent_discriminator(
    latent_dim: int, hidden: int, layers: int, seed: int, device: torch.device
) -> LatentDiscriminator:
    """A LatentDiscriminator on `device`, initialised from `seed` alone (as
    `build_discriminator`: nothing draws from the global RNG)."""
    with torch.device("meta"):
        model = LatentDiscriminator(latent_dim, hidden, layers)
    model = model.to_empty(device=device)
    return model.reset_parameters(torch.Generator().manual_seed(seed))
