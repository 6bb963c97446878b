"""What a run sets up and checks before its first step: the device it trains on, the
model (given, saved or built from the config), data the model can use; and the one-line
message a run that runs out of memory ends with."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import Config, validate
from ..data import Dataset, load_data
from ..data.core.dataset import evenly_spaced, mean_image, to_float
from ..data.core.validation import carve_validation
from ..diffusers.autoencoderkl import is_autoencoderkl
from ..diffusers.vqmodel import is_vqmodel
from ..errors import ConfigError, DataError, VaekitError
from ..io.checkpoint import STATE_FILE
from ..models import VAE
from ..models.conv import ConvEncoder
from ..models.described import model_section
from ..models.linear_path import MAX_VALUES, init_from_pca
from ..normalize import Normalization, fit
from ..wording import option
from .selection import require_validation


def checked_arguments(model: Any, config: Any) -> Config:
    """The Trainer's model and config, checked (a config validated, None the defaults);
    a model whose halves are unregistered or not JSON-describable is refused now, before
    any training."""
    if model is not None and not isinstance(model, VAE):
        raise ConfigError(
            f"Trainer takes a vaekit.VAE (or None), not {type(model).__name__}; wrap your "
            "encoder and decoder: vaekit.VAE(encoder, decoder, latent_dim=..., input_shape=...)"
        )
    if config is not None and not isinstance(config, Config):
        raise ConfigError(
            f"Trainer takes a vaekit.Config, not {type(config).__name__}; build one with "
            "vaekit.load_config(preset_or_yaml, {'train.epochs': 3, ...})"
        )
    if model is not None:
        model.architecture()
    return validate(config if config is not None else Config())


def resolve_device(name: str) -> torch.device:
    """'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N', checked to exist here."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        device = torch.device("meta")  # refused below like any other device vaekit lacks
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(
            f"config key 'train.device' is {name!r}; vaekit trains on cpu, cuda, cuda:N or auto"
        )
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"{option('device', name)} was asked for but CUDA is not available here; "
                f"use {option('device', 'cpu')} or 'auto'"
            )
        index = torch.cuda.current_device() if device.index is None else device.index
        if index >= count:  # tensors report cuda:N: name N ("cuda" alone: the current)
            raise ConfigError(
                f"{option('device', name)}: this machine has {count} GPU(s), 0 to {count - 1}"
            )
        return torch.device("cuda", index)
    return torch.device("cpu")  # "cpu:3" names no other memory: tensors report plain cpu


def fit_normalization(data: Dataset, kind: str) -> Normalization:
    """data.normalize fitted on the training split; uint8 data need no pass for 'none'
    (they are read as x / 255, in [0, 1])."""
    if kind == "none" and data.x_train.dtype == torch.uint8:
        return Normalization()
    return fit(data.x_train, kind)


STORED = (torch.uint8, torch.float16, torch.float32)  # what data/core/arrays.py stores


def training_data(given: Dataset | None, config: Config, show: bool) -> Dataset:
    """The given or configured data with its validation split (the same on a resume:
    seeded by data.split_seed); keep: best and patience refused without one."""
    cfg = config.data
    if given is not None:
        data = carve_validation(given, cfg.val_fraction, cfg.split_seed)
    else:
        data = load_data(cfg, config.train.seed, show, own_folder=True)  # cache beside it
    require_validation(data, config.train)
    split = data.info.get("validation")
    if show and isinstance(split, dict):
        print(
            f"validation set: {split['val']:,} examples ({split['source']}); training set: "
            f"{data.x_train.shape[0]:,}",
            file=sys.stderr,
        )
    return data


def check_data(data: Dataset, model: VAE) -> None:
    """Refuse data the model cannot use, before any training step. Only the training and
    validation sets are looked at: training never reads the test set."""
    splits = {"x_train": data.x_train}
    if data.x_val is not None:
        splits["x_val"] = data.x_val
    for name, x in splits.items():
        if x.dtype not in STORED:
            raise DataError(
                f"{data.name}:{name} is stored as {x.dtype}; vaekit stores uint8, float16 "
                "or float32 (vaekit.data.core.arrays.as_examples brings arrays there)"
            )
        if x.shape[0] == 0:
            raise DataError(f"{data.name}:{name} holds no examples")
    if data.shape != model.input_shape:
        raise DataError(
            f"{data.name} holds images of shape {data.shape} but the model takes "
            f"{model.input_shape} (C, H, W)"
        )
    check_labels(data, model.conditional)
    for name, y in (("y_train", data.y_train), ("y_val", data.y_val)):
        if y is None or y.numel() == 0:
            continue
        if model.conditional and int(y.max()) >= model.num_classes:
            raise DataError(
                f"{data.name}: label {int(y.max())} ({name}) is out of range for "
                f"the model's {model.num_classes} classes"
            )
        if data.num_classes and int(y.max()) >= data.num_classes:
            raise DataError(
                f"{data.name}: label {int(y.max())} ({name}) is out of range for "
                f"{data.num_classes} classes"
            )


