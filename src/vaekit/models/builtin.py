"""vaekit's own VAEs from a config's `model` section: the MLP and conv halves and the VAE's
settings, sized and checked before anything is allocated."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..config import ModelConfig
from ..diffusers import init as diffusers_init
from ..errors import ConfigError
from ..normalize import Normalization
from . import hierarchy, protocol
from .conv import ConvDecoder, ConvEncoder, latent_map_shape
from .mlp import MLPDecoder, MLPEncoder
from .record import Built


def build(
    cfg: ModelConfig,
    input_shape: Sequence[int],
    num_classes: int = 0,
    normalization: dict[str, Any] | None = None,
) -> Built:
    """The built-in model `cfg` describes: its halves, the settings of `VAE(...)` (with
    model.posterior vq, the quantiser's too: `VQVAE(...)`'s; with ladder, its layers:
    `LadderVAE(...)`'s) and, with model.init, the weights to start from. Likelihood 'auto'
    is Bernoulli for data in [0, 1], else a Gaussian with a learned scale. The model's size
    is checked first."""
    protocol.check_settings(1, input_shape, "gaussian", 1.0, 0, 1)  # input_shape: (C, H, W)
    _check_table(cfg, input_shape)
    bounded = Normalization.from_record(normalization, int(input_shape[0])).bounded
    likelihood, learn_scale = cfg.likelihood, cfg.learn_scale
    if likelihood == "auto":
        likelihood, learn_scale = ("bernoulli", False) if bounded else ("gaussian", True)

    if cfg.conditional and num_classes < 1:
        raise ConfigError("model.conditional needs labelled data (num_classes >= 1)")
    _check_linear_path(cfg, likelihood)
    posterior = _posterior(cfg)
    c, h, w = (int(s) for s in input_shape)
    shape = (c, h, w)
    kl = diffusers_init.plan(cfg, shape, likelihood, learn_scale)
    if kl is not None:  # diffusers' AutoencoderKL: model.arch autoencoderkl or model.init
        return diffusers_init.build(kl, cfg, shape, normalization)
    latent_shape = _latent_shape(cfg, shape)
    latent_dim, z_in = _latent_sizes(cfg, latent_shape, posterior)

    def halves() -> tuple[nn.Module, nn.Module]:
        cond = cfg.label_dim if cfg.conditional else 0
        per_pixel = 2 if learn_scale and likelihood != "bernoulli" else 1
        z_features = z_in + cond  # the decoder sees z (a ladder's z_1) and the label embedding
        if cfg.arch == "mlp":
            return (
                MLPEncoder(shape, cfg.hidden, cfg.activation, cond),
                MLPDecoder(shape, cfg.hidden, cfg.activation, z_features, per_pixel),
            )
        blocks, path = cfg.blocks_per_level, cfg.linear_path
        norm = decoder_norm(cfg.decoder_norm)
        enc_spatial, z_dim, spatial = _conv_latents(cfg, posterior)
        return (
            ConvEncoder(shape, cfg.channels, blocks, cond, enc_spatial, path, z_dim),
            ConvDecoder(shape, cfg.channels, blocks, z_features, per_pixel, spatial, norm, path),
        )

    protocol.check_size(halves, latent_dim, f"the {cfg.arch} VAE of model.* for {shape}")
    settings = (posterior or {}) | {
        "latent_dim": latent_dim,
        "latent_shape": latent_shape,
        "input_shape": shape,
        "likelihood": likelihood,
        "obs_scale": cfg.obs_scale,
        "learn_scale": learn_scale,
        "num_classes": num_classes if cfg.conditional else 0,
        "label_dim": cfg.label_dim,
        "normalization": normalization,
    }
    return Built(*halves(), settings)


def _latent_sizes(
    cfg: ModelConfig, latent_shape: tuple[int, ...] | None, posterior: dict[str, Any] | None
) -> tuple[int, int]:
    """The latent's size and the decoder's input's: a spatial latent's values (the decoder
    reads the map), a ladder's layers summed and its z_1, else model.latent_dim twice."""
    layers = (posterior or {}).get("latent_dims")
    if latent_shape:
        return math.prod(latent_shape), cfg.latent_dim
    return (sum(layers), layers[0]) if layers else (cfg.latent_dim, cfg.latent_dim)


def _conv_latents(cfg: ModelConfig, posterior: dict[str, Any] | None) -> tuple[int, int, int]:
    """The conv encoder's latent_channels and latent_dim and the decoder's latent_channels:
    model.latent_channels for both halves (and latent_dim, for a latent vector), or, for a
    ladder of maps, 0 (the encoder gives its last level) and c_1 (the decoder reads z_1)."""
    layers = (posterior or {}).get("latent_dims")
    if cfg.latent_channels and layers:
        return 0, 0, int(layers[0])
    z_dim = 0 if cfg.latent_channels else cfg.latent_dim
    return cfg.latent_channels, z_dim, cfg.latent_channels


def _check_table(cfg: ModelConfig, input_shape: Sequence[int]) -> None:
    """Table rows ((F, 1, 1): a .csv or .parquet file, or (N, F) arrays) train MLP models:
    a conv or autoencoderkl VAE, or a spatial latent, needs images, and saying so beats
    their own refusals ('too many levels for 1x1 images', 'set data.image_size')."""
    if tuple(int(s) for s in input_shape[1:]) != (1, 1):
        return
    asked = [
        what
        for what, on in (
            (f"model.init {cfg.init}", bool(cfg.init)),
            (f"model.arch {cfg.arch}", cfg.arch != "mlp"),
            ("model.latent_channels (a spatial latent)", bool(cfg.latent_channels)),
        )
        if on
    ]
    if asked:
        raise ConfigError(
            f"the data are table rows ({int(input_shape[0])} features per row), and tables "
            f"train MLP models; {asked[0]} needs images: use model.arch mlp"
            + (" and model.latent_channels 0" if cfg.latent_channels else "")
        )


def _posterior(cfg: ModelConfig) -> dict[str, Any] | None:
    """The settings of the posterior and prior other than the Gaussian's and N(0, I)'s:
    the quantiser's (model.posterior vq: `VQVAE`'s arguments; with model.arch
    autoencoderkl or model.init, diffusers' VQModel: diffusers/init.py), the flow's and
    the VampPrior's (composed.py), the ladder's layers (`LadderVAE`'s), or None."""
    if cfg.latent_dims and cfg.posterior != "ladder":
        raise ConfigError(
            "model.latent_dims sizes the layers of model.posterior ladder; set "
            f"model.posterior ladder, or drop model.latent_dims (posterior {cfg.posterior})"
        )
    if cfg.posterior == "gaussian" and cfg.prior == "standard":
        return None
    option = f"model.posterior {cfg.posterior}"
    option = option if cfg.prior == "standard" else f"model.prior {cfg.prior}"
    if cfg.linear_path:
        raise ConfigError(
            f"model.linear_path starts a Gaussian VAE at PCA; {option} does not take it"
        )
    if cfg.posterior == "vq":
        if cfg.prior != "standard":
            raise ConfigError(
                f"model.prior {cfg.prior} needs a posterior with a density (gaussian or iaf); "
                "a model.posterior vq model has none: set model.prior standard"
            )
        return {
            "codebook_size": cfg.codebook_size,
            "code_dim": cfg.code_dim,
            "commitment": cfg.commitment,
            "ema_decay": cfg.ema_decay,
            "restart_dead": cfg.restart_dead,
        }
    if cfg.init or cfg.arch not in ("mlp", "conv"):
        what = f"model.init {cfg.init}" if cfg.init else f"model.arch {cfg.arch}"
        raise ConfigError(
            f"{option} is built for model.arch mlp and conv; {what} is not supported with it yet"
        )
    if cfg.posterior == "ladder":
        return _ladder(cfg)
    composed: dict[str, Any] = {"prior": cfg.prior, "pseudo_inputs": cfg.pseudo_inputs}
    if cfg.posterior != "iaf":
        return composed
    return composed | {"flow_steps": cfg.flow_steps, "flow_context": cfg.flow_context}


def _ladder(cfg: ModelConfig) -> dict[str, Any]:
    """LadderVAE's own settings; what it cannot take, refused in one line each."""
    if cfg.prior != "standard":
        raise ConfigError(
            f"model.prior {cfg.prior} replaces N(0, I); a ladder's prior is its own top-down "
            "hierarchy (N(0, I) at the top): set model.prior standard"
        )
    return {"latent_dims": list(hierarchy.check_dims(cfg.latent_dims))}


def _check_linear_path(cfg: ModelConfig, likelihood: str) -> None:
    """model.linear_path is a conv VAE's, and its PCA start is in the units of the image:
    a Bernoulli decoder's logits are not."""
    if not cfg.linear_path:
        return
    if cfg.init:  # first: model.init sets the architecture, whatever model.arch says
        raise ConfigError(
            "model.linear_path starts a new conv VAE at PCA, model.init from trained weights: "
            "use one of them"
        )
    if cfg.arch != "conv":
        raise ConfigError(f"model.linear_path needs model.arch conv; got {cfg.arch}")
    if likelihood == "bernoulli":
        raise ConfigError(
            "model.linear_path needs a gaussian or laplace likelihood (it starts at PCA of the "
            "images, and a Bernoulli decoder outputs logits); set model.likelihood"
        )


def _latent_shape(cfg: ModelConfig, shape: tuple[int, int, int]) -> tuple[int, int, int] | None:
    """The spatial latent model.latent_channels asks for, or None for a latent vector."""
    if not cfg.latent_channels:
        return None
    if cfg.arch != "conv":
        raise ConfigError(
            f"model.latent_channels (a spatial latent) needs model.arch conv; got {cfg.arch}"
        )
    if cfg.conditional:
        raise ConfigError(
            "model.conditional needs a latent vector (the label embedding joins z); "
            "set model.latent_channels 0"
        )
    # a ladder's layers of maps: their channels (model.latent_dims) stacked
    channels = sum(cfg.latent_dims) if cfg.posterior == "ladder" else cfg.latent_channels
    return latent_map_shape(shape, cfg.channels, channels)


def decoder_norm(option: str) -> str:
    """model.decoder_norm resolved: 'auto' is the per-pixel channel norm (no fixed-place
    speck, see models/conv.py), with or without residual blocks (their branch's last norm
    starts at scale 0, see `ResBlock`: without that, decoders with blocks collapsed)."""
    return "channel" if option == "auto" else option
