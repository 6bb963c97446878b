"""Load a model from any source, with the examples a command reads: the one place that
every command taking a RUN (and `vaekit.load`) goes through.

A source is a run directory, a model folder, `hf://OWNER/NAME`, or any diffusers
AutoencoderKL or VQModel: `diffusers:PATH_OR_REPO[/SUBFOLDER]`, or a local folder that
diffusers' `save_pretrained` wrote (vaekit's own export included), recognised by its
config.json's `_class_name` (diffusers/model.py). A diffusers model has no fixed input size: it
is built at the size of the data it reads.

The examples come from `data` (anything `vaekit train --data` takes), read with the
model's data settings (its image size and channels; the split options of the run), or,
without it, from where the run's data came from (config.json's `data_source`,
data/provenance.py): a named dataset, noise or a Hugging Face dataset reload; a file or
folder reloads if its fingerprint is still the one training saw, and is refused if not;
data passed from Python (`Trainer(data=...)`) cannot reload and is refused, asking for
--data. A run saved before that record existed reloads its config's dataset only where
state.pt's fingerprint of the training data shows it is that dataset (vaekit 0.2), or
where it was written by vaekit 0.1, which recorded nothing either way; any other (a
Python-trained 0.2 run, a model folder without its state.pt) is refused, asking for --data.

Split: `test` (the default) is the source's own test split (named datasets, an .npz's
x_test, a Hugging Face test split) or, for a source without one, the part training holds
out with data.test_fraction and data.split_seed (the run's, or the defaults 0.1 and 0);
`train` and `val` are the rows training steps on and validates on (data.val_fraction of the
rest, or the source's own validation split); `all` is every example of the source. A
source too small to hold out a test split (one example, say) is read whole for `all` and
refused for the other splits, in one line naming --split all.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from .config import DataConfig
from .data import Dataset, load_data, provenance
from .data.core.dataset import TooFewToSplit
from .data.core.validation import carve_validation, validation_rows
from .diffusers import model as diffusers_model
from .errors import ConfigError, DataError
from .io import checkpoint
from .io.checkpoint import STATE_FILE
from .models import VAE
from .models import load as load_folder
from .models.pretrained import resolve as load_folder_path

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
    """The model at `source` (as `load` reads it) and the examples of `split` of `data`, or
    of the run's own data when `data` is None (see the module's docstring for when that is
    refused). `image_size` sizes a diffusers model's images (default: its sample_size);
    `settings` are the data.* options `data` is read with (default: the run's, else the
    defaults), with the model's image size and channels."""
    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(SPLITS)}; got {split!r}")
    data = None if data is None else str(data)
    if data is not None and not data.strip():  # never the working directory as a folder
        raise ConfigError(f"--data is empty: {ASK}")
    ref = diffusers_model.reference_of(source)
    if ref is not None:
        return _diffusers_with_data(ref, data, split, image_size, settings, device, progress)
    model = load_folder(source, device)
    dataset = data_of(model, data, split=split, source=str(source), progress=progress,
                      settings=settings)  # fmt: skip
    examples = _split(dataset, split)
    check_fits(model, examples, str(source), data)
    return model, examples


def data_of(
    model: VAE,
    data: str | None,
    *,
    split: str = "all",
    source: str = "the model",
    progress: bool = False,
    settings: DataConfig | None = None,
) -> Dataset:
    """The examples a command reads with `model`: `data` (anything --data takes) as the
    model reads it (`read`), or, with None, the data the run at `source` trained on
    (`own_data`). A validation set that training carves from the training rows is not
    carved (that would copy the rows) but recorded in info["carve"] (`carved` makes it)."""
    if data is None:
        return own_data(model, source, progress)
    if not data.strip():  # "" would be read as the current directory, a folder
        raise ConfigError(f"the data source is empty: {ASK}")
    run_config = model.run_config
    cfg = settings or (run_config.data if run_config is not None else DataConfig())
    seed = run_config.train.seed if run_config is not None else 0
    dataset = read(data, tuple(model.input_shape), cfg, seed, split, progress)
    check_columns(model, dataset)
    return dataset


def read(
    data: str,
    shape: tuple[int, ...],
    cfg: DataConfig,
    seed: int = 0,
    split: str = "all",
    progress: bool = False,
) -> Dataset:
    """`data` read with `cfg`'s options (a run's split seeds and test fraction; no limits),
    images decoded to the model's input `shape` (C, H, W) where it takes square images (at
    its channels, where those are 1 or 3). A source too small to hold out a test split (a
    file or folder of one example, say) is read whole for `split` all, and refused in one
    line for another split."""
    c, h, w = (int(s) for s in shape)
    cfg = dataclasses.replace(cfg, name=data, limit_train=0, limit_test=0)
    if h == w > 1:  # images: decoded at the model's size (and channels)
        cfg = dataclasses.replace(cfg, image_size=h, channels=c if c in (1, 3) else cfg.channels)
    try:
        return _load(cfg, seed, progress, own_folder=True)  # the user's own: a cache beside it
    except TooFewToSplit as e:
        if split != "all":
            raise DataError(
                f"{data} holds {e.n} example{'s' if e.n != 1 else ''}, too few to hold out a "
                f"{split} split (data.test_fraction {cfg.test_fraction:g}); pass --split all "
                "to use every one"
            ) from None
    return _load(dataclasses.replace(cfg, test_fraction=0.0), seed, progress, own_folder=True)


