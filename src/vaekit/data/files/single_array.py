"""Single-array files as a `Dataset`: .npy (one array, memory-mapped), .csv and .parquet
tables (numeric columns; pandas and pyarrow come with the `tables` extra).

A file holds the training examples; `data.test_fraction` of them are held out as the test
set by the seeded split every source without a test split uses. Each is read as a file
that may be hostile: only a regular file, an .npy header bounded against the file's size
and never unpickled, a table's size bounded before it is parsed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ...config import DataConfig
from ...errors import DataError, first_line, require
from ..core.arrays import as_examples
from ..core.dataset import Dataset, split
from ..core.untrusted import memory_limit, open_regular, over_limit, read_npy_header

SUFFIXES = (".npy", ".csv", ".parquet")
TABLE_PARSE_FACTOR = 8  # memory a parsed CSV may take per byte of file (floats from text)


def read_npy(path: Path) -> np.ndarray:
    """The array in an .npy file: its header checked against the file's size, then the
    data memory-mapped (read only, never unpickled), so a large file costs no memory until
    rows are read."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        header = read_npy_header(f, size, str(path))
    if header.dtype.hasobject:
        raise DataError(f"{path} holds Python objects, not numbers; save a numeric array")
    needed, limit = header.nbytes * (2 if header.dtype.kind == "f" else 1), memory_limit()
    if needed > limit:  # the split copies the rows (and floats may change storage type)
        raise over_limit(str(path), needed, limit)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"{path} is truncated or not a valid .npy file ({e})") from None


def read_table(path: Path) -> np.ndarray:
    """The numeric columns of a .csv (first row: column names) or .parquet file as a float
    array (N, F); a column that is not numeric is refused by name, not dropped."""
    return read_table_columns(path)[0]


def read_table_columns(path: Path) -> tuple[np.ndarray, list[str]]:
    """`read_table`'s array and the table's column names (a trained model keeps them, so
    that what it writes back has the same columns)."""
    what = f"reading {path.suffix} files"
    pd = require("tables", "pandas", what, error=DataError)
    if path.suffix.lower() == ".parquet":
        require("tables", "pyarrow", what, error=DataError)
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
    limit = memory_limit()
    if size * TABLE_PARSE_FACTOR > limit:
        raise over_limit(str(path), size * TABLE_PARSE_FACTOR, limit)
    try:
        frame = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    except Exception as e:  # pandas and pyarrow raise many types for a malformed file
        raise DataError(f"{path} cannot be read as a table ({first_line(e)[:200]})") from None
    if frame.shape[0] == 0:
        raise DataError(f"{path} holds no rows")
    other = [str(c) for c, kind in frame.dtypes.items() if kind.kind not in "biuf"]
    if other:
        names = ", ".join(other[:5]) + (", ..." if len(other) > 5 else "")
        raise DataError(
            f"{path}: columns {names} are not numeric; vaekit trains on numbers only "
            "(drop or encode them first)"
        )
    if frame.shape[1] == 0:
        raise DataError(f"{path} has no columns")
    return frame.to_numpy(dtype=np.float64), [str(c) for c in frame.columns]


def load_file(path: Path, cfg: DataConfig) -> Dataset:
    """An .npy, .csv or .parquet file of examples, split into train and test."""
    columns: list[str] = []
    try:
        if path.suffix.lower() == ".npy":
            array, layout = read_npy(path), cfg.layout
        else:
            (array, columns), layout = read_table_columns(path), "table"
    except FileNotFoundError:
        raise DataError(f"data file {path} does not exist") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    x = as_examples(np.asarray(array), str(path), layout)
    train, test, _, _, info = split(x, None, cfg.test_fraction, cfg.split_seed)
    info.update(source=path.suffix.lower().lstrip("."), path=str(path))
    if columns:
        info["columns"] = columns
    return Dataset(
        path.stem,
        torch.from_numpy(np.ascontiguousarray(train)),
        torch.from_numpy(np.ascontiguousarray(test)),
        info=info,
    )
