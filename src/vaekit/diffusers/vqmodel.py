"""diffusers' VQModel as a vaekit VQ-VAE, weight for weight.

diffusers' `VQModel` (models/autoencoders/vq_model.py) is `Encoder(double_z=False)`, a 1x1
`quant_conv` (latent_channels -> vq_embed_dim), a `VectorQuantizer` of num_vq_embeddings
codes of vq_embed_dim values, a 1x1 `post_quant_conv` (vq_embed_dim -> latent_channels)
and `Decoder`. Here the halves are diffusers' own Encoder and Decoder with their 1x1
convs (on autoencoderkl.py's CPU fast paths), and the quantiser between them is the
VQ-VAE's (models/quantizer.py, which follows diffusers' conventions: the codebook is
`quantize.embedding.weight`, the nearest code argmin(cdist)): vaekit's z_e is diffusers'
`VQModel.encode(x).latents`, its codes are diffusers' `quantize(h)` indices, and the
state dicts map by a prefix (vaekit's `encoder.encoder.*` is diffusers' `encoder.*`,
`encoder.quant_conv.*` is `quant_conv.*`, `quantize.embedding.weight` is itself; the
EMA codebook's moving averages are vaekit's training state and are not exported).

Units and likelihood as autoencoderkl.py's: images in [0, 1] read as 2x - 1, the decoder's
output y the location (y + 1) / 2 of a fixed-scale Laplace or Gaussian likelihood.
diffusers' `norm_type: spatial` decoder (MoVQ's SpatialNorm, conditioned on z_q) is
kept: the decoder half passes z_q along as VQModel.decode does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from ..errors import ConfigError
from ..models.registry import register
from . import autoencoderkl
from .autoencoderkl import _plain, build_pair, decoder_half, encoder_half

CLASS_NAME = "VQModel"
ENCODER, DECODER = "vqmodel-encoder", "vqmodel-decoder"
# VQModel's config fields that each half takes (the rest rides along for export): the
# AutoencoderKL's up to act_fn, then VQModel's own
ENCODER_FIELDS = (
    *autoencoderkl.ENCODER_FIELDS[:7],
    "vq_embed_dim",
    "mid_block_add_attention",
    "scaling_factor",
    "lookup_from_codebook",
    "force_upcast",
)
DECODER_FIELDS: tuple[str, ...] = (*autoencoderkl.DECODER_FIELDS[:7], "vq_embed_dim")
DECODER_FIELDS += ("norm_type", "mid_block_add_attention")
SHARED = (*autoencoderkl.SHARED, "vq_embed_dim")
# the quantiser's state that is vaekit's training state, not diffusers' weights
MOVING_AVERAGES = ("quantize.cluster_size", "quantize.embed_sum")


@register(ENCODER)
class VQModelEncoder(nn.Module):
    """x in [0, 1] (B, C, H, W) -> z_e (B, vq_embed_dim, h, w), VQModel.encode's latents.
    `scaling_factor`, `lookup_from_codebook` and `force_upcast` ride along for export;
    the defaults are VQModel's."""

    def __init__(
        self,
        in_channels: int = 3,
        down_block_types: Sequence[str] = ("DownEncoderBlock2D",),
        block_out_channels: Sequence[int] = (64,),
        layers_per_block: int = 1,
        latent_channels: int = 3,
        norm_num_groups: int = 32,
        act_fn: str = "silu",
        vq_embed_dim: int | None = None,
        mid_block_add_attention: bool = True,
        scaling_factor: float = 0.18215,
        lookup_from_codebook: bool = False,
        force_upcast: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = encoder_half(locals(), double_z=False)  # one map: no Gaussian's pair
        self.quant_conv = nn.Conv2d(latent_channels, vq_embed_dim or latent_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.quant_conv(self.encoder(2.0 * x - 1.0)))


@register(DECODER)
class VQModelDecoder(nn.Module):
    """z_q (B, vq_embed_dim, h, w) -> the images' location in [0, 1] units (B, C, H, W)."""

    def __init__(
        self,
        out_channels: int = 3,
        up_block_types: Sequence[str] = ("UpDecoderBlock2D",),
        block_out_channels: Sequence[int] = (64,),
        layers_per_block: int = 1,
        latent_channels: int = 3,
        norm_num_groups: int = 32,
        act_fn: str = "silu",
        vq_embed_dim: int | None = None,
        norm_type: str = "group",
        mid_block_add_attention: bool = True,
    ) -> None:
        super().__init__()
        self.post_quant_conv = nn.Conv2d(vq_embed_dim or latent_channels, latent_channels, 1)
        self.decoder = decoder_half(locals())
        self.spatial = norm_type == "spatial"  # SpatialNorm reads z_q, as VQModel.decode

    @property
    def last_layer(self) -> nn.Module:
        """The output conv, where the adversarial term's adaptive weight compares gradients."""
        return cast(nn.Module, self.decoder.conv_out)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.post_quant_conv(z)
        return (self.decoder(h, z if self.spatial else None) + 1.0) / 2.0


def is_vqmodel(model: Any) -> bool:
    """Whether a VAE's halves are this pair."""
    encoder, decoder = getattr(model, "encoder", None), getattr(model, "decoder", None)
    return isinstance(encoder, VQModelEncoder) and isinstance(decoder, VQModelDecoder)


def halves(
    encoder_args: dict[str, Any], decoder_args: dict[str, Any]
) -> tuple[nn.Module, nn.Module]:
    """The pair, built from its recorded arguments (diffusers' own errors become one line)."""
    what = "the VQModel architecture (model.arch autoencoderkl, model.posterior vq)"
    return build_pair((VQModelEncoder, VQModelDecoder), encoder_args, decoder_args, what)


def split_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A VQModel config (its config.json) as the encoder's and the decoder's arguments and
    the quantiser's settings (VQVAE's codebook_size; code_dim: vq_embed_dim, 0 for
    latent_channels)."""
    encoder = {k: _plain(config[k]) for k in ENCODER_FIELDS if k in config}
    decoder = {k: _plain(config[k]) for k in DECODER_FIELDS if k in config}
    quantizer = {
        "codebook_size": int(config.get("num_vq_embeddings", 256)),
        "code_dim": int(config.get("vq_embed_dim") or 0),
    }
    return encoder, decoder, quantizer


def from_model_config(cfg: Any, channels: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pair model.* describes with model.arch autoencoderkl and model.posterior vq:
    autoencoderkl.py's mapping (model.channels, blocks_per_level, latent_channels, the
    GroupNorm groups), and model.code_dim as vq_embed_dim (0: latent_channels)."""
    config = autoencoderkl.model_config(cfg, channels)
    if cfg.code_dim:
        config["vq_embed_dim"] = cfg.code_dim
    encoder, decoder, _ = split_config(config)
    return encoder, decoder


