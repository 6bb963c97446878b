"""Data: named datasets, .npz/.npy files, tables (.csv, .parquet), folders of images,
arrays and noise, as (N, C, H, W) tensors (uint8 images, float data kept float; a table's
F features as C channels of 1x1)."""

from .arrays import from_arrays
from .dataset import Dataset, batch_indices, epoch_permutation, to_float
from .sources import DATASET_NAMES, NAMED, fetch, load_data

__all__ = [
    "DATASET_NAMES",
    "NAMED",
    "Dataset",
    "batch_indices",
    "epoch_permutation",
    "fetch",
    "from_arrays",
    "load_data",
    "to_float",
]
