"""An iterable dataset (torch's IterableDataset, a streaming Hugging Face dataset) read
into memory: it cannot be read by index, so neither vaekit's seeded order nor a resume
mid-epoch could replay it. It is read once, as rows of the first example's kind (uint8 or
float32, `examples.row_dtype`), and refused in one line once the rows pass the memory limit
(an iterable may never end)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...config import DataConfig
from ...errors import DataError
from ...limits import human_bytes
from ..core.streaming import CHUNK_ROWS
from ..core.untrusted import INDEX_BYTES, memory_limit
from .assemble import Source
from .examples import first_example, stack_images, to_array

# bytes each example takes beside its row while it is read and indexed: its label in a
# Python list, and the split's indices (untrusted.INDEX_BYTES)
ROW_OVERHEAD = 36 + INDEX_BYTES


class MemorySource(Source):
    """Rows already read into memory (from an IterableDataset)."""

    kind = "memory"

    def __init__(self, x: np.ndarray, y: np.ndarray | None, name: str) -> None:
        self.x, self.y, self.name, self.n, self.dtype = x, y, name, len(x), x.dtype
        c, h, w = x.shape[1:]
        self.row_shape = (int(c), int(h), int(w))
        self.labelled, self.class_names = y is not None, []

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return self.x[indices], None if self.y is None else self.y[indices]


def read_iterable(iterable: Any, name: str, cfg: DataConfig) -> MemorySource:
    """Every example of an iterable, as rows in memory: refused in one line once they pass
    the memory limit (an iterable may never end)."""
    limit, chunks, labels = memory_limit(), [], []
    pending: list[np.ndarray] = []
    layout, dtype, count, most = None, np.dtype(np.uint8), 0, 0
    first: tuple[int, ...] = ()
    for example in iterable:
        where = f"{name}[{count}]"
        if layout is None:
            probe = first_example(example, cfg.column, cfg.label_column, name)
            layout, first, dtype = probe.layout, probe.shape, probe.dtype
            # the rows the limit holds, each with its label and index: known from the first
            most = limit // (int(np.prod(first)) * dtype.itemsize + ROW_OVERHEAD)
        if count >= most:  # refused at once, not after the rows (and time) are spent
            raise DataError(
                f"{name} is an iterable dataset, read into memory since it cannot be read "
                f"by index, and holds more than the {most:,} examples that fit the limit of "
                f"{human_bytes(limit)}; give a map-style dataset (with __len__ and "
                "__getitem__), or fewer examples"
            )
        pending.append(to_array(layout.image_of(example, where), where))
        if layout.label is not None:
            labels.append(layout.label_of(example, where))
        count += 1
        if len(pending) == CHUNK_ROWS:
            at = range(count - CHUNK_ROWS, count)
            chunks.append(stack_images(pending, first, dtype, name, at))
            pending = []
    if pending:
        at = range(count - len(pending), count)
        chunks.append(stack_images(pending, first, dtype, name, at))
    if not chunks:
        raise DataError(f"{name} holds no examples")
    labelled = layout is not None and layout.label is not None
    y = np.array(labels, dtype=np.int64) if labelled else None
    return MemorySource(np.concatenate(chunks), y, name)