# -- the state-dict mapping -------------------------------------------------------------
def to_diffusers_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A vaekit VQ-VAE's state dict as VQModel's: 'encoder.encoder.x' -> 'encoder.x',
    'encoder.quant_conv.x' -> 'quant_conv.x', the decoder alike, the codebook as it is;
    the EMA codebook's moving averages are left out."""
    out = {}
    for key, tensor in state.items():
        half, _, rest = key.partition(".")
        if key in MOVING_AVERAGES:
            continue
        if key == "quantize.embedding.weight":
            out[key] = tensor
        elif half in ("encoder", "decoder") and rest:
            out[rest] = tensor
        else:
            raise ConfigError(f"the weight {key!r} has no place in diffusers' VQModel")
    return out


def from_diffusers_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """VQModel's state dict as the vaekit VQ-VAE's (the inverse of to_diffusers_keys;
    `moving_averages` adds the EMA codebook's state where the model keeps one)."""
    half = {"encoder": "encoder.", "quant_conv": "encoder.", "quantize": ""}
    half |= {"decoder": "decoder.", "post_quant_conv": "decoder."}
    out = {}
    for key, tensor in state.items():
        top = key.partition(".")[0]
        if top not in half:
            raise ConfigError(f"the VQModel weight {key!r} has no place in vaekit's VQ-VAE")
        out[half[top] + key] = tensor
    return out


def moving_averages(
    weights: dict[str, torch.Tensor], ema_decay: float, restart_dead: float
) -> dict[str, torch.Tensor]:
    """`weights` with the quantiser's moving averages (quantizer.py) started from the given
    codebook, as a new VectorQuantizer starts them: counts of 1, sums the codebook itself."""
    codebook = weights["quantize.embedding.weight"]
    out = dict(weights)
    if ema_decay or restart_dead:
        out["quantize.cluster_size"] = torch.ones(codebook.shape[0])
    if ema_decay:
        out["quantize.embed_sum"] = codebook.clone()
    return out


# -- export ----------------------------------------------------------------------------
def diffusers_model(model: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The VQModel config and state dict a vaekit VQ-VAE of this architecture is."""
    config, state = autoencoderkl.exported(model, SHARED, CLASS_NAME)
    config["num_vq_embeddings"] = int(model.quantize.codebook_size)
    return config, to_diffusers_keys(state)
