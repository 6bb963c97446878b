"""The conv VAE's linear path (`model.linear_path`): a linear encoder and decoder beside
the conv halves, started at the training images' principal components.

Why: a conv VAE trained for a few CPU-minutes on photographs reconstructs less than PCA
with as many components as it has latent values (issue 14: 15.6 dB against 19.0 dB on
held-out 64x64 crops, latent 32). With this path the encoder adds a linear projection of
the image to the posterior mean and the decoder a linear map of z to the image, and
`init_from_pca` starts them at PCA of the training images, whitened so that the
coefficients have unit variance as the prior N(0, I) expects; the conv branches' outputs
to the mean and to the image start at zero. Training therefore starts at PCA's
reconstruction and the conv halves learn what is left.

For a latent vector the path is global: a (C*H*W x D) matrix each way. For a spatial
latent (C_z x H/f x W/f, f = 2^levels) it is patch-wise, as latent diffusion's latents
are local: each latent cell is a linear function of its f x f patch (a stride-f conv with
an f x f kernel) and the decoder pastes one f x f patch per cell (the transposed conv);
the components are those of the training images' patches, taken about each channel's mean
rather than the mean patch: the transposed conv has one bias per channel, so a mean patch
with structure of its own could not be pasted back, and centring per channel keeps the
start exactly the PCA it names (a patterned mean patch then takes a component).

PCA is computed here, in a few lines of torch (an exact eigendecomposition of the
covariance when a row has at most 4,096 values, else `torch.svd_lowrank`), because it
runs on the tensors the Trainer already holds, on a seeded subset, with no new dependency.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

MAX_VALUES = 2**27  # rows x values the PCA reads at most (512 MiB of float32; the
# randomized SVD adds one centred copy, the spatial path's patches one permuted copy)
CHUNK = 8192  # rows per float64 chunk of the mean and the covariance
EXACT_DIM = 4096  # up to this many values per row: eigendecomposition of the covariance
LOGVAR_START = -6.0  # added to the log-variance head's bias: z starts close to the PCA code


def patch_factor(image_size: tuple[int, int], latent_size: tuple[int, int]) -> int:
    """The patch side f of a spatial path: H and W must be f times the latent map's."""
    (h, w), (lh, lw) = image_size, latent_size
    f = h // lh
    if f * lh != h or f * lw != w:
        raise ConfigError(
            f"model.linear_path with a spatial latent needs image sides that are a whole "
            f"multiple of the latent map's: {h}x{w} images give a {lh}x{lw} map; use sides "
            "that are multiples of 2^levels (data.image_size) or turn model.linear_path off"
        )
    return f


def encoder_path(c: int, hw: tuple[int, int], latent: int, factor: int) -> nn.Module:
    """x -> the path's part of the posterior mean: (B, latent) or, with factor > 0, a map."""
    if factor:
        return nn.Conv2d(c, latent, factor, stride=factor)
    return nn.Linear(c * math.prod(hw), latent)


def decoder_path(c: int, hw: tuple[int, int], in_features: int, factor: int) -> nn.Module:
    """z -> the path's part of the image's locations: (B, C*H*W) or, spatial, (B, C, H, W)."""
    if factor:
        return nn.ConvTranspose2d(in_features, c, factor, stride=factor)
    return nn.Linear(in_features, c * math.prod(hw))


