"""diffusers' AutoencoderKL as a vaekit encoder/decoder pair, weight for weight.

The halves are diffusers' own modules (`diffusers.models.autoencoders.vae.Encoder` and
`Decoder`, plus AutoencoderKL's 1x1 `quant_conv` / `post_quant_conv`), not a copy of them:
what vaekit trains is exactly what `AutoencoderKL` computes, and the state dicts map by a
prefix (vaekit's `encoder.encoder.*` is diffusers' `encoder.*`, `encoder.quant_conv.*` is
`quant_conv.*`, and the same for the decoder). Inside them, GroupNorm + SiLU and the
upsampling run on vaekit's CPU fast paths (autoencoderkl_fast.py: the same parameters
and keys, the same function). diffusers is imported only when such a model is built
(`pip install 'vaekit[diffusers]'`).

Units: vaekit's models read and write images in [0, 1], diffusers' in [-1, 1], so the
encoder reads 2x - 1 and the decoder's output y becomes the likelihood's location
(y + 1) / 2. The encoder returns (mean, logvar) split from the moments exactly as
diffusers' `DiagonalGaussianDistribution` splits them (first half the mean); both clamp
the log-variance to [-30, 20] (vaekit's `losses.clamp_logvar`, in float32), so the
posteriors agree. The decoder's output has the images' C channels: only a fixed-scale
Gaussian or Laplace likelihood fits (no Bernoulli logits, no learned scales).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from ..errors import ConfigError, first_line, require
from ..models.record import arguments
from ..models.registry import register
from .autoencoderkl_fast import use_fast_ops

CLASS_NAME = "AutoencoderKL"
ENCODER, DECODER = "autoencoderkl-encoder", "autoencoderkl-decoder"
# AutoencoderKL's config fields that each half takes (the rest is carried for export)
ENCODER_FIELDS = (
    "in_channels",
    "down_block_types",
    "block_out_channels",
    "layers_per_block",
    "latent_channels",
    "norm_num_groups",
    "act_fn",
    "use_quant_conv",
    "mid_block_add_attention",
    "scaling_factor",
    "shift_factor",
    "latents_mean",
    "latents_std",
    "force_upcast",
)
DECODER_FIELDS = (
    "out_channels",
    "up_block_types",
    "block_out_channels",
    "layers_per_block",
    "latent_channels",
    "norm_num_groups",
    "act_fn",
    "use_post_quant_conv",
    "mid_block_add_attention",
)


def diffusers_vae() -> Any:
    """diffusers' VAE building blocks, or one line naming the extra to install."""
    what = "the autoencoderkl architecture (diffusers' AutoencoderKL)"
    return require("diffusers", "diffusers.models.autoencoders.vae", what)


def encoder_half(args: dict[str, Any], double_z: bool) -> nn.Module:
    """diffusers' Encoder on vaekit's fast paths, from a half's constructor arguments
    `args` (the locals of AutoencoderKLEncoder's or vqmodel.py's __init__): their
    latent_channels is its out_channels; `double_z`: a Gaussian's pair of maps."""
    return fast_ops(
        diffusers_vae().Encoder(
            in_channels=args["in_channels"],
            out_channels=args["latent_channels"],
            down_block_types=tuple(args["down_block_types"]),
            block_out_channels=tuple(args["block_out_channels"]),
            layers_per_block=args["layers_per_block"],
            act_fn=args["act_fn"],
            norm_num_groups=args["norm_num_groups"],
            double_z=double_z,
            mid_block_add_attention=args["mid_block_add_attention"],
        )
    )


def decoder_half(args: dict[str, Any]) -> nn.Module:
    """diffusers' Decoder on vaekit's fast paths, from a half's constructor arguments
    `args`: it reads latent_channels; norm_type, where given, is VQModel's."""
    return fast_ops(
        diffusers_vae().Decoder(
            in_channels=args["latent_channels"],
            out_channels=args["out_channels"],
            up_block_types=tuple(args["up_block_types"]),
            block_out_channels=tuple(args["block_out_channels"]),
            layers_per_block=args["layers_per_block"],
            norm_num_groups=args["norm_num_groups"],
            act_fn=args["act_fn"],
            norm_type=args.get("norm_type", "group"),
            mid_block_add_attention=args["mid_block_add_attention"],
        )
    )


def fast_ops(half: nn.Module) -> nn.Module:
    """`half` (diffusers' Encoder or Decoder) with vaekit's CPU fast paths swapped in
    (autoencoderkl_fast.py: the same parameters, the same function)."""
    from diffusers.models.attention_processor import Attention
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.upsampling import Upsample2D

    use_fast_ops(half, ResnetBlock2D, Upsample2D, Attention)
    return half


