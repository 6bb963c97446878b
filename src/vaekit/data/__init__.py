"""Data: named datasets, .npz files, folders of images and noise, all as uint8 tensors."""

from .dataset import Dataset, batch_indices, epoch_permutation, to_float
from .sources import DATASET_NAMES, NAMED, fetch, load_data

__all__ = [
    "DATASET_NAMES",
    "NAMED",
    "Dataset",
    "batch_indices",
    "epoch_permutation",
    "fetch",
    "load_data",
    "to_float",
]