def check_labels(data: Dataset, conditional: bool) -> None:
    """A class-conditional model needs labelled data."""
    if conditional and data.y_train is None:
        raise DataError(f"model.conditional needs labels, but {data.name} has none")


def is_out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, torch.OutOfMemoryError) or any(
        s in text for s in ("out of memory", "not enough memory", "can't allocate memory")
    )


def out_of_memory(device: torch.device, batch_size: int) -> VaekitError:
    return VaekitError(
        f"out of memory on {device} with {option('batch_size', batch_size)}: try a smaller "
        f"batch (e.g. {option('batch_size', max(1, batch_size // 2))}) or a smaller model; "
        "the last saved checkpoint is kept"
    )


def build_model(
    model: VAE | None,
    config: Config,
    data: Dataset,
    device: torch.device,
    saved: dict[str, Any] | None,
) -> VAE:
    """The model to train, on its device: the given one; for a resume without one, the one
    the run saved (its architecture through the registry); else the config's built-in
    one, its decoder started at the data's mean image. The global RNG is seeded first;
    the built-in conv VAE, given or built, trains in the channels_last layout."""
    torch.manual_seed(config.train.seed)  # initialisation, and any dropout
    cfg = config.model
    if model is None and saved is not None and "architecture" in saved:
        source = str(Path(config.train.out) / STATE_FILE)
        model = VAE.from_architecture(saved["architecture"], source)
    elif model is None:
        check_labels(data, cfg.conditional)
        norm = fit_normalization(data, config.data.normalize)
        norm.check_likelihood(cfg.likelihood, str(data.info.get("path", data.name)))
        model = VAE.from_config(cfg, data.shape, data.num_classes, norm.record())
        # a resumed run loads its weights; diffusers' pair (fresh or model.init) has no head
        diffusers_pair = is_autoencoderkl(model) or is_vqmodel(model)
        if cfg.init_output_bias and saved is None and not diffusers_pair:
            mean = model.normalization.to_model(mean_image(data.x_train)[None])[0]
            init_output_bias(model, mean)
        if cfg.linear_path and saved is None:  # the path starts at the images' PCA
            init_from_pca(model, pca_images(model, data.x_train))
    elif saved is None and model.normalization.identity:  # a user's model, trained afresh
        norm = fit_normalization(data, config.data.normalize)
        model.set_normalization(norm, str(data.info.get("path", data.name)))
    model.to(device)
    if isinstance(model.encoder, ConvEncoder):  # the built-in conv VAE trains in NHWC
        # Module.to(memory_format=) works but is missing from torch's type stubs
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def pca_images(model: VAE, x: torch.Tensor, most: int = 4096) -> torch.Tensor:
    """Evenly spaced training images, at most `most` and at most MAX_VALUES values in all
    (the same rows in every process of a distributed run), float, in the model's units."""
    idx = evenly_spaced(x.shape[0], min(most, max(2, MAX_VALUES // max(1, x[0].numel()))))
    rows = to_float(x.index_select(0, idx.to(x.device)).cpu())
    return model.normalization.to_model(rows)


@torch.no_grad()
def init_output_bias(model: VAE, mean_image: torch.Tensor) -> None:
    """Set the decoder's output bias so that p(x|z) starts at `mean_image` (C, H, W).

    A decoder that starts at the data's average spends no steps learning it (the
    marginal log-odds initialisation of Burda et al. 2015's code). Bernoulli biases
    become logit(mean), Gaussian and Laplace locations the mean itself; an MLP head
    takes the mean per pixel, a conv head per channel. Learned log-scales keep their
    initialisation. Needs a decoder whose last layer is `decoder.head`.
    """
    c = model.input_shape[0]
    mean = mean_image.detach().double().reshape(c, *model.input_shape[1:])
    head = getattr(model.decoder, "head", None)
    if not isinstance(head, nn.Linear | nn.Conv2d) or head.bias is None:
        raise ConfigError(
            "model.init_output_bias needs a decoder whose output layer is `decoder.head` "
            "(an nn.Linear or nn.Conv2d with a bias); turn the option off for this decoder"
        )
    if isinstance(head, nn.Conv2d):
        mean = mean.mean(dim=(1, 2))  # (C,)
    if model.likelihood == "bernoulli":
        mean = torch.logit(mean.clamp(1e-3, 1.0 - 1e-3))
    loc = mean.flatten().to(head.bias.dtype)
    head.bias[: loc.numel()].copy_(loc)


def perceptual_term(config: Config, device: torch.device) -> Any:
    """The perceptual distance loss.perceptual names, on `device`, or None (the module
    and its weights are loaded only when a run asks for one)."""
    if config.loss.perceptual == "none":
        return None
    from ..evaluation.perceptual import from_config

    return from_config(config.loss, device, seed=config.train.seed)


def resolved(config: Config, model: VAE) -> Config:
    """The config with its `model` section written from the model trained (model.likelihood
    'auto' resolved, a custom or model.init model's settings, a model built in Python with
    other settings than the config's), so that config.yaml and state.pt say what was
    trained (models/described.py)."""
    section, _ = model_section(model, config.model)
    return dataclasses.replace(config, model=section)