@register(ENCODER)
class AutoencoderKLEncoder(nn.Module):
    """x in [0, 1] (B, C, H, W) -> (mean, logvar), each (B, latent_channels, h, w).

    `scaling_factor`, `shift_factor`, `latents_mean`, `latents_std` and `force_upcast` are
    not used here: they ride along so that an exported folder keeps the values diffusers'
    pipelines scale the latents by (and whether they decode in float32). Their defaults
    are AutoencoderKL's: a run saved before they rode along loads and exports those."""

    def __init__(
        self,
        in_channels: int = 3,
        down_block_types: Sequence[str] = ("DownEncoderBlock2D",),
        block_out_channels: Sequence[int] = (64,),
        layers_per_block: int = 1,
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        act_fn: str = "silu",
        use_quant_conv: bool = True,
        mid_block_add_attention: bool = True,
        scaling_factor: float = 0.18215,
        shift_factor: float | None = None,
        latents_mean: Sequence[float] | None = None,
        latents_std: Sequence[float] | None = None,
        force_upcast: bool = True,
    ) -> None:
        super().__init__()
        self.encoder = encoder_half(locals(), double_z=True)  # a pair: mean and log-variance
        moments = 2 * latent_channels
        self.quant_conv = nn.Conv2d(moments, moments, 1) if use_quant_conv else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(2.0 * x - 1.0)
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        mean, logvar = torch.chunk(h, 2, dim=1)  # as DiagonalGaussianDistribution does
        return mean, logvar


@register(DECODER)
class AutoencoderKLDecoder(nn.Module):
    """z (B, latent_channels, h, w) -> the images' location in [0, 1] units (B, C, H, W)."""

    def __init__(
        self,
        out_channels: int = 3,
        up_block_types: Sequence[str] = ("UpDecoderBlock2D",),
        block_out_channels: Sequence[int] = (64,),
        layers_per_block: int = 1,
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        act_fn: str = "silu",
        use_post_quant_conv: bool = True,
        mid_block_add_attention: bool = True,
    ) -> None:
        super().__init__()
        self.decoder = decoder_half(locals())
        self.post_quant_conv = (
            nn.Conv2d(latent_channels, latent_channels, 1) if use_post_quant_conv else None
        )

    @property
    def last_layer(self) -> nn.Module:
        """The output conv, where the adversarial term's adaptive weight compares gradients
        (latent diffusion's `decoder.conv_out`; post_quant_conv is registered after it)."""
        return cast(nn.Module, self.decoder.conv_out)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return (self.decoder(z) + 1.0) / 2.0


def is_autoencoderkl(model: Any) -> bool:
    """Whether a VAE's halves are this pair."""
    encoder, decoder = getattr(model, "encoder", None), getattr(model, "decoder", None)
    return isinstance(encoder, AutoencoderKLEncoder) and isinstance(decoder, AutoencoderKLDecoder)


def halves(
    encoder_args: dict[str, Any], decoder_args: dict[str, Any]
) -> tuple[nn.Module, nn.Module]:
    """The pair, built from its recorded arguments (diffusers' own errors become one line)."""
    pair = (AutoencoderKLEncoder, AutoencoderKLDecoder)
    return build_pair(pair, encoder_args, decoder_args, "the autoencoderkl architecture")


def build_pair(
    pair: tuple[Any, Any], encoder_args: dict[str, Any], decoder_args: dict[str, Any], what: str
) -> tuple[nn.Module, nn.Module]:
    """The halves `pair` (classes) built from their arguments; diffusers' own errors
    become one line naming `what`."""
    try:
        return pair[0](**encoder_args), pair[1](**decoder_args)
    except (ValueError, TypeError, AssertionError, RuntimeError) as e:
        raise ConfigError(f"{what} cannot be built: {first_line(e)}") from None


def split_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An AutoencoderKL config (its config.json) as the encoder's and the decoder's args."""
    encoder = {k: _plain(config[k]) for k in ENCODER_FIELDS if k in config}
    decoder = {k: _plain(config[k]) for k in DECODER_FIELDS if k in config}
    return encoder, decoder


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def from_model_config(cfg: Any, channels: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pair that model.* describes when model.arch is autoencoderkl: model.channels as
    block_out_channels (one level per entry, a 2x downsampling between levels),
    model.blocks_per_level as layers_per_block, model.latent_channels as latent_channels;
    GroupNorm takes the most groups (up to diffusers' 32) that divide every level."""
    return split_config(model_config(cfg, channels))


