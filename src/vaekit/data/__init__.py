"""Data: named datasets, .npz/.npy files, tables (.csv, .parquet), folders of images,
arrays, torch and Hugging Face datasets and noise, as (N, C, H, W) tensors (uint8 images,
float data kept float; a table's F features as C channels of 1x1), or rows streamed from
their source.

Three wings under the front door (sources.py: `load_data` reads `data.name` and hands it
to the wing that reads it; provenance.py records where the data came from): core/ (the
Dataset, batching in memory and streamed, the validation split, augmentation, the limits
on hostile input), files/ (.npz, .npy, .csv, .parquet, IDX, folders of images) and rows/
(torch and Hugging Face datasets). The wings import the core, never each other."""

from ..arguments import checked
from .core.arrays import from_arrays
from .core.dataset import Dataset, batch_indices, epoch_permutation, to_float
from .rows.read import as_dataset, from_torch
from .sources import DATASET_NAMES, NAMED, fetch, load_data

# the public functions check their arguments against their annotations on every call
from_arrays, as_dataset, from_torch = checked(from_arrays), checked(as_dataset), checked(from_torch)
batch_indices, to_float = checked(batch_indices), checked(to_float)
epoch_permutation, fetch, load_data = checked(epoch_permutation), checked(fetch), checked(load_data)

__all__ = [
    "DATASET_NAMES",
    "NAMED",
    "Dataset",
    "as_dataset",
    "batch_indices",
    "epoch_permutation",
    "fetch",
    "from_arrays",
    "from_torch",
    "load_data",
    "to_float",
]
