"""A user's own architectures, registered as the docs show: one encoder that returns
features (the VAE adds the mean and log-variance heads), one that returns (mu, logvar)
itself, and a transposed-conv decoder. Importable as `custom_arch` (tests/ is on the path),
so a CLI run can `--import custom_arch`."""

from __future__ import annotations

import torch
from torch import nn

import vaekit


@vaekit.register("test-conv-encoder")
class ConvFeatures(nn.Module):
    """x (B, C, 28, 28) -> features (B, width * 7 * 7)."""

    def __init__(self, channels: int = 1, width: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=2, padding=1),  # 28 -> 14
            nn.SiLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),  # 14 -> 7
            nn.SiLU(),
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@vaekit.register("test-direct-encoder")
class DirectGaussian(nn.Module):
    """x -> (mu, logvar) directly, each (B, latent_dim): no heads added by the VAE."""

    def __init__(self, pixels: int = 784, hidden: int = 16, latent_dim: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(pixels, hidden), nn.Tanh())
        self.mu = nn.Linear(hidden, latent_dim)
        self.logvar = nn.Linear(hidden, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.mu(h), self.logvar(h)


@vaekit.register("test-conv-decoder")
class ConvPixels(nn.Module):
    """z (B, latent_dim) -> logits (B, channels, 28, 28) through two transposed convs."""

    def __init__(self, latent_dim: int = 4, channels: int = 1, width: int = 8) -> None:
        super().__init__()
        self.width = width
        self.fc = nn.Linear(latent_dim, width * 7 * 7)
        self.net = nn.Sequential(
            nn.SiLU(),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1),  # 7 -> 14
            nn.SiLU(),
            nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1),  # 14 -> 28
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, self.width, 7, 7))


def conv_vae(latent_dim: int = 4) -> vaekit.VAE:
    """The custom conv VAE of the docs page, for 28x28 grayscale images."""
    return vaekit.VAE(
        ConvFeatures(width=8),
        ConvPixels(latent_dim=latent_dim, width=8),
        latent_dim=latent_dim,
        input_shape=(1, 28, 28),
    )


def direct_vae(latent_dim: int = 4) -> vaekit.VAE:
    return vaekit.VAE(
        DirectGaussian(latent_dim=latent_dim),
        ConvPixels(latent_dim=latent_dim),
        latent_dim=latent_dim,
        input_shape=(1, 28, 28),
        likelihood="laplace",
    )
