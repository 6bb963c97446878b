"""Hugging Face datasets as row sources (assemble.py): `--data hf:OWNER/NAME[:SPLIT]` (or
`hf:PATH` of a local copy) opened here, and `datasets.Dataset` objects given to the
Trainer; read.py reads both as it reads a torch dataset.

The `datasets` library does the work (the `[datasets]` extra, imported only here, only
when used): its cache, its offline mode (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE), its Arrow
files read by index without loading them. A dataset is read a batch at a time, one call
for a list of indices, in vaekit's seeded order (assemble.py decides whether the rows are
read into memory first). Image columns decode to uint8 arrays; array columns of floats
(`Array2D`/`Array3D`, lists of numbers) stay float (float32 rows); a ClassLabel column
gives the class names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ... import untrusted_files
from ...config import DataConfig
from ...errors import DataError, first_line, require
from .assemble import Source
from .examples import stack_images, to_array

PREFIX = "hf:"
SPLIT = re.compile(r"^(.+?)(?::([A-Za-z0-9_.\-\[\]%]+))?$")


class HFSource(Source):
    """A `datasets.Dataset`: rows fetched by a list of indices, in the numpy format."""

    kind = "hf"

    def __init__(self, ds: Any, name: str, cfg: DataConfig) -> None:
        self.name, self.n = name, int(ds.num_rows)
        if self.n == 0:
            raise DataError(f"{name} holds no examples")
        first = ds[0]
        layout = self.first(first, cfg)  # a PIL image neither L nor RGB is read as RGB
        self.image, self.label = layout.image, layout.label
        if _other_mode(ds, self.image, first[self.image]):  # and so is the whole column
            ds = ds.cast_column(self.image, _rgb_feature(ds.features[self.image]))
        feature = ds.features.get(self.label) if self.labelled else None
        self.class_names = list(getattr(feature, "names", None) or [])
        self.ds = ds.select_columns([self.image]).with_format("numpy")
        labels = ds.select_columns([self.label]).with_format("numpy") if self.labelled else None
        self.label_ds = labels

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        batch = self.ds[[int(i) for i in indices]][self.image]
        at = [int(i) for i in indices]
        if isinstance(batch, np.ndarray) and batch.dtype != object and batch.ndim >= 2:
            arrays = list(batch)
        else:  # ragged, or of mixed shapes: each checked and named
            where = [f"{self.name}[{i}][{self.image!r}]" for i in at]
            arrays = [to_array(v, w) for v, w in zip(batch, where, strict=True)]
        rows = stack_images(arrays, self.first_shape, self.dtype, self.name, at)
        labels = None
        if self.label_ds is not None:
            labels = np.asarray(self.label_ds[at][self.label])
        return rows, labels

    def labels(self) -> np.ndarray | None:
        """The label column, read whole (no image is decoded)."""
        if self.label_ds is None:
            return None
        labels = np.asarray(self.label_ds[self.label])
        if labels.dtype.kind not in "iu":
            raise DataError(
                f"{self.name}: label column {self.label!r} holds {labels.dtype} values; labels "
                "must be whole numbers 0..K-1 (data.label_column none drops them)"
            )
        return labels


def _other_mode(ds: Any, column: str, value: Any) -> bool:
    """An image column whose first image's mode is neither L nor RGB (RGBA, P, CMYK, I;16)."""
    mode = getattr(value, "mode", None)
    return mode not in (None, "L", "RGB") and hasattr(ds.features[column], "mode")


def _rgb_feature(feature: Any) -> Any:
    from datasets import Image

    return Image(mode="RGB", decode=getattr(feature, "decode", True))


def hf_splits(splits: Any, wanted: str, name: str) -> tuple[Any, Any]:
    """(train, test) of a DatasetDict: the split asked for (else 'train', or the only one)
    and 'test' when there is one besides it (else None: a fraction is held out)."""
    names = list(splits)
    train = wanted or ("train" if "train" in names or len(names) != 1 else names[0])
    if train not in names:
        raise DataError(
            f"{name} has no split {train!r} (splits: {', '.join(names) or 'none'}); "
            f"name one as {PREFIX}NAME:SPLIT"
        )
    test = splits["test"] if "test" in names and train != "test" else None
    return splits[train], test


