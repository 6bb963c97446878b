"""Convolutional encoder and decoder: residual blocks, GroupNorm and SiLU, for 28 to 256 px.

Each level of `channels` halves the resolution with a stride-2 conv on the way down
and doubles it back with nearest upsampling + a 3x3 conv on the way up (the function of
a resize-conv, so no checkerboard artifacts; computed as the equivalent stride-2
transposed conv, see `upsample_conv`). The sizes are recorded on the way down and the
decoder upsamples to exactly those, so odd and non-power-of-two sizes (28 -> 14 -> 7 ->
4 -> 2) round-trip without padding. The latent is a vector, or, with `latent_channels`,
a spatial map of that many channels at the last level's size (H / 2^L; the autoencoder
of latent diffusion): the encoder ends in a 3x3 conv to the map's mean and log-variance,
the decoder starts with a 3x3 conv from it. A label embedding, when given, is
concatenated to the encoder's flattened features (the decoder gets it concatenated with
z, see `VAE.decode`).

The decoder can normalise each position's features over channels (`ChannelNorm`;
`model.decoder_norm`, what its 'auto' picks) instead of over the whole map as GroupNorm
does: with per-image statistics over space, a decoder learns to put a strong spike at one fixed
place, which then dims the rest of the map through the shared statistics, and every
image it decodes carries a speck there (the "droplet" artifact that StyleGAN2, Karras et
al. 2020, traced to instance normalisation). `norm="group"` keeps the old decoder, so
that checkpoints saved with it load as they were trained.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .fast_ops import Conv2d, _layout, group_norm, upsample_conv
from .linear_path import decoder_path, encoder_path, patch_factor
from .registry import register

NORMS = ("group", "channel")


class ChannelNorm(nn.Module):
    """Normalise each position's feature vector over channels (a LayerNorm over C at every
    pixel; per-channel scale and shift), optionally followed by SiLU. Nothing is pooled
    over space, so one position cannot change another's scale (see the module docstring).
    On channels_last maps the channel axis is the contiguous one: the permute is a view."""

    def __init__(self, channels: int, act: bool = False, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.act, self.eps = act, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.movedim(1, -1), x.shape[1:2], self.weight, self.bias, self.eps)
        y = y.movedim(-1, 1).contiguous(memory_format=_layout(x))  # the input's layout
        return F.silu(y) if self.act else y


def norm_layer(kind: str, channels: int, act: bool = False) -> nn.Module:
    """GroupNorm over channel groups and space ("group") or `ChannelNorm` ("channel")."""
    if kind == "channel":
        return ChannelNorm(channels, act)
    if kind != "group":
        from ..errors import ConfigError

        raise ConfigError(
            f"the conv decoder's norm must be one of {', '.join(NORMS)}, not {kind!r}"
        )
    return group_norm(channels, act)


def conv_norm_act(c_in: int, c_out: int, stride: int = 1, norm: str = "group") -> nn.Sequential:
    """3x3 conv (no bias: the norm re-centres) -> norm -> SiLU."""
    return nn.Sequential(
        Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        norm_layer(norm, c_out, act=True),
    )


class ResBlock(nn.Module):
    """y = SiLU(x + N(conv(SiLU(N(conv(x)))))): two 3x3 convs around an identity skip.

    With `ChannelNorm`, the branch's last norm starts with scale 0 (the block starts as
    SiLU(x)). At scale 1 every block adds a unit-variance branch at every pixel, and the
    part of the decoded image that varies with z shrank with each block (at init, a 32x32
    decoder of channels 32-128, one seed: 61% of the output's second moment without
    blocks, 48% with one block per level, 30% with two; GroupNorm 84, 77, 67%; scale 0:
    66, 68%). Likely
    why: what every z shares (SiLU's positive mean, the zero padding) passes through the
    per-pixel norm, where GroupNorm subtracts each channel's mean over the map. Decoders
    with blocks then collapsed to one constant image on photographs (issue 14; see
    benchmarks/decoder_norm_blocks.py). The scale sets only where training starts, so
    checkpoints load as they were trained.
    """

    def __init__(self, channels: int, norm: str = "group") -> None:
        super().__init__()
        self.conv1 = Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = norm_layer(norm, channels, act=True)
        self.conv2 = Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = norm_layer(norm, channels)
        if isinstance(self.norm2, ChannelNorm):
            nn.init.zeros_(self.norm2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(self.conv1(x))
        return F.silu(x + self.norm2(self.conv2(h)))


def level_sizes(height: int, width: int, levels: int) -> list[tuple[int, int]]:
    """Spatial size at each level: a 3x3 stride-2 conv with padding 1 maps n to ceil(n/2)."""
    sizes = [(height, width)]
    for _ in range(levels):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def _check(input_shape: tuple[int, int, int], channels: list[int]) -> None:
    from ..errors import ConfigError

    c, h, w = input_shape
    if not channels:
        raise ConfigError("model.channels must list at least one level for model.arch conv")
    if min(level_sizes(h, w, len(channels))[-2]) == 1:  # the last level would see 1x1
        most = math.ceil(math.log2(min(h, w)))
        raise ConfigError(
            f"model.channels has {len(channels)} levels, too many for {h}x{w} "
            f"images (each halves the size); use at most {most}"
        )


def latent_map_shape(
    input_shape: tuple[int, int, int], channels: list[int], latent_channels: int
) -> tuple[int, int, int]:
    """The spatial latent's (C_z, h, w) for images of `input_shape`: the last level's size."""
    _check(input_shape, channels)
    return (latent_channels, *level_sizes(*input_shape[1:], len(channels))[-1])


@register("conv-encoder")
class ConvEncoder(nn.Module):
    """x (B, C, H, W) [+ a label embedding (B, E)] -> features (B, F), or, with
    `latent_channels` > 0, the posterior (mu, logvar), each (B, latent_channels, h, w).

    `channels`: channels per level, each level a stride-2 conv (halving the size) and
    `blocks_per_level` residual blocks. `linear_path`: a linear map of x added to the
    posterior mean (models/linear_path.py); a latent vector then needs `latent_dim`, and
    the encoder returns (mu, logvar) (B, latent_dim) from heads of its own.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        channels: list[int],
        blocks_per_level: int = 1,
        cond_dim: int = 0,
        latent_channels: int = 0,
        linear_path: bool = False,
        latent_dim: int = 0,
    ) -> None:
        super().__init__()
        _check(input_shape, channels)
        if latent_channels and cond_dim:
            raise ValueError("a spatial latent takes no label embedding")
        c, h, w = input_shape
        layers: list[nn.Module] = []
        c_prev = c
        for ch in channels:
            layers.append(conv_norm_act(c_prev, ch, stride=2))  # halves the resolution
            layers += [ResBlock(ch) for _ in range(blocks_per_level)]
            c_prev = ch
        self.body = nn.Sequential(*layers)
        bottom_h, bottom_w = level_sizes(h, w, len(channels))[-1]
        self.flat_features = c_prev * bottom_h * bottom_w
        self.cond_dim = cond_dim
        self.latent_channels = latent_channels
        self.out_features: int | None = None  # no features: the moments come from `moments`
        self.map_features = c_prev  # the channels of the last level's features
        if latent_channels:  # the map's mean and log-variance, from the last level's features
            self.moments = Conv2d(c_prev, 2 * latent_channels, 3, padding=1)
        else:
            self.out_features = self.flat_features + cond_dim
        self.linear: nn.Module | None = None
        self.path_factor = 0  # the linear path's patch side (0: global, or no path)
        if linear_path and latent_channels:
            self.path_factor = patch_factor((h, w), (bottom_h, bottom_w))
            self.linear = encoder_path(c, (h, w), latent_channels, self.path_factor)
        elif linear_path:
            if latent_dim < 1:
                raise ValueError("a linear path on a latent vector needs latent_dim")
            self.linear = encoder_path(c, (h, w), latent_dim, 0)
            self.mu_head = nn.Linear(self.flat_features + cond_dim, latent_dim)
            self.logvar_head = nn.Linear(self.flat_features + cond_dim, latent_dim)
            self.out_features = None  # the encoder gives (mu, logvar) itself

    @property
    def stem(self) -> nn.Conv2d:
        """The first conv: its weights' layout is the model's (channels_last or not)."""
        return cast(nn.Conv2d, cast(nn.Sequential, self.body[0])[0])

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.stem.weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)  # match the weights' layout
        if self.latent_channels:
            return self._maps(x)[:2]  # each (B, C_z, h, w)
        h = self.body(x).flatten(1)  # (B, C_L * H_L * W_L)
        if self.cond_dim:
            if cond is None:
                raise ValueError("this encoder is conditional: pass the label embedding")
            h = torch.cat([h, cond.to(h.dtype)], dim=1)  # (B, F)
        if self.linear is not None:  # x's NCHW order, whatever its layout
            return self.mu_head(h) + self.linear(x.flatten(1)), self.logvar_head(h)
        return h

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last level's features (B, channels[-1], h, w), where a ladder of maps starts
        its bottom-up pass (models/hierarchical.py)."""
        if self.stem.weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        return self.body(x)

    def map_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A spatial latent's mean and log-variance maps, each (B, C_z, h, w), and the last
        level's features they are read from (B, channels[-1], h, w), where an IAF's context
        map is read too (models/composed.py)."""
        if self.stem.weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        return self._maps(x)

    def _maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.body(x)
        mu, logvar = self.moments(features).chunk(2, dim=1)
        if self.linear is not None:
            mu = mu + self.linear(x)
        return mu, logvar, features


