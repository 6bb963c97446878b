"""The examples `encode` and `score` read: a split of a data source (or all of it), in a
fixed order, read a chunk at a time, each example named by an id, its label and, for a
folder, its file.

An example's id is its row in the source where the source is one array or one folder
that vaekit splits itself (a file, a folder, an .npz without a test split, a Hugging Face
dataset with one split): the same number whichever split it fell in, so `--split all`
lists the source in its own order. Sources that come split (mnist, fashion-mnist, noise,
an .npz or Hugging Face dataset with its own test split) number each split from 0, and
`--split all` lists train, val, then test. The splits are those the run trained with:
the same test fraction, split seed and validation carve (data/core/validation.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data import Dataset
from ..data.core.dataset import split_indices
from ..data.core.validation import validation_rows
from ..errors import ConfigError, DataError

SPLITS = ("train", "val", "test", "all")


@dataclass
class Rows:
    """Examples of one or more splits of `name`, in output order."""

    name: str
    parts: Sequence[tuple[str, Any, torch.Tensor | None]]  # (split, x, y); x: tensor, LazyRows
    part: np.ndarray  # (N,) index into parts of each example
    position: np.ndarray  # (N,) its row within that part
    ids: np.ndarray  # (N,) int64: see the module docstring
    files: np.ndarray | None = None  # (N,) str: folder images' paths under the folder
    class_names: list[str] = dataclasses.field(default_factory=list)
    _buffers: dict[int, torch.Tensor] = dataclasses.field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def labelled(self) -> bool:
        return all(y is not None for _, _, y in self.parts)

    @property
    def example_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.parts[0][1].shape[1:])

    def read(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Examples start..stop-1 as stored (uint8 or float) and their labels (or None);
        the examples may live in a buffer that the next read reuses."""
        part, pos = self.part[start:stop], self.position[start:stop]
        if len(self.parts) == 1 or (part == part[0]).all():
            _, x, y = self.parts[int(part[0])]
            index = torch.from_numpy(pos)
            rows = self._gather(int(part[0]), x, index, stop - start)
            return rows, None if y is None else y.index_select(0, index)
        xs = torch.empty((stop - start, *self.example_shape), dtype=self.parts[0][1].dtype)
        ys = torch.empty(stop - start, dtype=torch.long) if self.labelled else None
        for i, (_, x, y) in enumerate(self.parts):
            here = np.flatnonzero(part == i)
            if len(here):
                index = torch.from_numpy(pos[here])
                xs[here] = self._gather(i, x, index, stop - start)
                if ys is not None and y is not None:
                    ys[here] = y.index_select(0, index)
        return xs, ys

    def _gather(self, i: int, x: Any, index: torch.Tensor, most: int) -> torch.Tensor:
        """x[index] of part i, through a buffer kept for the part: the parts' shares of a
        chunk vary in size, and fresh tensors of varying sizes fragment a heap that keeps
        freed memory (allocator.tune_malloc) until it grows with the data."""
        if not isinstance(x, torch.Tensor):  # LazyRows: a read per chunk anyway
            return x.index_select(0, index)
        buffer = self._buffers.get(i)
        if buffer is None or len(buffer) < most:
            buffer = self._buffers[i] = torch.empty((most, *x.shape[1:]), dtype=x.dtype)
        return torch.index_select(x, 0, index, out=buffer[: len(index)])

    def names(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """What names examples start..stop-1: id, and split (several splits), label,
        class (labels with class names) and file (a folder's images) where known."""
        out: dict[str, np.ndarray] = {"id": self.ids[start:stop]}
        if len(self.parts) > 1:
            out["split"] = np.array([p[0] for p in self.parts])[self.part[start:stop]]
        if self.labelled:
            y = self.labels(start, stop)
            out["label"] = y
            if self.class_names and int(y.max(initial=0)) < len(self.class_names):
                out["class"] = np.array(self.class_names)[y]
        if self.files is not None:
            out["file"] = self.files[start:stop]
        return out

    def labels(self, start: int, stop: int) -> np.ndarray:
        """The labels (int64) of examples start..stop-1 of labelled rows."""
        part, pos = self.part[start:stop], self.position[start:stop]
        y = np.empty(stop - start, dtype=np.int64)
        for i, (_, _, labels) in enumerate(self.parts):
            here = np.flatnonzero(part == i)
            if len(here) and labels is not None:
                y[here] = labels.index_select(0, torch.from_numpy(pos[here])).numpy()
        return y


def select(data: Dataset, split: str) -> Rows:
    """The examples of `split` (train, val, test or all) of `data`, in output order."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    splits = _splits(data)
    wanted = [s for s in ("train", "val", "test") if split in (s, "all") and s in splits]
    if not wanted:
        raise DataError(
            f"{data.name} has no validation split (data.val_fraction is 0); choose --split "
            "train, test or all"
        )
    parts = [(s, splits[s][0], splits[s][1]) for s in wanted]
    part = np.concatenate([np.full(len(splits[s][3]), i) for i, s in enumerate(wanted)])
    position = np.concatenate([splits[s][2] for s in wanted])
    all_ids = np.concatenate([splits[s][3] for s in wanted])
    if "split" in data.info and len(wanted) > 1:  # one source: its own order
        order = np.argsort(all_ids, kind="stable")
        part, position, all_ids = part[order], position[order], all_ids[order]
    if len(all_ids) == 0:
        raise DataError(f"the {split} split of {data.name} holds no examples")
    files = data.info.get("files")
    file_names = None if not isinstance(files, list) else np.array(files)[all_ids]
    return Rows(data.name, parts, part, position, all_ids, file_names, list(data.class_names))


Split = tuple[Any, torch.Tensor | None, np.ndarray, np.ndarray]  # x, y, positions in x, ids


def _splits(data: Dataset) -> dict[str, Split]:
    """Each split's rows (x, y), the positions of its examples in them, and their ids (see
    the module docstring). A validation set still to carve (info["carve"], set by
    `loading.data_of`) is carved here by position: no row is read or copied."""
    n_train, n_test = len(data.x_train), len(data.x_test)
    n_val = 0 if data.x_val is None else len(data.x_val)
    validation, carve = data.info.get("validation"), data.info.get("carve")
    carved = isinstance(validation, dict) and validation.get("source") == "carved"
    record = data.info.get("split")
    if isinstance(record, dict):  # split by split_indices, then cut by data.limit_*
        total = int(record["train"]) + int(record["test"])
        train, test, _ = split_indices(total, float(record["test_fraction"]), int(record["seed"]))
        train, test = train[: n_train + (n_val if carved else 0)], test[:n_test]
    else:
        train = np.arange(n_train + (n_val if carved else 0), dtype=np.int64)
        test = np.arange(n_test, dtype=np.int64)
    out: dict[str, Split] = {"test": (data.x_test, data.y_test, np.arange(n_test), test)}
    if carved:  # carved by load_data: the ids of the rows it kept and held out
        assert isinstance(validation, dict)
        fraction, seed = float(validation["fraction"]), int(validation["seed"])
        kept, held = validation_rows(len(train), fraction, seed)
        train, val = train[kept], train[held]
    elif data.x_val is None and isinstance(carve, dict) and carve["fraction"] > 0:
        kept, held = validation_rows(n_train, float(carve["fraction"]), int(carve["seed"]))
        out["train"] = (data.x_train, data.y_train, kept, train[kept])
        out["val"] = (data.x_train, data.y_train, held, train[held])
        return out
    else:  # a validation set of its own (or none): counted from 0
        val = np.arange(n_val, dtype=np.int64)
    out["train"] = (data.x_train, data.y_train, np.arange(n_train), train)
    if data.x_val is not None:
        out["val"] = (data.x_val, data.y_val, np.arange(n_val), val)
    for name, (x, _, positions, ids) in out.items():
        if len(ids) != len(positions) or len(positions) > len(x):  # a record that lies
            raise RuntimeError(f"{data.name}: {len(ids)} ids for {len(x)} {name} examples")
    return out
