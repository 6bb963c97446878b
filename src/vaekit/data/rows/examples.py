"""One example of someone else's dataset -> an image array and maybe a label.

A torch or Hugging Face dataset yields examples of many forms: a tensor or array, a tuple
(x, y) or (x,), or a dict of columns where the image is one column (`data.column`, or
the one array- or image-valued column) and the label another (`data.label_column`, or a
whole-number column named label/labels). PIL images become uint8 arrays. The layout and
the kind of values are read from the first example and every later one must follow them:
rows (N, C, H, W) are uint8 for uint8 (or bool, or whole-number) images, float32 for float
images, kept as they are (`row_dtype`, `as_rows`). Anything vaekit cannot
use ends in one line naming the example, what it holds and what is accepted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...arguments import is_whole
from ...errors import DataError
from ..core.arrays import as_examples
from ..core.untrusted import MAX_CLASSES

ACCEPTED = (
    "an image as a tensor, array or PIL image shaped (H, W), (C, H, W) or (H, W, C) with "
    "any number of channels, uint8 or float"
)
LABEL_NAMES = ("label", "labels")
NO_LABELS = "none"  # data.label_column: ignore any label


def describe(value: Any) -> str:
    """What a value is, for a message: its type, and its shape and dtype when it has them."""
    if isinstance(value, torch.Tensor | np.ndarray):
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    if _is_pil(value):
        return f"a PIL image ({value.mode}, {value.size[0]}x{value.size[1]})"
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def _is_pil(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.") and hasattr(value, "mode")


def is_array_like(value: Any) -> bool:
    """Could hold an image: a tensor or array of 1+ dimensions, a PIL image, a list."""
    if isinstance(value, torch.Tensor | np.ndarray):
        return value.ndim >= 1
    return _is_pil(value) or isinstance(value, list | tuple)


def to_array(value: Any, where: str) -> np.ndarray:
    """An image value as a numeric array (PIL: uint8, L or RGB)."""
    if _is_pil(value):
        image = value if value.mode in ("L", "RGB") else value.convert("RGB")
        return np.asarray(image)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.is_floating_point() and value.dtype not in (torch.float32, torch.float64):
            value = value.float()  # bfloat16 has no numpy dtype; float16 is exact as float32
        return value.numpy()
    if isinstance(value, np.ndarray | list | tuple):
        try:
            array = np.asarray(value)
        except ValueError:  # nested lists of different lengths
            raise DataError(f"{where} is a ragged list; {ACCEPTED}") from None
        if array.dtype.kind in "biuf":
            return array
    raise DataError(f"{where} is {describe(value)}; {ACCEPTED}")


def is_whole_number(value: Any) -> bool:
    """An int, a numpy integer or a 0-d integer tensor/array: what a class label is."""
    if isinstance(value, torch.Tensor | np.ndarray) and value.ndim == 0:
        value = value.item()
    return is_whole(value, numpy=True)


def as_label(value: Any, where: str) -> int:
    if isinstance(value, torch.Tensor | np.ndarray) and value.ndim == 0:
        value = value.item()
    if not is_whole_number(value):
        raise DataError(f"{where} is {describe(value)}; labels must be whole numbers 0..K-1")
    if not 0 <= value < MAX_CLASSES:
        raise DataError(
            f"{where} is label {value}; labels are class indices 0..K-1 with K at most "
            f"{MAX_CLASSES}"
        )
    return int(value)


@dataclass(frozen=True)
class Layout:
    """Where the image and the label sit in an example: kind 'array', 'tuple' or 'dict';
    `image` and `label` are a position (tuple) or a key (dict); label None: no labels."""

    kind: str
    image: Any = None
    label: Any = None

    def image_of(self, example: Any, where: str) -> Any:
        if self.kind == "array":
            return example
        try:
            return example[self.image]
        except (KeyError, IndexError, TypeError):
            raise DataError(
                f"{where} has no {self.image!r} like the first example; every example must "
                "have the same form"
            ) from None

    def label_of(self, example: Any, where: str) -> int | None:
        if self.label is None:
            return None
        try:
            value = example[self.label]
        except (KeyError, IndexError, TypeError):
            raise DataError(f"{where} has no label {self.label!r} like the first example") from None
        return as_label(value, f"{where}[{self.label!r}]")


def layout_of(example: Any, column: str, label_column: str, source: str) -> Layout:
    """The layout of `example` (the first one), with the columns asked for or found."""
    where = f"{source}[0]"
    if isinstance(example, Mapping):
        return _dict_layout(example, column, label_column, where)
    named = [f"data.{k} {v!r}" for k, v in (("column", column), ("label_column", label_column))
             if v and v != NO_LABELS]  # fmt: skip
    if named:
        raise DataError(
            f"{' and '.join(named)} names a column, but {where} is {describe(example)}, not "
            "a dict of columns; leave it empty"
        )
    if _is_tuple_form(example):
        if len(example) == 1 or label_column == NO_LABELS:
            return Layout("tuple", 0)
        if not is_whole_number(example[1]):  # (image, target image): not labelled
            return Layout("tuple", 0)
        as_label(example[1], f"{where}[1]")
        return Layout("tuple", 0, 1)
    if is_array_like(example) and not isinstance(example, tuple):  # a list: an array
        return Layout("array")
    raise DataError(
        f"{where} is {describe(example)}; vaekit takes examples that are an image, a tuple "
        "(image, label) or a dict with an image column (data.column)"
    )


@dataclass(frozen=True)
class First:
    """What a source's first example decides: the layout of every example, its image
    array's shape, and the rows' kind of values (`row_dtype`) and shape (C, H, W)."""

    layout: Layout
    shape: tuple[int, ...]
    dtype: np.dtype
    row_shape: tuple[int, int, int]


def first_example(
    example: Any,
    column: str,
    label_column: str,
    source: str,
) -> First:
    """The layout, shape and kind that `source`'s first example decides."""
    layout = layout_of(example, column, label_column, source)
    where = f"{source}[0]"
    array = to_array(layout.image_of(example, where), where)
    dtype = row_dtype(array)
    c, h, w = stack_images([array], array.shape, dtype, source, [0]).shape[1:]
    return First(layout, array.shape, dtype, (int(c), int(h), int(w)))