def open_hf(spec: str, progress: bool = True) -> tuple[str, Any, Any]:
    """The name and the (train, test) datasets of `hf:OWNER/NAME[:SPLIT]` or
    `hf:PATH[:SPLIT]`, opened through the datasets library (test None: none is there)."""
    match = SPLIT.match(spec[len(PREFIX) :])
    if not match:
        raise DataError(f"--data {spec!r}: name a dataset as {PREFIX}OWNER/NAME[:SPLIT]")
    target, split = match.group(1), match.group(2) or ""
    if Path(spec[len(PREFIX) :]).expanduser().exists():  # a local path holding a colon
        target, split = spec[len(PREFIX) :], ""
    package = "the datasets library"
    datasets = require("datasets", "datasets", f"--data {spec}", package=package, error=DataError)
    if not progress:
        datasets.disable_progress_bars()
    splits = _open(datasets, target, spec)
    if type(splits).__name__ == "Dataset":  # save_to_disk of one split
        if split:
            raise DataError(
                f"--data {spec}: {target} holds one dataset, not named splits; drop ':{split}'"
            )
        train, test = splits, None
    else:
        train, test = hf_splits(splits, split, spec)
    return target.rstrip("/").rsplit("/", 1)[-1] or target, train, test


def _open(datasets: Any, target: str, spec: str) -> Any:
    """The dataset (dict) at `target`: a save_to_disk folder, a local folder of data files,
    or a Hub name (cached, or downloaded when online)."""
    path = Path(target).expanduser()
    if path.is_dir():
        _check_json_files(path, spec)
    try:
        if path.is_dir() and any((path / f).is_file() for f in ("state.json", "dataset_dict.json")):
            return datasets.load_from_disk(str(path))
        return datasets.load_dataset(str(path) if path.is_dir() else target)
    except ConnectionError as e:  # offline, or the Hub out of reach, and not cached
        raise DataError(
            f"--data {spec}: {target} is not in the datasets cache and the Hub cannot be "
            f"reached ({first_line(e)[:300]}); run once online (HF_HUB_OFFLINE unset) to cache it, "
            "or give a local copy as hf:PATH"
        ) from None
    except (FileNotFoundError, ValueError, OSError) as e:
        raise DataError(f"--data {spec}: cannot load {target} ({first_line(e)[:300]})") from None
    except Exception as e:  # DatasetNotFoundError, and the library failing on odd files
        if not _from_library(e):
            raise
        raise DataError(f"--data {spec}: cannot load {target} ({first_line(e)[:300]})") from None


def _check_json_files(folder: Path, spec: str) -> None:
    """The metadata the datasets library reads in a save_to_disk folder (and in each
    split's folder), bounded in size and depth before it parses them (its parser would end
    in a RecursionError on a file nested 100,000 levels deep)."""
    names = ("state.json", "dataset_info.json", "dataset_dict.json")
    found = [folder / n for n in names] + [p for n in names for p in folder.glob(f"*/{n}")]
    for path in found[:1000]:
        if not path.is_file():
            continue
        try:
            untrusted_files.load_json_file(path)
        except untrusted_files.TextLimitError as e:
            raise DataError(f"--data {spec}: {e}") from None
        except (OSError, ValueError):
            pass  # the library names what else is wrong with it


LIBRARIES = ("datasets", "huggingface_hub", "pyarrow", "fsspec")


def _from_library(error: BaseException) -> bool:
    """Raised by the datasets library or what it uses (an IndexError deep in its table code
    on an empty folder, say): the files it was given, not vaekit, are at fault."""
    if type(error).__module__.split(".")[0] in LIBRARIES:
        return True
    tb, last = error.__traceback__, ""
    while tb is not None:
        last, tb = tb.tb_frame.f_globals.get("__name__", ""), tb.tb_next
    return str(last).split(".")[0] in LIBRARIES
