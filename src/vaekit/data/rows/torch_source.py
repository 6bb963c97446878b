"""A torch Dataset or DataLoader (or a Hugging Face dataset) as a vaekit `Dataset`.

    data = vaekit.data.from_torch(train, test=None, column="", label_column="", stream="auto")

A map-style dataset is read by index, example by example (or with `__getitems__` where
it has one), in vaekit's own seeded order: a DataLoader stands for its `.dataset`, and
its sampler, batch size, workers and collate function are not used (train.batch_size
is the batch size), so that a run resumes mid-epoch in the same order. An
IterableDataset cannot be read by index: it is read once into memory, within the
memory limit, or refused. See assemble.py for the split, the limits and streaming.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import DataLoader, IterableDataset
from torch.utils.data import Dataset as TorchDataset

from ...config import DataConfig
from ...errors import ConfigError, DataError
from ..core.arrays import row_dtype
from ..core.dataset import Dataset
from .assemble import Options, Source, assemble, check_index_memory, stream_choice
from .examples import Layout, layout_of, stack_images, to_array
from .iterable import read_iterable

FIRST_BATCH = 64  # examples whose labels are compared with `targets` when a dataset is opened
ACCEPTED = (
    "a vaekit.data.Dataset, a torch Dataset or DataLoader, or a Hugging Face datasets.Dataset"
)


class TorchSource(Source):
    """A map-style dataset: `len(d)` examples, `d[i]` each."""

    kind = "torch"

    def __init__(self, dataset: Any, name: str, column: str, label_column: str) -> None:
        self.dataset, self.name = dataset, name
        try:
            self.n = len(dataset)
        except TypeError:
            raise DataError(
                f"{name} has no length (len() fails); vaekit reads a map-style dataset by "
                "index: give it __len__ and __getitem__, or pass an IterableDataset"
            ) from None
        except (ValueError, OverflowError) as e:  # __len__ < 0, or past sys.maxsize
            raise DataError(
                f"{name}: len() fails ({e}); __len__ must return a count >= 0"
            ) from None
        if self.n == 0:
            raise DataError(f"{name} holds no examples")
        check_index_memory(name, self.n)
        first = dataset[0]
        self.layout: Layout = layout_of(first, column, label_column, name)
        image = to_array(self.layout.image_of(first, f"{name}[0]"), f"{name}[0]")
        self.first_shape, self.dtype = image.shape, row_dtype(image)
        self.row_shape = stack_images([image], image.shape, self.dtype, name, [0]).shape[1:]
        self.labelled = self.layout.label is not None
        classes = getattr(dataset, "classes", None)  # torchvision's name for them
        named = isinstance(classes, list) and all(isinstance(c, str) for c in classes)
        self.class_names = list(classes) if self.labelled and named else []  # type: ignore[arg-type]
        self.targets = self._targets()
        if self.targets is not None:  # checked against the examples' own labels at once
            self.read(np.arange(min(self.n, FIRST_BATCH)))

    def examples(self, indices: np.ndarray) -> list[Any]:
        wanted = [int(i) for i in indices]
        many = getattr(self.dataset, "__getitems__", None)
        if many is None:
            return [self.dataset[i] for i in wanted]
        got = many(wanted)
        try:
            got = list(got)
        except TypeError:
            got = None
        if got is None or len(got) != len(wanted):
            have = "not a list" if got is None else f"{len(got)} examples"
            raise DataError(
                f"{self.name}.__getitems__ returned {have} for {len(wanted)} indices; it must "
                "return one example per index, in order"
            )
        return got

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        examples = self.examples(indices)
        at = [f"{self.name}[{i}]" for i in indices]
        images = [
            to_array(self.layout.image_of(e, where), where)
            for e, where in zip(examples, at, strict=True)
        ]
        index = [int(i) for i in indices]
        rows = stack_images(images, self.first_shape, self.dtype, self.name, index)
        if not self.labelled:
            return rows, None
        labels = [self.layout.label_of(e, where) for e, where in zip(examples, at, strict=True)]
        got = np.array(labels, dtype=np.int64)
        if self.targets is not None:
            self._agree(got, indices)
        return rows, got

    def labels(self) -> np.ndarray | None:
        """Every label: the examples' own, as `read` gives them (one rule, streamed or in
        memory). torchvision's `targets` stand in for them without reading an image where
        they agree with the examples (checked on the first batch, and on every example
        read into memory); else one pass over the examples."""
        return self.targets if self.targets is not None else super().labels()

    def _targets(self) -> np.ndarray | None:
        targets = getattr(self.dataset, "targets", None)
        if not self.labelled or self.layout.kind != "tuple" or targets is None:
            return None
        try:
            values = np.asarray(targets).reshape(-1)
        except (TypeError, ValueError):
            return None
        return values if len(values) == self.n and values.dtype.kind in "iu" else None

    def _agree(self, labels: np.ndarray, indices: np.ndarray) -> None:
        """Refuse a dataset whose `targets` disagree with the labels its examples carry (as
        a target_transform makes them): which one training used would depend on streaming."""
        assert self.targets is not None
        differ = np.flatnonzero(self.targets[np.asarray(indices, dtype=np.int64)] != labels)
        if len(differ):
            i = int(np.asarray(indices)[differ[0]])
            raise DataError(
                f"{self.name}.targets[{i}] is {self.targets[i]} but {self.name}[{i}] carries "
                f"label {labels[differ[0]]} ({len(differ)} of {len(labels)} examples read "
                "disagree, as with a target_transform); vaekit uses the examples' labels: make "
                ".targets match them, or delete the attribute"
            )


def is_supported(data: Any) -> bool:
    """A torch Dataset or DataLoader, or a Hugging Face dataset (from_torch reads it)."""
    hf = type(data).__module__.startswith("datasets.")
    return hf or isinstance(data, TorchDataset | DataLoader)


def source_of(data: Any, name: str, column: str, label_column: str) -> Source:
    """The row source of a torch Dataset or DataLoader or a Hugging Face dataset."""
    if isinstance(data, DataLoader):
        data = data.dataset  # vaekit's own seeded order and batch size
    if type(data).__module__.startswith("datasets."):  # Hugging Face, imported only then
        from .hf import hf_source

        return hf_source(data, name, column, label_column)
    if isinstance(data, IterableDataset):
        return read_iterable(data, name, column, label_column)
    if isinstance(data, TorchDataset):
        return TorchSource(data, name, column, label_column)
    raise ConfigError(
        f"{name} is a {type(data).__name__}, not a torch Dataset or DataLoader or a Hugging "
        "Face datasets.Dataset"
    )


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
    options = Options(stream_choice(stream), test_fraction, split_seed, limit_train, limit_test)
    if test is None and type(train).__name__ == "DatasetDict":
        from .hf import hf_splits

        train, test = hf_splits(train, "", name)
    train_source = source_of(train, name, column, label_column)
    test_source = None if test is None else source_of(test, f"{name} test", column, label_column)
    return assemble(name, train_source, test_source, options)


def as_dataset(data: Any, cfg: DataConfig) -> Dataset:
    """`data` (Trainer(data=...)) as a vaekit Dataset, read with the `data.*` options."""
    if isinstance(data, Dataset):
        return data
    if not is_supported(data):
        raise ConfigError(
            f"Trainer(data=...) takes {ACCEPTED} (or None to load config.data), not "
            f"{type(data).__name__}"
        )
    return from_torch(
        data,
        column=cfg.column,
        label_column=cfg.label_column,
        stream=cfg.stream,
        test_fraction=cfg.test_fraction,
        split_seed=cfg.split_seed,
        limit_train=cfg.limit_train,
        limit_test=cfg.limit_test,
    )
