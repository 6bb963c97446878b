"""The in-memory dataset every source produces, and the batching the training loop uses."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from ... import limits
from ...errors import DataError
from .streaming import head
from .untrusted import MAX_CLASSES


@dataclass
class Dataset:
    """Images as uint8 tensors (N, C, H, W); labels as int64 tensors (N,) or None.

    Storage may be a memory-mapped file, or rows read from their source batch by batch
    (`streaming.LazyRows`, which behaves like such a tensor); batches are gathered by
    index and become float on the training device (see `to_float`). Training reads the
    training and validation splits only (x_val: carved from the training rows by
    `validation.carve_validation` unless the source has its own); the test split is for
    evaluation.
    """

    name: str
    x_train: torch.Tensor  # (N, C, H, W) uint8
    x_test: torch.Tensor  # (M, C, H, W) uint8
    y_train: torch.Tensor | None = None  # (N,) int64
    y_test: torch.Tensor | None = None  # (M,) int64
    class_names: list[str] = field(default_factory=list)
    info: dict[str, object] = field(default_factory=dict)  # split, skipped files, cache path...
    x_val: torch.Tensor | None = None  # (V, C, H, W) uint8; None: no validation set
    y_val: torch.Tensor | None = None  # (V,) int64
    # data.augment crop: the training images as decoded, with a margin on every side;
    # x_train is their centre (a view), and training batches crop them at random
    x_train_full: torch.Tensor | None = None  # (N, C, H + 2m, W + 2m) uint8

    @property
    def shape(self) -> tuple[int, int, int]:
        if len(self.x_train.shape) != 4:
            raise DataError(
                f"{self.name}: x_train has shape {tuple(self.x_train.shape)}; a Dataset holds "
                "(N, C, H, W) examples (build one from any array or table with "
                "vaekit.data.from_arrays)"
            )
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def fingerprint(self, rows: int = 4096) -> str:
        """A hash of the training data as a resume sees it: the shapes and dtypes, the
        labels, and up to `rows` evenly spaced training images (all of a small set; a
        strided sample of a large memory-mapped one, read in well under a second), and the
        validation set's shape. Never the test set: training does not read it."""
        digest = hashlib.sha256()
        n = self.x_train.shape[0]
        digest.update(repr((tuple(self.x_train.shape), str(self.x_train.dtype))).encode())
        digest.update(repr(self.class_names).encode())
        if self.x_val is not None:  # data without one hash as before validation sets existed
            digest.update(repr(("val", tuple(self.x_val.shape))).encode())
        idx = evenly_spaced(n, rows)
        digest.update(self.x_train.index_select(0, idx).contiguous().numpy().tobytes())
        if self.y_train is not None:
            digest.update(self.y_train.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def limit(self, train: int = 0, test: int = 0) -> Dataset:
        """The first `train` / `test` examples (0 keeps all); streamed rows stay streamed."""

        def cut(t: torch.Tensor, n: int) -> torch.Tensor:
            return head(t, n)

        return Dataset(
            self.name,
            cut(self.x_train, train),
            cut(self.x_test, test),
            None if self.y_train is None else cut(self.y_train, train),
            None if self.y_test is None else cut(self.y_test, test),
            list(self.class_names),
            dict(self.info),
            self.x_val,
            self.y_val,
            None if self.x_train_full is None else cut(self.x_train_full, train),
        )


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [0, 1]; float input passes through."""
    if x.dtype == torch.uint8:
        return x.div(255.0)  # one pass: uint8 / float promotes to float32 (= x.float() / 255)
    return x.float()


CHUNK_ROWS = 1024  # rows summed at a time by mean_image


def evenly_spaced(n: int, most: int) -> torch.Tensor:
    """Up to `most` distinct indices spread evenly over range(n), the first and the last
    included, in order: the rows that stand in for a large (memory-mapped) set, the same
    in every process of a distributed run."""
    last = max(n - 1, 0)
    # float64: float32 steps round past n - 1 beyond ~16.7M rows
    idx = torch.linspace(0, last, min(n, most), dtype=torch.float64)
    return idx.round().long().clamp_(max=last).unique()


def mean_image(x: torch.Tensor, max_images: int = 10_000) -> torch.Tensor:
    """The average image (C, H, W) in [0, 1], float64, over at most `max_images` of x.

    Evenly spaced rows stand in for a large (memory-mapped) set: every process of a
    distributed run reads the same ones and gets the same numbers.
    """
    n = x.shape[0]
    if n == 0:
        raise DataError("no training images to average")
    idx = evenly_spaced(n, max_images)
    total = torch.zeros(x.shape[1:], dtype=torch.float64)
    for chunk in idx.split(CHUNK_ROWS):  # bounded memory for large images
        total += x.index_select(0, chunk.to(x.device)).sum(0, dtype=torch.float64).cpu()
    mean = total / len(idx)
    return mean / 255.0 if x.dtype == torch.uint8 else mean


def resident(x: torch.Tensor, device: torch.device, max_fraction: float = 0.5) -> torch.Tensor:
    """x on `device` once, when it fits; else x where it is (batches then travel one by one).

    On CUDA the copy must leave room for training: at most `max_fraction` of the free
    memory. Memory-mapped folder caches larger than that stay on the host.
    """
    if x.device == device or device.type != "cuda":
        return x.to(device)
    free, _ = torch.cuda.mem_get_info(device)
    if x.numel() * x.element_size() <= max_fraction * free:
        return x.to(device)
    return x


def gather(x: torch.Tensor, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Images x[idx] as float32 in [0, 1] on `device`, (B, C, H, W).

    `index_select` copies whole rows (~15x faster than advanced indexing on CPU). Host
    data bound for a GPU goes through page-locked memory so the copy runs asynchronously.
    """
    if x.device == device:
        return to_float(x.index_select(0, idx))
    rows = x.index_select(0, idx.to(x.device))
    if device.type == "cuda" and rows.device.type == "cpu":  # only host memory can be pinned
        rows = rows.pin_memory()
    return to_float(rows.to(device, non_blocking=True))


def as_labels(array: np.ndarray, n: int, source: str) -> np.ndarray:
    """Validate n class labels and bring them to int64: integers in 0..MAX_CLASSES-1.

    The range is checked on the array as stored, so uint64 labels past int64 are named
    rather than wrapped to negative numbers.
    """
    if array.dtype == object or array.dtype.kind not in "iu":
        raise DataError(f"{source}: labels must be integers; got dtype {array.dtype}")
    array = array.reshape(-1)
    if array.shape[0] != n:
        raise DataError(f"{source}: {array.shape[0]} labels for {n} images")
    if n:
        lo, hi = int(array.min()), int(array.max())  # Python ints: exact for any dtype
        if lo < 0:
            raise DataError(f"{source}: labels must be >= 0; found {lo}")
        if hi >= MAX_CLASSES:
            raise DataError(
                f"{source}: largest label is {hi}, over the limit of {MAX_CLASSES} classes "
                "(labels are class indices 0..K-1); number the classes from 0"
            )
    return array.astype(np.int64)


class TooFewToSplit(DataError):
    """`n` examples cannot be split with a test fraction above 0: a side would be empty."""

    def __init__(self, message: str, n: int = 0) -> None:
        super().__init__(message)
        self.n = n


def split_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Sorted train and test row indices holding out `fraction` of n, by a seeded
    permutation; fraction 0 holds out none (every example is a training example)."""
    n_test = int(round(n * fraction))
    if (fraction > 0 and n_test < 1) or n - n_test < 1:
        raise TooFewToSplit(
            f"cannot split {n} examples with test_fraction={fraction}: both sides "
            "need at least one example",
            n,
        )
    perm = np.random.default_rng(seed).permutation(n)
    info = {
        "split": {
            "test_fraction": fraction,
            "seed": seed,
            "train": int(n - n_test),
            "test": int(n_test),
        }
    }
    return np.sort(perm[n_test:]), np.sort(perm[:n_test]), info


def split(
    x: np.ndarray, y: np.ndarray | None, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, dict]:
    """Hold out `fraction` of (x, y) as a test set (see `split_indices`)."""
    train_idx, test_idx, info = split_indices(x.shape[0], fraction, seed)
    return (
        x[train_idx],
        x[test_idx],
        None if y is None else y[train_idx],
        None if y is None else y[test_idx],
        info,
    )


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of epoch `epoch`: a pure function of (seed, epoch).

    Deriving it instead of drawing from a running generator lets a run resumed
    mid-epoch, and every DDP rank, compute exactly the same order.
    """
    limits.check_fits(n * 8, f"a permutation of {n:,} examples", "use fewer examples")
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7_919 + 12_345) % 2**63)
    return torch.randperm(n, generator=g)


def num_batches(n: int, batch_size: int, drop_last: bool = True) -> int:
    """How many batches an epoch of `n` examples has: whole batches only with `drop_last`
    (but one short batch where all `n` are fewer than `batch_size`), else the last short."""
    return n // batch_size if drop_last and n >= batch_size else -(-n // batch_size)


def batch_indices(
    perm: torch.Tensor, batch_size: int, drop_last: bool = True
) -> list[torch.Tensor]:
    count = num_batches(perm.numel(), batch_size, drop_last)
    return [perm[i * batch_size : (i + 1) * batch_size] for i in range(count)]
