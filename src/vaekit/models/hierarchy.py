"""A hierarchy of Gaussian layers, its pieces without a model: the layers' sizes, checked
(`model.latent_dims`, read by the builder before any model exists), and the Gaussian algebra
of the Ladder VAE (hierarchical.py): the precision-weighted product of two diagonal
Gaussians and the closed-form KL between two."""

from __future__ import annotations

from typing import Any

import torch

from .. import losses
from ..errors import ConfigError

MAX_LAYERS = 16


def check_dims(latent_dims: Any) -> tuple[int, ...]:
    """The layers' sizes, bottom (z_1) to top: two to MAX_LAYERS whole numbers >= 1."""
    ok = isinstance(latent_dims, (list, tuple)) and all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in latent_dims
    )
    if not ok or not 2 <= len(latent_dims) <= MAX_LAYERS:
        raise ConfigError(
            "a ladder VAE needs model.latent_dims: 2 to 16 layer sizes from the bottom (z_1, "
            f"read by the decoder) to the top, e.g. 32,16; got {latent_dims!r}"
        )
    return tuple(int(d) for d in latent_dims)


def precision_weighted(
    mu_hat: torch.Tensor, lv_hat: torch.Tensor, mu_p: torch.Tensor, lv_p: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The product of two diagonal Gaussians, normalised (Sønderby et al. 2016, eq. 17-18),
    in log-variances: lv_q = -log(e^-lv_hat + e^-lv_p); mu_q's weights are sigmoids."""
    lv_hat, lv_p = losses.clamp_logvar(lv_hat), losses.clamp_logvar(lv_p)
    lv_q = -torch.logaddexp(-lv_hat, -lv_p)
    w_hat = torch.sigmoid(lv_p - lv_hat)  # sigma_q^2 / sigma^^2
    return w_hat * mu_hat + (1.0 - w_hat) * mu_p, lv_q


def kl_normal(
    mu_q: torch.Tensor, lv_q: torch.Tensor, mu_p: torch.Tensor, lv_p: torch.Tensor
) -> torch.Tensor:
    """KL(N(mu_q, e^lv_q) || N(mu_p, e^lv_p)) per dimension, float32:
    0.5 (lv_p - lv_q + (e^lv_q + (mu_q - mu_p)^2) e^-lv_p - 1)."""
    lv_q, lv_p = losses.clamp_logvar(lv_q), losses.clamp_logvar(lv_p)
    diff = (mu_q.float() - mu_p.float()).pow(2)
    return 0.5 * (lv_p - lv_q + (lv_q.exp() + diff) * torch.exp(-lv_p) - 1.0)


def check_map(latent_shape: Any, dims: tuple[int, ...]) -> tuple[int, int, int]:
    """Layers of maps: the latent (C, h, w) of their channels stacked, C = sum(c_i)."""
    ok = isinstance(latent_shape, (list, tuple)) and len(latent_shape) == 3
    shape = tuple(latent_shape) if ok else ()
    if not ok or not all(isinstance(s, int) and s >= 1 for s in shape) or shape[0] != sum(dims):
        raise ConfigError(
            f"a ladder of maps of {list(dims)} channels has the latent_shape (C, h, w) of "
            f"their channels stacked, C = {sum(dims)}; got {latent_shape!r}"
        )
    return int(shape[0]), int(shape[1]), int(shape[2])