@register("conv-decoder")
class ConvDecoder(nn.Module):
    """z (B, D) [+ a label embedding], or with `latent_channels` > 0 a map (B,
    latent_channels, h, w) -> likelihood parameters (B, C*k, H, W): the encoder's levels
    in reverse, each a nearest 2x upsampling + conv.

    `norm`: "channel" (per position, see `ChannelNorm`) or "group" (GroupNorm, the
    default only so that checkpoints saved before this option load unchanged).
    `linear_path`: a linear map of z added to the image's locations (the first C output
    channels; models/linear_path.py)."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        channels: list[int],
        blocks_per_level: int = 1,
        in_features: int = 16,
        params_per_pixel: int = 1,
        latent_channels: int = 0,
        norm: str = "group",
        linear_path: bool = False,
    ) -> None:
        super().__init__()
        _check(input_shape, channels)
        c, h, w = input_shape
        channels = list(channels)
        self.sizes = level_sizes(h, w, len(channels))  # [(H, W), ..., (H_L, W_L)]
        self.bottom = (channels[-1], *self.sizes[-1])
        self.latent_channels = latent_channels
        if latent_channels:  # the map -> the last level's channels, at its size
            self.latent_in = Conv2d(latent_channels, channels[-1], 3, padding=1)
        else:
            self.fc = nn.Linear(in_features, math.prod(self.bottom))
        self.levels = nn.ModuleList()
        for i in reversed(range(len(channels))):
            c_out = channels[i - 1] if i > 0 else channels[0]
            blocks = [ResBlock(channels[i], norm) for _ in range(blocks_per_level)]
            # upsample to level i's size happens in forward; then this conv
            self.levels.append(
                nn.ModuleDict(
                    {
                        "blocks": nn.Sequential(*blocks),
                        "up": conv_norm_act(channels[i], c_out, norm=norm),
                    }
                )
            )
        self.head = Conv2d(channels[0], c * params_per_pixel, 3, padding=1)
        self.out_shape = (c * params_per_pixel, h, w)
        self.image_channels = c
        self.linear: nn.Module | None = None
        if linear_path:
            f = patch_factor((h, w), self.sizes[-1][:2]) if latent_channels else 0
            z_in = latent_channels if latent_channels else in_features
            self.linear = decoder_path(c, (h, w), z_in, f)

    @property
    def last_layer(self) -> nn.Module:
        """Where the adversarial term's adaptive weight compares gradients: the conv head,
        also when the linear path's weight is registered after it."""
        return self.head

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self._conv(z)
        if self.linear is None:
            return out
        c = self.image_channels
        path = self.linear(z).view(-1, c, *self.sizes[0])  # (B, C, H, W)
        if out.shape[1] == c:
            return out + path
        return torch.cat([out[:, :c] + path, out[:, c:]], dim=1)  # log-scales untouched

    def _conv(self, z: torch.Tensor) -> torch.Tensor:
        channels_last = self.head.weight.is_contiguous(memory_format=torch.channels_last)
        if self.latent_channels:
            if channels_last:
                z = z.contiguous(memory_format=torch.channels_last)
            x = self.latent_in(z)  # (B, C_L, H_L, W_L)
        else:
            x = self.fc(z).view(-1, *self.bottom)  # (B, C_L, H_L, W_L)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for level, size in zip(self.levels, reversed(self.sizes[:-1]), strict=True):
            blocks, up = level.values()  # type: ignore[operator]
            x = blocks(x)
            conv, norm = up  # upsample to the encoder's size at this level (odd sizes too)
            x = norm(upsample_conv(x, conv, size))
        return self.head(x)  # (B, C*k, H, W)
