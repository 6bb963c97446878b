"""The deterministic nets of a Ladder VAE (hierarchical.py): linear layers for layers of
vectors, 3x3 convolutions for layers of maps.

    vectors  z_i (B, d_i): Linear layers on the encoder's features (B, F);
    maps     z_i (B, c_i, h, w), all at the conv encoder's latent resolution: 3x3
             convolutions (padding 1) on the encoder's last level (B, F, h, w).

Either way there are L - 1 bottom-up nets up_i (h_i -> h_{i+1}, `hidden` wide, SiLU),
L q heads (h_i -> mu^_i, log sigma^_i^2, stacked along the features or channels) and
L - 1 top-down prior nets (z_{i+1} -> mu_p_i, log sigma_p_i^2: layer, SiLU, layer), whose
last layer starts at zero, so that every p(z_i | z_{i+1}) starts at N(0, I). The
Gaussian algebra that reads their outputs is hierarchy.py's, the same for both layouts
(a map's moments are flattened, channel first, as the VAE flattens a spatial latent)."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from .. import limits
from ..errors import ConfigError


def build(
    dims: list[int], hidden: int, features: int, spatial: bool
) -> tuple[nn.ModuleList, nn.ModuleList, nn.ModuleList]:
    """(up, q_heads, p_nets) of a ladder of layer sizes `dims` (d_i values, or c_i channels
    where `spatial`) on encoder features of width `features` (F values, or F channels)."""
    kernel = 9 if spatial else 1  # weights per input and output: 3x3 or one
    params = features * hidden + (len(dims) - 2) * hidden * hidden
    params = (params + sum(2 * d * hidden for d in dims) * 2) * kernel
    limits.check_fits(
        params * 4 * 4,
        f"a ladder of {len(dims)} layers of width {hidden:,}",
        "make model.latent_dims smaller",
    )

    def layer(n_in: int, n_out: int) -> nn.Module:
        return nn.Conv2d(n_in, n_out, 3, padding=1) if spatial else nn.Linear(n_in, n_out)

    widths = [features] + [hidden] * (len(dims) - 1)
    up = nn.ModuleList(
        nn.Sequential(layer(widths[i], hidden), nn.SiLU()) for i in range(len(dims) - 1)
    )
    q_heads = nn.ModuleList(layer(widths[i], 2 * d) for i, d in enumerate(dims))
    p_nets = nn.ModuleList(
        nn.Sequential(layer(dims[i + 1], hidden), nn.SiLU(), layer(hidden, 2 * dims[i]))
        for i in range(len(dims) - 1)
    )
    for net in p_nets:  # each p(z_i | z_{i+1}) starts at N(0, I)
        last = cast(nn.Linear | nn.Conv2d, cast(nn.Sequential, net)[-1])
        nn.init.zeros_(last.weight)
        nn.init.zeros_(cast(torch.Tensor, last.bias))
    return up, q_heads, p_nets


def moments(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A head's output, (..., 2d) or a map (N, 2c, h, w), as its two halves flattened:
    the mean and the log-variance, (..., d) or (N, c*h*w) each, in float32."""
    if out.dim() == 4:
        mu, lv = out.float().chunk(2, dim=1)
        return mu.flatten(1), lv.flatten(1)
    mu, lv = out.float().chunk(2, dim=-1)
    return mu, lv


def map_features(
    encoder: nn.Module, input_shape: tuple[int, int, int], latent_shape: tuple[int, ...]
) -> int:
    """F, the channels of the conv encoder's last level (B, F, h, w) that a ladder of maps
    starts from (`feature_map`, at the latent's (h, w)); another encoder is refused."""
    feature_map = getattr(encoder, "feature_map", None)
    if not callable(feature_map):
        raise ConfigError(
            f"a ladder of maps reads the conv encoder's last level (feature_map), which the "
            f"encoder {type(encoder).__name__} does not give; use model.arch conv"
        )
    device = next(encoder.parameters(), torch.empty(0)).device
    with torch.no_grad():
        out = feature_map(torch.zeros(1, *input_shape, device=device))
    if out.dim() != 4 or tuple(out.shape[2:]) != tuple(latent_shape[1:]):
        raise ConfigError(
            f"the encoder's last level is {tuple(out.shape)}, not at the latent's size "
            f"{tuple(latent_shape[1:])}"
        )
    return int(out.shape[1])
