"""The config's `model` section as the model actually is: what a run's config.yaml and
state.pt record, written from the trained model (a custom model, a model.init start, a
model built in Python with other settings than the config's), never from options that did
not build it."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..config import ModelConfig
from ..config.fields import MAX_WIDTH
from ..diffusers import autoencoderkl, vqmodel
from . import builtin, record
from .vae import VAE

# model.* options that name a built-in family's halves: a model of the user's own has none
FAMILY = (
    "arch",
    "hidden",
    "activation",
    "channels",
    "blocks_per_level",
    "decoder_norm",
    "linear_path",
    "init",
)
OPTIONS = frozenset(f.name for f in dataclasses.fields(ModelConfig))
# the VAE's settings (record.py) that model.* options of the same name set
NAMED = tuple(name for name in VAE.recorded_settings if name in OPTIONS)
# model.* options the model itself fixes (config.json's architecture record says them too)
DERIVED = FAMILY + NAMED + ("latent_channels", "conditional")


def model_section(model: Any, cfg: ModelConfig) -> tuple[ModelConfig, bool]:
    """`cfg` with every option the model fixes set from the model, and whether the model's
    halves are one of vaekit's families (False: a model of the user's own, whose FAMILY
    options describe nothing and are left at their defaults)."""
    shape = model.latent_shape
    # a spatial latent's size is its shape's (model.latent_dim is then ignored): recorded
    # where the option can hold it
    fits = shape is None or model.latent_dim <= MAX_WIDTH
    values: dict[str, Any] = {k: v for k, v in model.settings().items() if k in OPTIONS}
    values["latent_dim"] = model.latent_dim if fits else cfg.latent_dim
    values["latent_channels"] = shape[0] if shape is not None else 0
    values["conditional"] = model.num_classes > 0
    values["posterior"] = model.posterior_kind  # gaussian, or vq with its settings above
    family = _family(model, cfg)
    if family is None:
        defaults = ModelConfig()
        values.update({k: getattr(defaults, k) for k in FAMILY})
    else:
        values.update(family)
    return dataclasses.replace(cfg, **values), family is not None


def _family(model: Any, cfg: ModelConfig) -> dict[str, Any] | None:
    """The FAMILY options of a built-in model, from its halves' recorded arguments."""
    name = type(model.encoder).__dict__.get("vaekit_name")
    halves = (type(model.encoder), type(model.decoder))
    if name is None or any(t.__module__.split(".")[0] != "vaekit" for t in halves):
        return None
    enc = record.arguments(model.encoder)
    dec = record.arguments(model.decoder)
    if name == "mlp-encoder":
        return {
            "arch": "mlp",
            "hidden": list(enc["hidden"]),
            "activation": enc["activation"],
            "init": "",
        }
    if name == "conv-encoder":
        norm = dec.get("norm", "group")
        same_norm = builtin.decoder_norm(cfg.decoder_norm) == norm
        return {
            "arch": "conv",
            "channels": list(enc["channels"]),
            "blocks_per_level": enc["blocks_per_level"],
            "decoder_norm": cfg.decoder_norm if same_norm else norm,
            "linear_path": bool(enc.get("linear_path", False)),
            "init": "",
        }
    if name == autoencoderkl.ENCODER:
        return {
            "arch": "autoencoderkl",
            "channels": list(enc["block_out_channels"]),
            "blocks_per_level": enc["layers_per_block"],
        }
    if name == vqmodel.ENCODER:  # the latent map is vq_embed_dim wide, the encoder's not
        return {
            "arch": "autoencoderkl",
            "channels": list(enc["block_out_channels"]),
            "blocks_per_level": enc["layers_per_block"],
            "latent_channels": enc.get("latent_channels", 3),
            "code_dim": enc.get("vq_embed_dim") or 0,
        }
    return None
