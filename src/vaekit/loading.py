"""Load a model from any source, with the examples a command reads: the one place that
every command taking a RUN (and `vaekit.load`) goes through.

A source is a run directory, a model folder, `hf://OWNER/NAME`, or any diffusers
AutoencoderKL: `diffusers:PATH_OR_REPO[/SUBFOLDER]`, or a local folder that diffusers'
`save_pretrained` wrote (vaekit's own export included), recognised by its config.json's
`_class_name` (diffusers/model.py). A diffusers model has no fixed input size: it
is built at the size of the data it reads.

The examples come from `data` (anything `vaekit train --data` takes), read with the
model's data settings (its image size and channels; the split options of the run), or,
without it, from where the run's data came from (config.json's `data_source`,
data/provenance.py): a named dataset, noise or a Hugging Face dataset reload; a file or
folder reloads if its fingerprint is still the one training saw, and is refused if not;
data passed from Python (`Trainer(data=...)`) cannot reload and is refused, asking for
--data. A run saved before the record existed reloads its config's dataset, as before.

Split: `test` (the default) is the source's own test split (named datasets, an .npz's
x_test, a Hugging Face test split) or, for a source without one, the part training holds
out with data.test_fraction and data.split_seed (the run's, or the defaults 0.1 and 0);
`train` and `val` are the rows training steps on and validates on (data.val_fraction of the
rest, or the source's own validation split); `all` is every example of the source.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .config import DataConfig
from .data import Dataset, load_data, provenance
from .diffusers import model as diffusers_model
from .diffusers.export import CLASS_NAME
from .errors import ConfigError, DataError
from .models import VAE
from .models import load as load_folder

SPLITS = ("test", "train", "val", "all")
SPLIT_NAMES = {"test": "test", "train": "training", "val": "validation"}
PREFIX: str = diffusers_model.PREFIX
ASK = "pass --data SOURCE (a dataset name, an .npz/.npy/.csv/.parquet file, a folder or hf:...)"


@dataclass
class Examples:
    """The examples a command reads, as stored ((N, C, H, W) uint8 images or float data),
    their labels if any, the source's name and the split they are."""

    x: torch.Tensor
    y: torch.Tensor | None
    class_names: list[str]
    source: str
    split: str

    @property
    def name(self) -> str:
        """'the test split of fashion-mnist', 'all of shapes'."""
        if self.split == "all":
            return f"all of {self.source}"
        return f"the {SPLIT_NAMES[self.split]} split of {self.source}"

    @property
    def dataset(self) -> str:
        """The source, and its split unless it is the test split: 'shapes (all splits)'."""
        if self.split == "test":
            return self.source
        return f"{self.source} ({'all splits' if self.split == 'all' else self.split + ' split'})"


def load(
    source: str | Path,
    device: str | torch.device = "cpu",
    *,
    image_size: int | None = None,
    encoder: nn.Module | None = None,
    decoder: nn.Module | None = None,
) -> VAE:
    """A model from a run directory, a model folder, `hf://OWNER/NAME` (`encoder=`,
    `decoder=`: halves of classes that were not registered, as `vaekit.models.load` takes
    them), or a diffusers AutoencoderKL (`diffusers:PATH_OR_REPO`, or a folder diffusers
    wrote), built for `image_size` pixels (default: its config's sample_size)."""
    ref = diffusers_model.reference_of(source)
    if ref is None:
        return load_folder(source, device, encoder=encoder, decoder=decoder)
    return diffusers_model.load(ref, image_size, device)


def load_with_data(
    source: str | Path,
    data: str | Path | None = None,
    *,
    split: str = "test",
    image_size: int | None = None,
    settings: DataConfig | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[VAE, Examples]:
    """The model at `source` (as `load` reads it) and the examples of `split` ('test' or
    'all') of `data`, or of the run's own data when `data` is None (see the module's
    docstring for when that is refused). `image_size` sizes a diffusers model's images
    (default: its sample_size); `settings` are the data.* options `data` is read with
    (default: the run's, else the defaults), with the model's image size and channels."""
    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(SPLITS)}; got {split!r}")
    data = None if data is None else str(data)
    if data is not None and not data.strip():  # never the working directory as a folder
        raise ConfigError(f"--data is empty: {ASK}")
    ref = diffusers_model.reference_of(source)
    if ref is not None:
        return _diffusers_with_data(ref, data, split, image_size, settings, device, progress)
    model = load_folder(source, device)
    if data is None:
        dataset = _own_data(model, str(source), progress)
    else:
        cfg = settings or (model.run_config.data if model.run_config else DataConfig())
        c, h, _ = model.input_shape
        dataset = _read(data, cfg, h, c, progress)
        check_columns(model, dataset)
    examples = _split(dataset, split)
    check_fits(model, examples, str(source), data)
    return model, examples