def _is_tuple_form(example: Any) -> bool:
    """(image, label, ...): a tuple whose first item may be an image, or a list whose first
    item is a tensor, array or PIL image (a list of lists is an array)."""
    if not isinstance(example, tuple | list) or not example:
        return False
    first = example[0]
    if isinstance(example, tuple):
        return is_array_like(first)
    return isinstance(first, torch.Tensor | np.ndarray) or _is_pil(first)


def _dict_layout(example: Mapping[str, Any], column: str, label_column: str, where: str) -> Layout:
    keys = list(example)
    if column:
        if column not in example:
            raise DataError(f"{where} has no column {column!r} (columns: {_names(keys)})")
        image = column
    else:
        found = [k for k in keys if is_array_like(example[k])]
        if len(found) != 1:
            what = f"columns {_names(found)} could each" if found else "no column can"
            raise DataError(
                f"{where}: {what} hold the images (columns: {_names(keys)}); name the image "
                "column with data.column (column= in Python)"
            )
        image = found[0]
    if label_column == NO_LABELS:
        return Layout("dict", image)
    if label_column:
        if label_column not in example:
            raise DataError(
                f"{where} has no label column {label_column!r} (columns: {_names(keys)})"
            )
        as_label(example[label_column], f"{where}[{label_column!r}]")
        return Layout("dict", image, label_column)
    for name in LABEL_NAMES:  # a 'label' that is a caption, say, is not a class index
        if name in example and name != image and is_whole_number(example[name]):
            as_label(example[name], f"{where}[{name!r}]")
            return Layout("dict", image, name)
    return Layout("dict", image)


def _names(keys: Sequence[Any]) -> str:
    shown = ", ".join(repr(k) for k in keys[:8])
    return (shown + (", ..." if len(keys) > 8 else "")) or "none"


def stack_images(
    arrays: list[np.ndarray],
    first: tuple[int, ...],
    dtype: np.dtype,
    source: str,
    at: Sequence[int],
) -> np.ndarray:
    """Arrays of the first example's shape, as rows (N, C, H, W) of the source's `dtype`
    (`row_dtype` of the first example): uint8 rows take uint8, bool and integer
    images, float32 rows float images; an example of the other kind is refused."""
    for array, index in zip(arrays, at, strict=True):
        if array.shape != first:
            raise DataError(
                f"{source}[{index}] is an image of shape {array.shape} and dtype {array.dtype}, "
                f"but the first example's is {first}; every image must have the same shape "
                "(resize them to one size)"
            )
        if row_dtype(array) != dtype:
            raise DataError(
                f"{source}[{index}] is an image of dtype {array.dtype}, but the first "
                f"example's is {_kind(dtype)}; every image must hold one kind of values "
                "(convert them all to float, or all to uint8)"
            )
    return as_rows(np.stack(arrays), dtype, source, at)


def _kind(dtype: np.dtype) -> str:
    return "float (stored as float32)" if dtype.kind == "f" else "uint8 (or whole numbers)"


def row_dtype(example: np.ndarray) -> np.dtype:
    """The dtype of a row source's rows (a torch or Hugging Face dataset), decided once from
    its first example: float32 for floats (never float16: every later row must fit it too),
    else uint8 (uint8, bool and integers in 0..255, as in `as_examples`)."""
    return np.dtype(np.float32) if example.dtype.kind == "f" else np.dtype(np.uint8)


def as_rows(batch: np.ndarray, dtype: np.dtype, source: str, at: Sequence[int]) -> np.ndarray:
    """Examples stacked (B, ...) as rows (B, C, H, W) of `dtype` (`row_dtype`), checked by
    `as_examples`; `at` names each example (its index in the source) in a message. Float
    rows are float32 as they come (never rounded), and an example that is not finite in
    float32 is refused by its index."""
    layout = "nchw" if batch.ndim == 4 and batch.shape[1] <= 4 else "auto"
    what = f"{source} (examples of shape {batch.shape[1:]})"
    if dtype == np.uint8:
        return as_examples(batch, what, layout)
    with np.errstate(over="ignore"):  # float64 beyond float32's range: inf, refused below
        batch = batch.astype(np.float32, copy=False)
    finite = np.isfinite(batch.reshape(len(batch), -1)).all(axis=1)
    if not finite.all():
        index = at[int(np.argmin(finite))]
        raise DataError(
            f"{source}[{index}] holds NaN or infinite values (or values beyond float32's "
            "range); every value must be a finite number"
        )
    return as_examples(batch, what, layout, floats=np.dtype(np.float32))
