"""The one path from a torch or Hugging Face dataset to a vaekit `Dataset`: each split is
seen as a `Source`, the one protocol of row sources, and assembled (both in assemble.py),
whatever it came as.

    data = vaekit.data.from_torch(train, test=None, column="", label_column="", stream="auto")

`source_of` is the only place that tells the kinds apart: a DataLoader stands for its
`.dataset` (vaekit's own seeded order and batch size), a map-style torch Dataset is read
by index (torch_source.py), a Hugging Face `datasets.Dataset` by lists of indices
(hf.py), and an iterable dataset of either library is read once into memory
(iterable.py). `from_torch` (Python), `as_dataset` (Trainer(data=...)) and `load_hf`
(`--data hf:...`) all end in `read`.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import DataLoader, IterableDataset
from torch.utils.data import Dataset as TorchDataset

from ...config import DataConfig
from ...errors import ConfigError, DataError
from ..core.dataset import Dataset
from .assemble import Source, assemble, stream_choice
from .hf import HFSource, hf_splits, open_hf
from .iterable import read_iterable
from .torch_source import TorchSource

ACCEPTED = (
    "a vaekit.data.Dataset, a torch Dataset or DataLoader, or a Hugging Face datasets.Dataset"
)


def _is_hf(data: Any) -> bool:
    return type(data).__module__.startswith("datasets.")


def is_supported(data: Any) -> bool:
    """A torch Dataset or DataLoader, or a Hugging Face dataset (from_torch reads it)."""
    return _is_hf(data) or isinstance(data, TorchDataset | DataLoader)


def source_of(data: Any, name: str, cfg: DataConfig) -> Source:
    """The row source of a torch Dataset or DataLoader or a Hugging Face dataset."""
    if isinstance(data, DataLoader):
        data = data.dataset  # vaekit's own seeded order and batch size
    kind = type(data).__name__
    if _is_hf(data) and kind == "Dataset":
        return HFSource(data, name, cfg)
    if isinstance(data, IterableDataset) or (_is_hf(data) and kind == "IterableDataset"):
        return read_iterable(data, name, cfg)
    if _is_hf(data):
        raise DataError(
            f"{name} is a datasets.{kind}; vaekit takes a datasets.Dataset (one split: "
            "dataset['train']) or a DatasetDict with a 'train' split"
        )
    if isinstance(data, TorchDataset):
        return TorchSource(data, name, cfg)
    raise ConfigError(
        f"{name} is a {kind}, not a torch Dataset or DataLoader or a Hugging Face datasets.Dataset"
    )


def read(name: str, train: Any, test: Any, cfg: DataConfig, where: str = "") -> Dataset:
    """The Dataset `name` of `train` and `test` (None: a seeded fraction of train is held
    out); `where` names the train split in messages (default: `name`)."""
    where = where or name
    if test is None and type(train).__name__ == "DatasetDict":
        train, test = hf_splits(train, "", where)
    train_source = source_of(train, where, cfg)
    test_source = None if test is None else source_of(test, f"{where} test", cfg)
    return assemble(name, train_source, test_source, cfg)


def from_torch(
    train: Any,
    test: Any = None,
    *,
    column: str = "",
    label_column: str = "",
    stream: bool | str = "auto",
    test_fraction: float = 0.1,
    split_seed: int = 0,
    limit_train: int = 0,
    limit_test: int = 0,
    name: str = "",
) -> Dataset:
    """A vaekit Dataset of `train` (and `test`; without one, a seeded `test_fraction` of
    train is held out). `column` / `label_column` name the image and label of dict
    examples ('' finds them; label_column 'none' drops labels); `stream` True reads each
    batch when it is needed, False reads every row into memory, 'auto' streams what would
    take more than a quarter of memory."""
    if isinstance(train, Dataset):
        raise ConfigError(
            "from_torch takes a torch or Hugging Face dataset; this is a vaekit.data.Dataset "
            "already: pass it to the Trainer as it is"
        )
    name = name or type(getattr(train, "dataset", train)).__name__
    cfg = DataConfig(
        stream=stream_choice(stream), test_fraction=test_fraction, split_seed=split_seed,
        limit_train=limit_train, limit_test=limit_test, column=column, label_column=label_column,
    )  # fmt: skip
    return read(name, train, test, cfg)


def as_dataset(data: Any, cfg: DataConfig) -> Dataset:
    """`data` (Trainer(data=...)) as a vaekit Dataset, read with the `data.*` options."""
    if isinstance(data, Dataset):
        return data
    if not is_supported(data):
        raise ConfigError(
            f"Trainer(data=...) takes {ACCEPTED} (or None to load config.data), not "
            f"{type(data).__name__}"
        )
    return read(type(getattr(data, "dataset", data)).__name__, data, None, cfg)


def load_hf(spec: str, cfg: DataConfig, progress: bool = True) -> Dataset:
    """`--data hf:OWNER/NAME[:SPLIT]` or `hf:PATH[:SPLIT]` through the datasets library."""
    name, train, test = open_hf(spec, progress)
    return read(name, train, test, cfg, where=spec)
