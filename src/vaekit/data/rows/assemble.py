"""The one protocol of row sources, and a vaekit `Dataset` assembled from them: a torch
Dataset, a Hugging Face dataset, or rows read from an iterable of either, each seen as a
`Source` (n examples of one split, read by index as rows and labels, its layout and
kind of values read once from its first example: `Source.first`), then the split, the
limits and the choice between reading the rows into memory and streaming them (read.py
is the one path here, for torch and Hugging Face alike).

Everything is decided by index first (the seeded train/test split of `split_indices`,
`data.limit_train` / `limit_test`), so that only the rows a run uses are ever read. Then
`data.stream`: 'false' reads them into tensors (the fast path: no per-example work
while training), 'true' keeps them where they are (`LazyRows`: each batch is read when
the trainer asks for it, in the same seeded order), and 'auto' streams when the rows
would take more than half of the memory one dataset may take (`memory_limit`). Rows are
uint8 or float32 as the source's first example decided (`examples.row_dtype`), in memory
and streamed alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ...config import DataConfig
from ...errors import DataError
from ...limits import human_bytes
from ..core.dataset import Dataset, as_labels, split_indices
from ..core.streaming import CHUNK_ROWS, LazyRows
from ..core.untrusted import check_index_memory, memory_limit
from .examples import Layout, first_example

STREAM_CHOICES = ("auto", "true", "false")


class Source:
    """n examples of one split, read by index as rows (B, C, H, W) of `dtype` (uint8 or
    float32, decided by the first example) and labels."""

    name: str  # for messages
    n: int
    row_shape: tuple[int, int, int]
    first_shape: tuple[int, ...]  # the first example's image array, as its source gives it
    dtype: np.dtype  # of the rows: examples.row_dtype of the first example
    labelled: bool
    class_names: list[str]
    kind: str  # 'torch', 'hf', 'memory'

    def first(self, example: Any, cfg: DataConfig) -> Layout:
        """Read the layout of the examples and the rows' shape and kind from the first
        example, once (`examples.first_example`), and return the layout."""
        first = first_example(example, cfg.column, cfg.label_column, self.name)
        self.first_shape, self.dtype, self.row_shape = first.shape, first.dtype, first.row_shape
        self.labelled = first.layout.label is not None
        return first.layout

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def rows(self, indices: np.ndarray) -> np.ndarray:
        return self.read(indices)[0]

    def labels(self) -> np.ndarray | None:
        """Every label, in order; this default reads every example once (in chunks)."""
        if not self.labelled:
            return None
        out = np.empty(self.n, dtype=np.int64)
        for start in range(0, self.n, CHUNK_ROWS):
            labels = self.read(np.arange(start, min(start + CHUNK_ROWS, self.n)))[1]
            assert labels is not None  # a labelled source reads labels
            out[start : start + CHUNK_ROWS] = labels
        return out


def assemble(name: str, train: Source, test: Source | None, cfg: DataConfig) -> Dataset:
    """The Dataset of `train` (and `test`, else a held-out fraction of train), split and
    limited as data.* says."""
    check_index_memory(name, train.n + (0 if test is None else test.n))
    if test is not None and test.row_shape != train.row_shape:
        raise DataError(
            f"{test.name} holds images of shape {test.row_shape} but {train.name} holds "
            f"{train.row_shape} (C, H, W); both splits must have one shape"
        )
    if test is not None and test.dtype != train.dtype:
        raise DataError(
            f"{test.name} holds {test.dtype} images but {train.name} holds {train.dtype}; "
            "both splits must hold one kind of values (all float, or all uint8)"
        )
    if test is not None and test.labelled != train.labelled:
        have, lack = (train, test) if train.labelled else (test, train)
        raise DataError(
            f"{have.name} has labels but {lack.name} has none: give labels for both splits "
            "or for neither (label_column='none' drops them)"
        )
    info: dict[str, object] = {"source": train.kind}
    if test is None:
        train_idx, test_idx, split_info = split_indices(train.n, cfg.test_fraction, cfg.split_seed)
        info.update(split_info)
        test_source = train
    else:
        train_idx, test_idx, test_source = np.arange(train.n), np.arange(test.n), test
    if cfg.limit_train:
        train_idx = train_idx[: cfg.limit_train]
    if cfg.limit_test:
        test_idx = test_idx[: cfg.limit_test]
    rows = len(train_idx) + len(test_idx)
    streamed = _streams(name, train.row_shape, train.dtype, rows, stream_choice(cfg.stream))
    info["streamed"] = streamed
    read = _view if streamed else _read_all
    x_train, y_train = read(train, train_idx)
    x_test, y_test = read(test_source, test_idx)
    class_names = train.class_names or _numbered(y_train, y_test)
    return Dataset(name, x_train, x_test, y_train, y_test, class_names, info)


def _streams(
    name: str, row_shape: tuple[int, ...], dtype: np.dtype, rows: int, stream: str
) -> bool:
    needed = rows * int(np.prod(row_shape)) * dtype.itemsize
    limit = memory_limit()
    if stream == "true":
        return True
    if stream == "auto":
        return needed > limit // 2
    if needed > limit:
        raise DataError(
            f"{name}: {rows:,} {dtype} images of shape {row_shape} would need "
            f"{human_bytes(needed)} of memory, over the limit of {human_bytes(limit)}; "
            "stream them with data.stream true (stream=True in Python)"
        )
    return False


def _view(source: Source, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
    rows = LazyRows(source.rows, idx, source.row_shape, source.name, source.dtype)
    labels = source.labels()
    y = None if labels is None else torch.from_numpy(_checked(labels, source)[idx])
    return rows, y  # type: ignore[return-value]  # LazyRows stands in for the tensor


def _read_all(source: Source, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
    x = np.empty((len(idx), *source.row_shape), dtype=source.dtype)
    y = np.empty(len(idx), dtype=np.int64) if source.labelled else None
    for start in range(0, len(idx), CHUNK_ROWS):
        rows, labels = source.read(idx[start : start + CHUNK_ROWS])
        x[start : start + len(rows)] = rows
        if y is not None and labels is not None:
            y[start : start + len(rows)] = labels
    labels_t = None if y is None else torch.from_numpy(_checked(y, source))
    return torch.from_numpy(x), labels_t


def _checked(labels: np.ndarray, source: Source) -> np.ndarray:
    checked = as_labels(np.asarray(labels), len(labels), f"{source.name} labels")
    if source.class_names and len(checked) and int(checked.max()) >= len(source.class_names):
        raise DataError(
            f"{source.name}: label {int(checked.max())} is out of range for its "
            f"{len(source.class_names)} class names"
        )
    return checked


def _numbered(*labels: torch.Tensor | None) -> list[str]:
    """Class names '0'..'K-1' for K = the largest label + 1 (none without labels)."""
    present = [y for y in labels if y is not None and y.numel()]
    if not present:
        return []
    return [str(i) for i in range(max(int(y.max()) for y in present) + 1)]


def stream_choice(value: object) -> str:
    """data.stream as 'auto', 'true' or 'false' (Python callers may pass a bool)."""
    text = {True: "true", False: "false"}.get(value, value) if isinstance(value, bool) else value
    if text not in STREAM_CHOICES:
        raise DataError(f"stream must be 'auto', 'true' or 'false' (or a bool), not {value!r}")
    return str(text)
