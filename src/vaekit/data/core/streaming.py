"""Rows read when a batch needs them: the stand-in for an images tensor that does not fit
in memory.

The training loop, the evaluation and the figures take `Dataset.x_train` / `x_test` as a
uint8 or float32 tensor (N, C, H, W) and touch it in a few ways only: `.shape`, `.dtype`,
`.device`, `index_select(0, idx)` for a batch, `x[a:b]` or `x[idx]` for some rows,
`.to(device)`. `LazyRows` answers each of them by fetching just the rows asked for from the
source (a Hugging Face dataset reads a list of indices in one call; a torch Dataset example
by example), in the dtype of the source's rows, so the trainer runs unchanged and its
seeded order (`epoch_permutation` over indices) is the same whether the rows are in memory
or not. We write this ourselves
because torch's DataLoader draws its own order, which a resume mid-epoch cannot replay.

A view keeps an index array into its source: the train/test split and `Dataset.limit`
select rows by index without reading any (`select`, `head`). Indexing (`x[...]`,
`index_select`) returns a real tensor; `.to(device)` returns the view itself, on the host,
and `gather` moves each batch to the device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ...errors import DataError

# fetch(indices into the source) -> rows (B, C, H, W) of the view's dtype, in the order asked for
Fetch = Callable[[np.ndarray], np.ndarray]
CHUNK_ROWS = 1024  # rows read at a time when a view is read whole
TORCH_DTYPES = {np.dtype(np.uint8): torch.uint8, np.dtype(np.float32): torch.float32}


class LazyRows:
    """Images (N, C, H, W) of a source, uint8 or float32 (`row_dtype`, numpy's), fetched
    by index when asked for."""

    device = torch.device("cpu")
    ndim = 4

    def __init__(
        self,
        fetch: Fetch,
        indices: np.ndarray,
        row_shape: tuple[int, int, int],
        name: str,
        row_dtype: np.dtype,
    ) -> None:
        self.fetch, self.name = fetch, name
        self.indices = np.asarray(indices, dtype=np.int64)
        self.row_shape = row_shape
        self.row_dtype = np.dtype(row_dtype)
        self.dtype = TORCH_DTYPES[self.row_dtype]

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.indices), *self.row_shape))

    def size(self, dim: int | None = None) -> Any:
        return self.shape if dim is None else self.shape[dim]

    def __len__(self) -> int:
        return len(self.indices)

    def numel(self) -> int:
        return int(np.prod(self.shape))

    def element_size(self) -> int:
        return self.row_dtype.itemsize

    def dim(self) -> int:
        return 4

    def __repr__(self) -> str:
        return f"LazyRows({self.name}, shape={tuple(self.shape)}, dtype={self.row_dtype})"

    # -- views: no rows are read ---------------------------------------------------------
    def select(self, positions: np.ndarray) -> LazyRows:
        """The rows at `positions` of this view, as a view."""
        return self._view(self.indices[positions])

    def head(self, n: int) -> LazyRows:
        return self._view(self.indices[:n])

    def _view(self, indices: np.ndarray) -> LazyRows:
        return LazyRows(self.fetch, indices, self.row_shape, self.name, self.row_dtype)

    def to(self, *args: Any, **kwargs: Any) -> LazyRows:
        """Itself: the rows stay with their source; `gather` moves each batch."""
        return self

    def contiguous(self) -> LazyRows:
        return self

    # -- reads: real tensors ---------------------------------------------------------------
    def index_select(self, dim: int, index: torch.Tensor) -> torch.Tensor:
        if dim != 0:
            raise NotImplementedError("LazyRows selects rows (dim 0) only")
        return self._read(self.indices[index.cpu().numpy()])

    def __getitem__(self, key: Any) -> torch.Tensor:
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        positions = np.arange(len(self.indices))[key]
        if np.ndim(positions) == 0:  # one row: (C, H, W), as a tensor gives it
            return self._read(self.indices[[int(positions)]])[0]
        return self._read(self.indices[positions])

    def materialize(self) -> torch.Tensor:
        """Every row of the view, in one tensor (read CHUNK_ROWS at a time)."""
        out = torch.empty(tuple(self.shape), dtype=self.dtype)
        for start in range(0, len(self.indices), CHUNK_ROWS):
            part = self.indices[start : start + CHUNK_ROWS]
            out[start : start + len(part)] = self._read(part)
        return out

    def _read(self, indices: np.ndarray) -> torch.Tensor:
        if len(indices) == 0:
            return torch.empty((0, *self.row_shape), dtype=self.dtype)
        rows = self.fetch(indices)
        if rows.shape != (len(indices), *self.row_shape) or rows.dtype != self.row_dtype:
            raise DataError(  # the fetchers check each example; this guards the contract
                f"{self.name}: rows {indices[:4].tolist()}... read as {rows.dtype} "
                f"{rows.shape}, not {self.row_dtype} {(len(indices), *self.row_shape)}"
            )
        return torch.from_numpy(np.ascontiguousarray(rows))


def is_lazy(x: object) -> bool:
    return isinstance(x, LazyRows)


def head(x: Any, n: int) -> Any:
    """The first n rows of x (0 keeps all): a view for a `LazyRows`, a slice of a tensor."""
    if n <= 0:
        return x
    return x.head(n) if isinstance(x, LazyRows) else x[:n]