def own_data(model: VAE, source: str, progress: bool = False, ask: str = ASK) -> Dataset:
    """The data the run at `source` trained on, reloaded from its record (see the module's
    docstring), or one line ending in `ask` (default: asking for --data): data passed from
    Python, a file changed since, or a run saved before the record whose data cannot be
    shown to be its config's (`_unrecorded`)."""
    record = model.data_source
    if provenance.passed_from_python(record):
        raise DataError(
            f"{source} was trained on data passed from Python (Trainer(data=...)), which "
            f"vaekit cannot reload: {ask}"
        )
    if model.run_config is None:
        raise DataError(f"{source} records no training data: {ask}")
    data_cfg = model.run_config.data
    if record is not None and record.get("path"):  # found from any working directory
        data_cfg = dataclasses.replace(data_cfg, name=str(record["path"]))
    trained = record.get("fingerprint") if record is not None else _unrecorded(model, source, ask)
    try:
        dataset = _load(data_cfg, model.run_config.train.seed, progress)
    except DataError as e:
        if record is None or not record.get("path"):
            raise
        raise DataError(f"{e}; or {ask}") from None  # a run from another machine, say
    if trained and fingerprint(dataset) != trained:
        if record is None:
            raise DataError(
                f"{source} was trained on other data than its config's data.name "
                f"{data_cfg.name!r} gives now (data passed from Python, or changed since: the "
                f"fingerprint in its {STATE_FILE} differs), and it predates the record of "
                f"where its data came from: {ask}"
            )
        raise DataError(
            f"{record['path']} changed since {source} was trained on it (fingerprint "
            f"{fingerprint(dataset)}, trained on {trained}), so its test split may hold "
            f"training examples: "
            + (f"pass --data {record['path']} to use it as it is now" if ask == ASK else ask)
        )
    return dataset


def _unrecorded(model: VAE, source: str, ask: str) -> str | None:
    """The fingerprint of the training data of a run saved before config.json recorded
    where its data came from: state.pt's (vaekit 0.2 wrote it), which the config's data
    must match; None for a vaekit 0.1 folder, which recorded nothing that could tell and
    evaluates its config's data as 0.1 did. A later folder without either (a model folder
    or Hub repo, saved without its state.pt) cannot show what it was trained on: refused."""
    folder = None
    if source.startswith("hf://") or Path(source).is_dir():
        folder = load_folder_path(source)
    if folder is not None and "architecture" not in checkpoint.read_meta(folder):
        return None  # vaekit 0.1
    state = None if folder is None else folder / STATE_FILE
    if state is not None and state.is_file():
        recorded = checkpoint.load_state(state).get("data")
        if isinstance(recorded, str):
            return recorded
    raise DataError(
        f"{source} does not record what data it was trained on (saved before vaekit "
        f"recorded it, without a {STATE_FILE} to check its config's data.name against): {ask}"
    )


def _load(cfg: DataConfig, seed: int, progress: bool, own_folder: bool = False) -> Dataset:
    """load_data(cfg), with a validation set carved from the training rows recorded in
    info["carve"] rather than made (see `carved`). Noise draws a validation set of its own,
    and a source too small to carve one (read with a run's options) has none."""
    if cfg.name == "noise" or cfg.val_fraction <= 0:
        return load_data(cfg, seed=seed, progress=progress, own_folder=own_folder)
    uncut = dataclasses.replace(cfg, val_fraction=0.0)
    data = load_data(uncut, seed=seed, progress=progress, own_folder=own_folder)
    n = len(data.x_train)
    if data.x_val is not None or n - max(1, int(round(n * cfg.val_fraction))) < 1:
        return data
    record = {"fraction": cfg.val_fraction, "seed": cfg.split_seed}
    return dataclasses.replace(data, info={**data.info, "carve": record})


def carved(data: Dataset) -> Dataset:
    """`data` with the validation set its info["carve"] records, carved (training's rows)."""
    record = data.info.get("carve")
    if not isinstance(record, dict):
        return data
    info = {k: v for k, v in data.info.items() if k != "carve"}
    uncut = dataclasses.replace(data, info=info)
    return carve_validation(uncut, float(record["fraction"]), int(record["seed"]))


class _Rows:
    """Rows `kept` of x, as Dataset.fingerprint reads them (shape, dtype, index_select),
    without copying the others: the fingerprint of a carve that is only recorded."""

    def __init__(self, x: Any, kept: np.ndarray) -> None:
        self.x, self.kept = x, torch.from_numpy(kept)
        self.shape = torch.Size((len(kept), *x.shape[1:]))
        self.dtype = x.dtype

    def index_select(self, dim: int, idx: torch.Tensor) -> torch.Tensor:
        return self.x.index_select(dim, self.kept[idx])


def fingerprint(data: Dataset) -> str:
    """Dataset.fingerprint of the data training saw: with its validation set carved."""
    record = data.info.get("carve")
    if not isinstance(record, dict):
        return data.fingerprint()
    kept, held = validation_rows(len(data.x_train), record["fraction"], record["seed"])
    y = data.y_train
    view = dataclasses.replace(
        data,
        x_train=cast(torch.Tensor, _Rows(data.x_train, kept)),
        y_train=None if y is None else y.index_select(0, torch.from_numpy(kept)),
        x_val=torch.zeros((), dtype=data.x_train.dtype).expand(len(held), *data.shape),
    )
    return view.fingerprint()


def _split(data: Dataset, split: str) -> Examples:
    if split != "test":  # the training rows as training had them
        data = carved(data)
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
        raise DataError(f"{PREFIX}{ref} is a diffusers model, which records no data: {ASK}")
    pair = diffusers_model.read(ref)
    channels = int(pair.encoder_args.get("in_channels", 3))
    size = image_size or diffusers_model.sample_size(ref)
    dataset = read(data, (channels, size, size), settings or DataConfig(), 0, split, progress)
    examples = _split(dataset, split)
    c, h, w = (int(s) for s in examples.x.shape[1:])
    return diffusers_model.build(pair, ref, (c, h, w), device), examples