def model_config(cfg: Any, channels: int) -> dict[str, Any]:
    """The diffusers config fields model.* sets (see from_model_config)."""
    levels = list(cfg.channels)
    if cfg.blocks_per_level < 1:
        raise ConfigError("model.arch autoencoderkl needs model.blocks_per_level >= 1")
    latent_channels = getattr(cfg, "latent_channels", 0) or 4
    config = {
        "in_channels": channels,
        "out_channels": channels,
        "down_block_types": ["DownEncoderBlock2D"] * len(levels),
        "up_block_types": ["UpDecoderBlock2D"] * len(levels),
        "block_out_channels": levels,
        "layers_per_block": cfg.blocks_per_level,
        "latent_channels": latent_channels,
        "norm_num_groups": math.gcd(32, *levels),
    }
    return config


def check_settings(likelihood: str, learn_scale: bool, conditional: bool) -> None:
    """The VAE settings this decoder can serve: its output is C channels of image."""
    if likelihood == "bernoulli":
        raise ConfigError(
            "the autoencoderkl decoder outputs images, not Bernoulli logits: use "
            "model.likelihood laplace (L1) or gaussian (MSE)"
        )
    if learn_scale:
        raise ConfigError(
            "the autoencoderkl decoder outputs C channels (no per-pixel scales): set "
            "model.learn_scale false and choose model.obs_scale"
        )
    if conditional:
        raise ConfigError("model.conditional does not fit the autoencoderkl architecture")


# -- the state-dict mapping -------------------------------------------------------------
def to_diffusers_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A vaekit VAE's state dict as AutoencoderKL's: 'encoder.encoder.x' -> 'encoder.x',
    'encoder.quant_conv.x' -> 'quant_conv.x', and the same for the decoder."""
    out = {}
    for key, tensor in state.items():
        half, _, rest = key.partition(".")
        if half not in ("encoder", "decoder") or not rest:
            raise ConfigError(f"the weight {key!r} has no place in diffusers' AutoencoderKL")
        out[rest] = tensor
    return out


def from_diffusers_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """AutoencoderKL's state dict as the vaekit VAE's (the inverse of to_diffusers_keys)."""
    half = {"encoder": "encoder", "quant_conv": "encoder", "decoder": "decoder"}
    half["post_quant_conv"] = "decoder"
    out = {}
    for key, tensor in state.items():
        top = key.partition(".")[0]
        if top not in half:
            raise ConfigError(f"the AutoencoderKL weight {key!r} has no place in vaekit's pair")
        out[f"{half[top]}.{key}"] = tensor
    return out


# -- export ----------------------------------------------------------------------------
SHARED = ("block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups")


def diffusers_model(model: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The AutoencoderKL config and state dict a vaekit VAE of this architecture is, or
    one line naming what can be exported."""
    if not is_autoencoderkl(model):
        names = "/".join(type(m).__name__ for m in (model.encoder, model.decoder))
        raise ConfigError(
            f"this model's architecture ({names}) is not diffusers' AutoencoderKL or "
            "VQModel: --format diffusers exports models trained with model.arch "
            "autoencoderkl (a VQModel with model.posterior vq) or model.init "
            "diffusers:PATH_OR_REPO"
        )
    config, state = exported(model, SHARED, CLASS_NAME)
    return config, to_diffusers_keys(state)


def exported(
    model: Any, shared: tuple[str, ...], class_name: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The diffusers config (both halves' arguments and sample_size) and the float32 state
    dict (vaekit's keys) of a model of a diffusers pair, or one line saying why not."""
    check_normalization(model)
    encoder = arguments(model.encoder)
    decoder = arguments(model.decoder)
    differ = [k for k in shared if encoder.get(k) != decoder.get(k)]
    if differ:
        raise ConfigError(
            f"this model's encoder and decoder differ in {', '.join(differ)}; one "
            f"{class_name} config cannot describe them"
        )
    config = {**decoder, **encoder, "sample_size": int(model.input_shape[1])}
    state = {k: v.detach().cpu().float() for k, v in model.state_dict().items()}
    return config, state


def check_normalization(model: Any) -> None:
    """Refuse a model trained on data scaled by data.normalize: diffusers reads [-1, 1]."""
    if not model.normalization.identity:
        raise ConfigError(
            "this model was trained on data scaled by data.normalize "
            f"{model.normalization.kind}; diffusers reads images in [-1, 1] only: export a "
            "model trained with data.normalize none"
        )