def _rows(images: torch.Tensor, factor: int) -> torch.Tensor:
    """The vectors PCA sees: whole images (N, C*H*W), or f x f patches (N*h*w, C*f*f)."""
    if not factor:
        return images.flatten(1)
    n, c, h, w = images.shape
    f = factor
    p = images.reshape(n, c, h // f, f, w // f, f).permute(0, 2, 4, 1, 3, 5)
    return p.reshape(-1, c * f * f)


def principal_components(rows: torch.Tensor, k: int, channels: int = 0) -> tuple[torch.Tensor, ...]:
    """(centre (d,), components (d, k') as columns, the rows' spread along each (k',): the
    root of the sum of squares about the centre over n - 1) of the rows, k' = min(k, d,
    n - 1), in float64. The centre is the mean row,
    or with `channels` > 0 (rows of C equal blocks: patches) each block's mean value.
    Memory beyond `rows`: one float32 copy (the randomized SVD) or chunks of float64 rows
    (the covariance)."""
    n, d = rows.shape
    k = max(0, min(k, d, n - 1))
    mean = sum((c.double().sum(0) for c in rows.split(CHUNK)), torch.zeros(d, dtype=torch.float64))
    mean = mean / n
    if channels:
        mean = mean.view(channels, -1).mean(1).repeat_interleave(d // channels)
    if d <= EXACT_DIM:
        cov = torch.zeros(d, d, dtype=torch.float64)
        for chunk in rows.split(CHUNK):
            centred = chunk.double() - mean
            cov += centred.T @ centred
        values, vectors = torch.linalg.eigh(cov / max(n - 1, 1))
        order = values.flip(0)[:k].clamp_min(0.0)
        return mean, vectors.flip(1)[:, :k], order.sqrt()
    _, s, v = torch.svd_lowrank(rows.float() - mean.float(), q=min(k + 10, n, d), niter=4)
    return mean, v[:, :k].double(), s[:k].double() / math.sqrt(max(n - 1, 1))


@torch.no_grad()
def init_from_pca(model: Any, images: torch.Tensor) -> None:
    """Start `model`'s linear path at PCA of `images` (N, C, H, W) in the model's units and
    its conv branches' contributions at zero (see the module docstring). Components the
    images do not have (more latent values than pixels per patch, or than images) get zero
    weights. `model`: a VAE with the built-in conv halves (typed loosely: models/conv.py
    imports this module)."""
    enc, dec = model.encoder, model.decoder
    factor = int(getattr(enc, "path_factor", 0))
    k = int(enc.linear.out_channels if factor else enc.linear.out_features)
    channels = images.shape[1] if factor else 0
    mean, v, sd = principal_components(_rows(images.float(), factor), k, channels)
    # components with (almost) no variance in the data are left out: whitening would blow up
    kept = int((sd > sd[0] * 1e-6).sum()) if len(sd) and sd[0] > 0 else 0
    v, sd = v[:, :kept], sd[:kept]
    w_enc = torch.zeros(k, v.shape[0], dtype=torch.float64)
    w_enc[:kept] = (v / sd).T  # whitened coefficients: unit variance on the training images
    w_dec = torch.zeros(v.shape[0], k, dtype=torch.float64)
    w_dec[:, :kept] = v * sd
    _set_encoder(enc, w_enc, mean, factor, kept)
    _set_decoder(dec, w_dec, mean, factor, model.input_shape[0])


def _set_encoder(enc: Any, w: torch.Tensor, mean: torch.Tensor, factor: int, kept: int) -> None:
    """The path at `w`; the conv branch's mean at zero; the log-variance lowered only where
    a component is (a value with none stays at the prior, costing no KL)."""
    lin = enc.linear
    lin.weight.copy_(w.reshape(lin.weight.shape))
    lin.bias.copy_(-(w @ mean))
    k = w.shape[0]
    if factor:  # the moments conv: mu's channels first, then log-variance's
        enc.moments.weight[:k].zero_()
        enc.moments.bias[:k].zero_()
        enc.moments.bias[k : k + kept] += LOGVAR_START
    else:
        enc.mu_head.weight.zero_()
        enc.mu_head.bias.zero_()
        enc.logvar_head.bias[:kept] += LOGVAR_START


def _set_decoder(dec: Any, w: torch.Tensor, mean: torch.Tensor, factor: int, c: int) -> None:
    lin = dec.linear
    if factor:  # ConvTranspose2d weight: (in = k, out = C, f, f); one bias per channel
        lin.weight.copy_(w.T.reshape(lin.weight.shape))
        lin.bias.copy_(mean.reshape(c, -1)[:, 0])
    else:  # Linear weight: (C*H*W, in); z's columns first, a label embedding's after
        lin.weight.zero_()
        lin.weight[:, : w.shape[1]] = w
        lin.bias.copy_(mean)
    dec.head.weight[:c].zero_()  # the conv branch adds nothing to the locations at first
    dec.head.bias[:c].zero_()
