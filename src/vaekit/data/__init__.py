"""Data: named datasets, .npz files, folders of images, torch and Hugging Face datasets
and noise, all as uint8 tensors (or rows streamed from their source)."""

from .dataset import Dataset, batch_indices, epoch_permutation, to_float
from .sources import DATASET_NAMES, NAMED, fetch, load_data
from .torch_source import as_dataset, from_torch

__all__ = [
    "DATASET_NAMES",
    "NAMED",
    "Dataset",
    "as_dataset",
    "batch_indices",
    "epoch_permutation",
    "fetch",
    "from_torch",
    "load_data",
    "to_float",
]