def own_data_config(model: VAE, source: str) -> DataConfig:
    """The data.* options that reload the data `model` trained on (a file or folder by the
    absolute path it recorded), or one line asking for --data: data passed from Python, or
    a model that records no training configuration."""
    record = model.data_source
    if provenance.passed_from_python(record):
        raise DataError(
            f"{source} was trained on data passed from Python (Trainer(data=...)), which "
            f"vaekit cannot reload: {ASK}"
        )
    if model.run_config is None:
        raise DataError(f"{source} records no training data: {ASK}")
    data_cfg = model.run_config.data
    if record is not None and record.get("path"):  # found from any working directory
        data_cfg = dataclasses.replace(data_cfg, name=str(record["path"]))
    return data_cfg


def _own_data(model: VAE, source: str, progress: bool) -> Dataset:
    """The data the run trained on, reloaded from its record, or one line asking for --data."""
    data_cfg = own_data_config(model, source)
    record = model.data_source
    cfg = model.training_config()
    try:
        dataset = load_data(data_cfg, seed=cfg.train.seed, progress=progress)
    except DataError as e:
        if record is None or not record.get("path"):
            raise
        raise DataError(f"{e}; or {ASK}") from None  # a run from another machine, say
    if record is not None and record.get("fingerprint"):
        now = dataset.fingerprint()
        if now != record["fingerprint"]:
            raise DataError(
                f"{record['path']} changed since {source} was trained on it (fingerprint "
                f"{now}, trained on {record['fingerprint']}), so its test split may hold "
                f"training examples: pass --data {record['path']} to use it as it is now"
            )
    return dataset


def _read(data: str, cfg: DataConfig, size: int, channels: int, progress: bool) -> Dataset:
    """`data` read with `cfg`'s options at `size` pixels and `channels` (folders, Hugging
    Face images), every example kept (no limit_train / limit_test of a run)."""
    cfg = dataclasses.replace(
        cfg,
        name=data,
        image_size=size,
        channels=channels if channels in (1, 3) else cfg.channels,
        limit_train=0,
        limit_test=0,
    )
    return load_data(cfg, progress=progress, own_folder=True)  # the user's own --data


def _split(data: Dataset, split: str) -> Examples:
    if split == "test":
        x, y = data.x_test, data.y_test
    elif split == "train":  # the rows training stepped on: without the validation split
        x, y = data.x_train, data.y_train
    elif split == "val":
        if data.x_val is None:
            raise DataError(f"{data.name} has no validation split (data.val_fraction 0)")
        x, y = data.x_val, data.y_val
    else:
        splits = [(data.x_train, data.y_train), (data.x_val, data.y_val)]
        kept = [(a, b) for a, b in [*splits, (data.x_test, data.y_test)] if a is not None]
        x = torch.cat([a for a, _ in kept if a.shape[0]] or [data.x_test])
        labels = [b for a, b in kept if a.shape[0] and b is not None]
        rows = [a for a, _ in kept if a.shape[0]]
        y = torch.cat(labels) if labels and len(labels) == len(rows) else None
    examples = Examples(x, y, list(data.class_names), data.name, split)
    if x.shape[0] < 1:
        raise DataError(f"{examples.name} holds no examples; pass --split all, or other --data")
    return examples


def check_columns(model: VAE, data: Dataset) -> None:
    """A table's columns are read by position: a table whose names differ from the training
    table's (reordered, renamed) would be read silently wrong, so it is refused."""
    trained = [str(c) for c in getattr(model, "column_names", None) or []]
    columns = data.info.get("columns")
    given = [str(c) for c in columns] if isinstance(columns, list) else []
    if trained and given and given != trained:
        order = " (the same columns in another order)" if sorted(given) == sorted(trained) else ""
        raise DataError(
            f"{data.name} has columns {', '.join(given)[:200]}{order}; the model was trained "
            f"on {', '.join(trained)[:200]} in that order: give it a table with those columns"
        )


def check_fits(model: VAE, examples: Examples, source: str, data: str | None) -> None:
    """One line when the examples cannot go through the model: their shape, or no labels
    for a class-conditional model."""
    shape = tuple(examples.x.shape[1:])
    if shape != tuple(model.input_shape):
        given = f"--data {data}" if data else examples.name
        raise DataError(
            f"{given} holds examples of shape {shape}, but {source} takes "
            f"{tuple(model.input_shape)}; pass data of that shape"
        )
    if model.conditional and examples.y is None:
        raise DataError(f"{source} is class-conditional, but {examples.name} has no labels")


def _diffusers_with_data(
    ref: str,
    data: str | None,
    split: str,
    image_size: int | None,
    settings: DataConfig | None,
    device: str | torch.device,
    progress: bool,
) -> tuple[VAE, Examples]:
    if data is None:
        raise DataError(f"{PREFIX}{ref} is a diffusers {CLASS_NAME}, which records no data: {ASK}")
    pair = diffusers_model.read(ref)
    channels = int(pair[0].get("in_channels", 3))
    size = image_size or diffusers_model.sample_size(ref)
    examples = _split(_read(data, settings or DataConfig(), size, channels, progress), split)
    c, h, w = (int(s) for s in examples.x.shape[1:])
    return diffusers_model.build(pair, ref, (c, h, w), device), examples
