"""How model.* becomes diffusers' AutoencoderKL pair (or, with `model.posterior: vq`,
diffusers' VQModel: vqmodel.py): `model.arch: autoencoderkl` from scratch, or
`model.init: diffusers:PATH_OR_REPO`, which starts from an existing one (its config.json's
class decides which, and model.posterior must agree).

diffusers' own `AutoencoderKL.from_pretrained` reads it (a local folder, or a Hub repo
through huggingface_hub's cache; `OWNER/NAME/SUBFOLDER` reads a pipeline's `vae`
folder), so every file layout and weight format diffusers accepts works here. Its config
becomes the arguments of vaekit's autoencoderkl pair and its weights are mapped onto the
pair key for key (autoencoderkl.py), so the vaekit model computes exactly what the
diffusers one does before the first step. Export goes the other way (export.py).
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig
from ..errors import ConfigError, first_line, require
from ..io.checkpoint import non_finite
from ..models.protocol import check_size
from ..models.record import Built
from ..wording import setting
from . import autoencoderkl, vqmodel
from .autoencoderkl import check_settings
from .export import CLASS_NAME, CLASS_NAMES
from .export import WEIGHTS as WEIGHTS_FILE

PREFIX = "diffusers:"
# the model.* options model.init's config replaces, each with its AutoencoderKL field
REPLACED = {
    "channels": "block_out_channels",
    "blocks_per_level": "layers_per_block",
    "latent_channels": "latent_channels",
}
# and a VQModel's too
REPLACED_VQ = REPLACED | {"codebook_size": "num_vq_embeddings", "code_dim": "vq_embed_dim"}


@dataclass
class Start:
    """A diffusers model that model.init names: its class, its halves' arguments, its
    weights (in vaekit's keys) and, for a VQModel, the quantiser's settings."""

    class_name: str
    encoder_args: dict[str, Any]
    decoder_args: dict[str, Any]
    weights: dict[str, torch.Tensor]
    quantizer: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)  # its config.json, as diffusers read it


@dataclass
class Plan:
    """The pair model.* asks for: its halves' arguments, the weights to start from (None:
    a fresh initialisation), the likelihood, and the latent map's shape (C, h, w)."""

    encoder_args: dict[str, Any]
    decoder_args: dict[str, Any]
    weights: dict[str, torch.Tensor] | None
    likelihood: str
    latent_shape: tuple[int, int, int]
    quantizer: dict[str, Any] | None = None  # a VQModel's: VQVAE's settings (None: a VAE)


def plan(cfg: Any, shape: tuple[int, int, int], likelihood: str, learn_scale: bool) -> Plan | None:
    """The autoencoderkl pair (a VQModel's with model.posterior vq) for model config `cfg`
    and images of `shape`, or None when model.* asks for another family. Likelihood 'auto'
    is a fixed-scale Laplace (the L1 term of the latent-diffusion recipe)."""
    if not cfg.init and cfg.arch != "autoencoderkl":
        return None
    vq = cfg.posterior == "vq"
    quantizer = _quantizer(cfg) if vq else None
    if cfg.init:
        start = load(cfg.init)
        check_class(cfg, start.class_name)
        check_replaced(cfg, start.config)
        encoder_args, decoder_args, weights = start.encoder_args, start.decoder_args, start.weights
        if quantizer is not None and start.quantizer is not None:
            quantizer |= start.quantizer
            weights = vqmodel.moving_averages(weights, cfg.ema_decay, cfg.restart_dead)
    elif vq:
        (encoder_args, decoder_args), weights = vqmodel.from_model_config(cfg, shape[0]), None
    else:
        pair = autoencoderkl.from_model_config(cfg, shape[0])
        (encoder_args, decoder_args), weights = pair, None
    if cfg.likelihood == "auto":  # learn_scale as asked: true is refused below, not dropped
        likelihood, learn_scale = "laplace", bool(cfg.learn_scale)
    check_settings(likelihood, learn_scale, cfg.conditional)
    where = f"model.init {cfg.init}" if cfg.init else "model.arch autoencoderkl"
    latent = latent_shape(encoder_args, shape, where)
    return Plan(encoder_args, decoder_args, weights, likelihood, latent, quantizer)


def _quantizer(cfg: Any) -> dict[str, Any]:
    """VQVAE's settings from model.* (model.code_dim is the pair's vq_embed_dim)."""
    names = ("codebook_size", "code_dim", "commitment", "ema_decay", "restart_dead")
    return {name: getattr(cfg, name) for name in names}


def check_class(cfg: Any, class_name: str) -> None:
    """model.posterior must be the one the starting model's class has: gaussian for an
    AutoencoderKL, vq for a VQModel."""
    posterior = "vq" if class_name == vqmodel.CLASS_NAME else "gaussian"
    if cfg.posterior != posterior:
        raise ConfigError(
            f"model.init {cfg.init} holds a diffusers {class_name}, whose posterior is "
            f"{posterior}, but model.posterior is {cfg.posterior}: pass "
            f"{setting('model.posterior', posterior, posterior)} (or start from a diffusers "
            f"{'VQModel' if cfg.posterior == 'vq' else CLASS_NAME})"
        )


