"""The validation split: held-out training examples that training evaluates and selects
on, so that the test set stays untouched until `vaekit evaluate` and `vaekit report`.

A source with a validation set of its own (an .npz's x_val, a Dataset built with x_val)
keeps it; otherwise `carve_validation` holds out `val_fraction` of the training rows by a
permutation seeded with `data.split_seed`, the same on every run and every resume of
the same config. Dataset.info["validation"] records which it was and how many rows.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from ...errors import DataError
from .dataset import Dataset
from .streaming import is_lazy


def carve_validation(data: Dataset, fraction: float, seed: int) -> Dataset:
    """`data` with a validation set: its own if it has one, else `fraction` of the
    training rows (by a seeded permutation), else none (fraction 0).

    The two sides are gathered with `index_select` in the training set's order, once:
    sorted row indices keep a memory-mapped source's reads sequential.
    """
    if data.x_val is not None:
        check_validation(data)
        if "validation" in data.info:  # recorded by its source (noise draws its own)
            return data
        return _recorded(data, {"source": "explicit", "train": data.x_train.shape[0]})
    if fraction <= 0:
        return data
    n = int(data.x_train.shape[0])
    n_val = max(1, int(round(n * fraction)))  # a small set still gets one: it is on by default
    if n - n_val < 1:
        raise DataError(
            f"cannot hold out data.val_fraction={fraction:g} of the {n} training examples of "
            f"{data.name} as a validation set (both sides need at least one); set "
            "data.val_fraction 0 for no validation set, or use more training data"
        )
    kept, held = validation_rows(n, fraction, seed)
    train_rows, val_rows = torch.from_numpy(kept), torch.from_numpy(held)
    x, y = data.x_train, data.y_train
    carved = dataclasses.replace(
        data,
        x_train=_rows(x, train_rows),
        y_train=None if y is None else y.index_select(0, train_rows.to(y.device)),
        x_val=_rows(x, val_rows),
        y_val=None if y is None else y.index_select(0, val_rows.to(y.device)),
    )
    return _recorded(
        carved, {"source": "carved", "fraction": fraction, "seed": seed, "train": n - n_val}
    )


def validation_rows(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The sorted positions, among n training rows, that stay for training and that
    `carve_validation` holds out (`fraction` of them, at least one)."""
    n_val = max(1, int(round(n * fraction)))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Rows of x: a streamed source (LazyRows) as a view that reads nothing yet."""
    if is_lazy(x):
        view: Any = x  # LazyRows.select(positions): a view (Tensor.select differs)
        return view.select(rows.numpy())
    return x.index_select(0, rows.to(x.device))


def _recorded(data: Dataset, record: dict[str, object]) -> Dataset:
    """A copy of `data` whose info["validation"] says where its validation set came from
    and how large the two sides are (the caller's Dataset is left as it was)."""
    assert data.x_val is not None
    val = int(data.x_val.shape[0])
    return dataclasses.replace(data, info={**data.info, "validation": {**record, "val": val}})


def check_validation(data: Dataset) -> None:
    """A validation set of its own must hold images like the training set's, with labels
    exactly when the training set has them."""
    x_val, y_val = data.x_val, data.y_val
    if x_val is None:
        if y_val is not None:
            raise DataError(f"{data.name} has validation labels (y_val) but no x_val")
        return
    if x_val.shape[0] == 0:
        raise DataError(
            f"{data.name}: the validation set x_val holds no images; give it some, or drop "
            "it to carve one from the training set (data.val_fraction)"
        )
    if tuple(x_val.shape[1:]) != tuple(data.x_train.shape[1:]) or x_val.dtype != (
        data.x_train.dtype
    ):
        raise DataError(
            f"{data.name}: x_val holds {x_val.dtype} images of shape {tuple(x_val.shape[1:])}, "
            f"x_train {data.x_train.dtype} of {tuple(data.x_train.shape[1:])}; they must match"
        )
    if (y_val is None) != (data.y_train is None):
        have, lack = ("y_train", "y_val") if y_val is None else ("y_val", "y_train")
        raise DataError(
            f"{data.name} has {have} but no {lack}: labels must come for both the training "
            f"and the validation set or for neither; add {lack} or remove {have}"
        )
    if y_val is not None and y_val.shape != x_val.shape[:1]:
        raise DataError(f"{data.name}: {y_val.shape[0]} labels (y_val) for {x_val.shape[0]} images")
