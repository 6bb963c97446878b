"""Arrays a user brings, checked and brought to the layout vaekit trains on.

Images become (N, C, H, W) with any channel count; a table (N, F) becomes (N, F, 1, 1),
F features as channels of a 1x1 "image", so that one batching path, one MLP and one
normalisation (per channel) serve both. uint8 stays uint8 (the fast path, read as
x / 255); floats stay float, never quantised: float16 storage where it holds every value
exactly, else float32. Every array vaekit cannot use is a DataError naming the array, its
shape and dtype, and what is accepted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ...errors import DataError
from .dataset import Dataset, as_labels, split

LAYOUTS = ("auto", "nchw", "nhwc", "table")
MAX_CHANNELS = 4096  # a generous bound on C: a wider array is almost surely mis-shaped

_ACCEPTED = (
    "accepted: images (N, H, W), (N, C, H, W) or (N, H, W, C), flattened square uint8 "
    "images (N, H*W), or a table (N, F); numbers of any integer or float dtype"
)


def is_table(array: np.ndarray, layout: str = "auto") -> bool:
    """Whether a 2-D array is a table (N, F) rather than flattened square images: always
    with layout 'table'; with 'auto', unless it is uint8 with a square F (MNIST as rows)."""
    if array.ndim != 2 or layout in ("nchw", "nhwc"):
        return False
    if layout == "table":
        return True
    side = int(round(np.sqrt(array.shape[1])))
    return not (array.dtype == np.uint8 and side * side == array.shape[1])


def as_examples(
    array: np.ndarray, source: str, layout: str = "auto", floats: np.dtype | None = None
) -> np.ndarray:
    """Validate an array of examples and bring it to (N, C, H, W): uint8 kept, integers in
    0..255 as uint8, floats finite and stored as `floats`, by default float16 or float32
    (`storage_dtype`)."""
    if layout not in LAYOUTS:
        raise DataError(f"unknown data.layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    what = f"{source} (shape {tuple(array.shape)}, dtype {array.dtype})"
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise DataError(f"{what} does not hold plain numbers; {_ACCEPTED}")
    array = _to_nchw(array, what, layout)
    if array.shape[0] == 0:
        raise DataError(f"{what} holds no examples")
    if 0 in array.shape[1:]:
        raise DataError(f"{what}: examples of shape {array.shape[1:]} hold no values")
    if array.shape[1] > MAX_CHANNELS:
        raise DataError(
            f"{what}: {array.shape[1]:,} channels is over the limit of {MAX_CHANNELS:,}; "
            "is the array laid out as intended? (set data.layout)"
        )
    return _values(array, what, floats)


def _to_nchw(array: np.ndarray, what: str, layout: str) -> np.ndarray:
    if array.ndim in (2, 3, 4) and 0 in array.shape[1:]:
        raise DataError(f"{what}: examples of shape {array.shape[1:]} hold no values")
    if array.ndim == 2:
        if is_table(array, layout):
            return array.reshape(array.shape[0], array.shape[1], 1, 1)
        side = int(round(np.sqrt(array.shape[1])))
        if side * side != array.shape[1]:
            raise DataError(f"{what}: rows of {array.shape[1]} values are not square images")
        return array.reshape(-1, 1, side, side)
    if layout == "table":
        raise DataError(f"{what}: data.layout 'table' needs a 2-D array (N, F)")
    if array.ndim == 3:
        return array[:, None]
    if array.ndim == 4:
        last = layout == "nhwc" or (layout == "auto" and channels_last(array.shape))
        return np.ascontiguousarray(array.transpose(0, 3, 1, 2)) if last else array
    raise DataError(f"{what} is not an array of examples; {_ACCEPTED}")


def channels_last(shape: tuple[int, ...]) -> bool:
    """Whether a 4-D shape reads as (N, H, W, C): square H x W decides where it can
    ((N, 8, 8, 12) is channels-last, (N, 12, 8, 8) channels-first); else the channels are
    the shorter of axes 1 and 3."""
    _, a, b, c = shape
    if b == c:
        return False
    if a == b:
        return True
    return c < a


def _values(array: np.ndarray, what: str, floats: np.dtype | None) -> np.ndarray:
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.bool_:
        return np.ascontiguousarray(array.astype(np.uint8) * np.uint8(255))
    if array.dtype.kind in "iu":
        lo, hi = int(array.min()), int(array.max())
        if lo < 0 or hi > 255:
            raise DataError(
                f"{what}: integer data must lie in 0..255 (found {lo}..{hi}); save other "
                "numbers as float (they are then kept as they are, and data.normalize can "
                "scale them)"
            )
        return np.ascontiguousarray(array.astype(np.uint8))
    if not np.isfinite(array).all():
        raise DataError(f"{what} contains NaN or infinite values")
    dtype = storage_dtype(array) if floats is None else floats
    with np.errstate(over="ignore"):  # refused just below
        stored = np.ascontiguousarray(array.astype(dtype, copy=False))
    if not np.isfinite(stored).all():
        raise DataError(f"{what} holds values beyond the range of {dtype} (float32 at most)")
    return stored


def storage_dtype(array: np.ndarray) -> np.dtype:
    """float16 when every value survives the round trip exactly (half the memory), else
    float32 (what training computes in; float64 data lose only what float32 cannot hold)."""
    if array.dtype == np.float16:
        return np.dtype(np.float16)
    with np.errstate(over="ignore"):  # values past float16's range: not exact, float32
        half = array.astype(np.float16)
    if np.isfinite(half).all() and np.array_equal(half.astype(array.dtype), array):
        return np.dtype(np.float16)
    return np.dtype(np.float32)


def from_arrays(
    x_train: Any,
    x_test: Any = None,
    y_train: Any = None,
    y_test: Any = None,
    *,
    name: str = "arrays",
    layout: str = "auto",
    test_fraction: float = 0.1,
    seed: int = 0,
) -> Dataset:
    """A `Dataset` from numpy arrays or tensors in any layout `as_examples` accepts (images
    or a table); without x_test, `test_fraction` of x_train is held out by a seeded split.
    Labels come for both splits or for neither."""
    x = as_examples(_numpy(x_train, "x_train"), "x_train", layout)
    y = None if y_train is None else as_labels(_numpy(y_train, "y_train"), len(x), "y_train")
    info: dict[str, object] = {"source": "arrays"}
    if x_test is None:
        if y_test is not None:
            raise DataError("y_test was given without x_test; pass both or neither")
        x, xt, y, yt, split_info = split(x, y, test_fraction, seed)
        info.update(split_info)
    else:
        if (y_train is None) != (y_test is None):
            raise DataError("labels must come for both x_train and x_test or for neither")
        xt = as_examples(_numpy(x_test, "x_test"), "x_test", layout)
        yt = None if y_test is None else as_labels(_numpy(y_test, "y_test"), len(xt), "y_test")
        if xt.shape[1:] != x.shape[1:]:
            raise DataError(
                f"x_test examples are {xt.shape[1:]}, x_train examples {x.shape[1:]}; "
                "they must match"
            )
    classes = 0 if y is None or yt is None else int(max(y.max(), yt.max())) + 1

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    labelled = y is not None and yt is not None
    y_t = t(y) if labelled else None  # type: ignore[arg-type]
    yt_t = t(yt) if labelled else None  # type: ignore[arg-type]
    return Dataset(name, t(x), t(xt), y_t, yt_t, [str(i) for i in range(classes)], info)


def _numpy(a: Any, name: str) -> np.ndarray:
    if torch.is_tensor(a):
        return a.detach().cpu().numpy()
    if isinstance(a, np.ndarray):
        return a
    raise DataError(f"{name} must be a numpy array or a tensor; got {type(a).__name__}")