def check_replaced(cfg: Any, config: dict[str, Any]) -> None:
    """model.init's config (its config.json) sets the architecture: refuse a model.*
    option it replaces that was set (not its default) to another value than the starting
    model's, rather than train one model while config.yaml records another (model.arch
    alone is not checked: it names the family, which model.init decides)."""
    defaults = ModelConfig()
    vq = config.get("_class_name") == vqmodel.CLASS_NAME
    for option, name in (REPLACED_VQ if vq else REPLACED).items():
        value, base = getattr(cfg, option), config.get(name)
        if isinstance(base, tuple):
            base = list(base)
        if name == "vq_embed_dim":
            base = base or config.get("latent_channels", 3)
        if value != getattr(defaults, option) and value != base:
            raise ConfigError(
                f"model.{option} is {_text(value)} (from your options or the preset), but "
                f"model.init {cfg.init} sets it from its config.json ({name} {_text(base)}): "
                f"pass {setting(f'model.{option}', base, _text(base))}"
            )


def _text(value: Any) -> str:
    """A value as the command line writes it (a list as 8,16)."""
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


def build(
    kl: Plan, cfg: Any, shape: tuple[int, int, int], normalization: dict[str, Any] | None
) -> Built:
    """The pair `kl` plans, its size checked first, with the settings of `VAE(...)` (of
    `VQVAE(...)` for a VQModel) and the weights of model.init, if any."""
    layout = autoencoderkl if kl.quantizer is None else vqmodel

    def pair() -> tuple[Any, Any]:
        return layout.halves(kl.encoder_args, kl.decoder_args)

    latent_dim = math.prod(kl.latent_shape)
    check_size(pair, latent_dim, f"the autoencoderkl VAE of model.* for {shape}")
    settings = (kl.quantizer or {}) | {
        "latent_dim": latent_dim,
        "latent_shape": kl.latent_shape,
        "input_shape": shape,
        "likelihood": kl.likelihood,
        "obs_scale": cfg.obs_scale,
        "learn_scale": False,
        "normalization": normalization,
    }
    return Built(*pair(), settings, kl.weights)


def latent_shape(
    encoder_args: dict[str, Any], shape: tuple[int, int, int], where: str
) -> tuple[int, int, int]:
    """(C, h, w) of the latent map for images of `shape`: one 2x downsampling between
    levels, so H and W must divide by 2**(levels - 1)."""
    c, h, w = shape
    channels = int(encoder_args.get("in_channels", 3))
    # a VQModel's codes are vq_embed_dim wide (None: latent_channels, its default 3)
    code_width = encoder_args.get("vq_embed_dim") or encoder_args.get("latent_channels", 4)
    if channels != c:
        raise ConfigError(f"{where} reads {channels}-channel images, but the data have {c}")
    factor = 2 ** (len(encoder_args.get("block_out_channels", [64])) - 1)
    if h % factor or w % factor:
        raise ConfigError(
            f"{where} downsamples by {factor}: the images' height and width must divide by "
            f"{factor}; got {h}x{w} (data.image_size sets an image folder's size; resize "
            "other data to fit)"
        )
    return int(code_width), h // factor, w // factor


def reference(init: str) -> str | None:
    """The PATH_OR_REPO of model.init ('' -> None), or one line saying what it takes."""
    if not init:
        return None
    if not init.startswith(PREFIX) or not init[len(PREFIX) :].strip():
        raise ConfigError(
            f"model.init {init!r}: write diffusers:PATH_OR_REPO (a folder holding a diffusers "
            "AutoencoderKL or VQModel, or a Hub repo OWNER/NAME[/SUBFOLDER]), or '' for none"
        )
    return init[len(PREFIX) :]


def check_reference(init: str) -> None:
    """Refuse at once a model.init that names a local path which is not there ('/', '.' or
    '~' first: never a Hub repo id), before a run spends time decoding its data."""
    ref = reference(init)
    if ref is not None and ref[0] in "/.~" and not Path(ref).expanduser().exists():
        raise ConfigError(
            f"model.init {PREFIX}{ref}: no such folder; point it at a saved diffusers "
            "AutoencoderKL or VQModel (config.json and its weights) or a Hub repo OWNER/NAME"
        )


def check_before_data(cfg: Any) -> None:
    """What model.init can be refused for from its config.json alone (a small file, read
    through the Hugging Face cache for a Hub repo): a missing folder, a config that is no
    AutoencoderKL's, model.* options it replaces set to other values. Run before the data
    are decoded and the weights are read or downloaded."""
    check_reference(cfg.init)
    ref = reference(cfg.init)
    if ref is not None:
        _, _, _, config = _read_config(ref)
        check_class(cfg, config["_class_name"])
        check_replaced(cfg, config)


