"""A map-style torch Dataset as a row source (assemble.py), as `vaekit.data.from_torch`
reads it (read.py).

A map-style dataset is read by index, example by example (or with `__getitems__` where
it has one), in vaekit's own seeded order: a DataLoader stands for its `.dataset`, and
its sampler, batch size, workers and collate function are not used (train.batch_size
is the batch size), so that a run resumes mid-epoch in the same order. An
IterableDataset cannot be read by index: it is read once into memory, within the
memory limit, or refused (iterable.py). See assemble.py for the split, the limits and
streaming.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...config import DataConfig
from ...errors import DataError
from ..core.untrusted import check_index_memory
from .assemble import Source
from .examples import Layout, stack_images, to_array

FIRST_BATCH = 64  # examples whose labels are compared with `targets` when a dataset is opened


class TorchSource(Source):
    """A map-style dataset: `len(d)` examples, `d[i]` each."""

    kind = "torch"

    def __init__(self, dataset: Any, name: str, cfg: DataConfig) -> None:
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
        self.layout: Layout = self.first(dataset[0], cfg)
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