def load(init: str) -> Start:
    """The diffusers AutoencoderKL or VQModel that model.init names: its halves'
    arguments, its weights in vaekit's keys and a VQModel's quantiser settings."""
    ref = reference(init)
    assert ref is not None
    model = _from_pretrained(ref)
    class_name = type(model).__name__
    vq = class_name == vqmodel.CLASS_NAME
    config = {**dict(model.config), "_class_name": class_name}
    quantizer = None
    if vq:
        encoder_args, decoder_args, quantizer = vqmodel.split_config(config)
    else:
        encoder_args, decoder_args = autoencoderkl.split_config(config)
    if int(encoder_args.get("in_channels", 3)) != int(decoder_args.get("out_channels", 3)):
        raise ConfigError(
            f"model.init {init}: its in_channels and out_channels differ; vaekit reconstructs "
            "its input, so they must be equal"
        )
    state = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
    bad = non_finite(state)
    if bad:  # refused here, not reported after the first step as a diverged run
        raise ConfigError(
            f"the starting model in {ref} has non-finite weights in {_some(bad)}; "
            f"model.init starts only from a {class_name} whose weights are all finite"
        )
    layout = vqmodel if vq else autoencoderkl
    weights = layout.from_diffusers_keys(state)
    return Start(class_name, encoder_args, decoder_args, weights, quantizer, config)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """diffusers' and transformers' loggers and Python warnings silenced: what goes wrong
    in a load is vaekit's one line, not the lines diffusers logs before it raises (or the
    "newly initialized" weights it warns about, which _check_loaded refuses)."""
    loggers = [logging.getLogger(name) for name in ("diffusers", "transformers")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.CRITICAL + 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _read_config(ref: str) -> tuple[Any, str, dict[str, Any], dict[str, Any]]:
    """diffusers' class (AutoencoderKL or VQModel), where from_pretrained reads `ref` (a folder or a
    repo id) with its keyword arguments (a subfolder), and the config.json there."""
    what = f"model.init {PREFIX}{ref}"
    AutoencoderKL = require("diffusers", "diffusers", what, attribute=CLASS_NAME)
    where, kwargs = ref, {}
    local = Path(ref).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ConfigError(
                f"model.init {PREFIX}{ref}: a diffusers model is a folder (config.json and "
                "diffusion_pytorch_model.safetensors), not a file"
            )
        where = str(local)
    elif ref.count("/") == 2:  # OWNER/NAME/SUBFOLDER on the Hub
        owner, name, sub = ref.split("/")
        where, kwargs = f"{owner}/{name}", {"subfolder": sub}
    try:
        with quiet():
            config = AutoencoderKL.load_config(where, **kwargs)
    except Exception as e:  # missing, offline, or not JSON
        raise _unreadable(ref, e) from None
    found = config.get("_class_name") if isinstance(config, dict) else None
    if found not in CLASS_NAMES:
        raise ConfigError(
            f"model.init {PREFIX}{ref} holds a {found or 'config without _class_name'}, "
            f"not a diffusers {CLASS_NAME} or VQModel"
        )
    return require("diffusers", "diffusers", what, attribute=found), where, kwargs, config


def _unreadable(ref: str, e: BaseException) -> ConfigError:
    return ConfigError(
        f"model.init {PREFIX}{ref}: no diffusers {CLASS_NAME} could be read there ({first_line(e)})"
    )


def _from_pretrained(ref: str) -> Any:
    autoencoderkl, where, kwargs, _ = _read_config(ref)
    try:
        with quiet():
            # low_cpu_mem_usage=False: the same plain load with or without accelerate
            model, info = autoencoderkl.from_pretrained(
                where,
                torch_dtype=torch.float32,
                low_cpu_mem_usage=False,
                ignore_mismatched_sizes=True,  # reported below with the rest, not as a traceback
                output_loading_info=True,
                **kwargs,
            )
    except Exception as e:  # missing weights, offline, corrupt, or a config it cannot build
        folder = Path(where, kwargs.get("subfolder", ""))
        if folder.is_dir() and not any(folder.glob(f"{WEIGHTS_FILE}*")):
            raise ConfigError(
                f"model.init {PREFIX}{ref}: the folder holds a config.json but no weights "
                f"({WEIGHTS_FILE}.safetensors); save the model with diffusers' save_pretrained"
            ) from None
        raise _unreadable(ref, e) from None
    _check_loaded(f"{PREFIX}{ref}", info)
    return model


def _check_loaded(init: str, info: dict[str, Any]) -> None:
    """Loading is strict: diffusers leaves a weight the file lacks (or has in another
    shape) uninitialised and ignores one its config has no place for; refuse both."""
    wrong = [
        f"{k} ({_shape(a)} in the file, {_shape(b)} in the model)"
        for k, a, b in info.get("mismatched_keys", [])
    ]
    problems = [
        f"{what}: {_some(keys)}"
        for what, keys in (
            ("missing", info.get("missing_keys", [])),
            ("unexpected", info.get("unexpected_keys", [])),
            ("wrong shape", wrong),
        )
        if keys
    ]
    if problems:
        raise ConfigError(
            f"model.init {init}: its weights do not fit its config.json "
            f"({'; '.join(problems)}); model.init starts only from a complete {CLASS_NAME}"
        )


def _some(names: list[str], most: int = 3) -> str:
    names = sorted(names)
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _shape(shape: Any) -> str:
    return "x".join(str(n) for n in shape)
