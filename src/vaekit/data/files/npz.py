"""An .npz file (x_train; optional x_test, y_train, y_test, x_val, y_val) as a `Dataset`,
read as a file that may be hostile: never unpickled, only a regular file, and every
array's header checked against its member's size and against the memory limit before any
array is decompressed or allocated (core/untrusted.py)."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...config import DataConfig
from ...errors import DataError
from ..core.arrays import as_examples
from ..core.dataset import Dataset, as_labels, split
from ..core.untrusted import (
    NpyHeader,
    human_bytes,
    memory_limit,
    open_regular,
    over_limit,
    read_npy_header,
)

ARRAYS = ("x_train", "x_test", "y_train", "y_test", "x_val", "y_val")  # the only members read
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_ENCRYPTED = 0x1  # general purpose flag bit 0 of a zip entry


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of ARRAYS that the .npz at `path` holds; a DataError naming the file for
    anything that is not a readable .npz within the memory limit."""
    try:
        with open_regular(path) as f:
            if f.read(len(_NPY_MAGIC)) == _NPY_MAGIC:
                raise DataError(
                    f"{path} is a single .npy array, not an .npz file; save it with "
                    "np.savez('data.npz', x_train=images) (optionally with y_train, x_test, "
                    "y_test)"
                )
            f.seek(0)
            with zipfile.ZipFile(f) as zf:
                return _read_members(path, zf)
    except FileNotFoundError:
        raise DataError(f"data file {path} does not exist") from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise DataError(f"{path} is truncated or not a valid .npz file ({e})") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None


def _read_members(path: Path, zf: zipfile.ZipFile) -> dict[str, np.ndarray]:
    infos = {n: zf.getinfo(n + ".npy") for n in ARRAYS if n + ".npy" in zf.NameToInfo}
    if "x_train" not in infos:
        names = zf.namelist()
        found = ", ".join(n.removesuffix(".npy") for n in names[:10]) or "nothing"
        more = ", ..." if len(names) > 10 else ""
        raise DataError(f"{path} has no array 'x_train' (found: {found}{more})")
    headers = {n: _header(path, zf, info, n) for n, info in infos.items()}
    needed = sum(_working_bytes(h) for h in headers.values())
    limit = memory_limit()
    if needed > limit:
        sizes = ", ".join(f"{n} {human_bytes(h.nbytes)}" for n, h in headers.items())
        raise over_limit(f"{path} ({sizes})", needed, limit)
    arrays = {}
    for name, info in infos.items():
        try:
            with zf.open(info) as member:
                arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
        except ValueError as e:
            raise DataError(f"{path}:{name} is truncated or corrupt ({e})") from None
        except MemoryError:
            raise DataError(
                f"not enough memory to load {path}:{name} "
                f"({human_bytes(headers[name].nbytes)}); free memory or use a smaller file"
            ) from None
    return arrays


def _header(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> NpyHeader:
    if info.flag_bits & _ZIP_ENCRYPTED:
        raise DataError(f"{path}:{name} is encrypted; save the arrays with np.savez")
    try:
        with zf.open(info) as member:
            return read_npy_header(member, info.file_size, f"{path}:{name}")
    except NotImplementedError as e:  # a compression method zipfile cannot read
        raise DataError(f"{path}:{name} cannot be read ({e}); save it with np.savez") from None


def _working_bytes(h: NpyHeader) -> int:
    """Memory an array takes while it is checked and stored: a float array may be copied
    to its storage type and tested for a float16 round trip, besides the array itself."""
    return h.nbytes * (3 if h.dtype.kind == "f" else 1)


def load_npz(path: Path, cfg: DataConfig) -> Dataset:
    """An .npz with x_train and optional x_test, y_train, y_test (labels for both or none)."""
    arrays = read_npz(path)
    x_train = as_examples(arrays["x_train"], f"{path}:x_train", cfg.layout)
    y_train = (
        as_labels(arrays["y_train"], len(x_train), f"{path}:y_train")
        if "y_train" in arrays
        else None
    )
    info: dict[str, object] = {"source": "npz", "path": str(path)}
    if "x_test" in arrays:
        if ("y_train" in arrays) != ("y_test" in arrays):
            have, lack = ("y_train", "y_test") if "y_train" in arrays else ("y_test", "y_train")
            raise DataError(
                f"{path} has {have} but no {lack}: labels must come for both x_train and "
                f"x_test or for neither; add {lack} or remove {have}"
            )
        x_test = as_examples(arrays["x_test"], f"{path}:x_test", cfg.layout)
        if x_test.shape[1:] != x_train.shape[1:]:
            raise DataError(
                f"{path}: x_test examples are {x_test.shape[1:]}, x_train examples "
                f"{x_train.shape[1:]}; they must match"
            )
        y_test = (
            as_labels(arrays["y_test"], len(x_test), f"{path}:y_test")
            if "y_test" in arrays
            else None
        )
    elif "y_test" in arrays:
        raise DataError(
            f"{path} has y_test but no x_test; add x_test, or remove y_test to hold out "
            "part of x_train (with its y_train) as the test set"
        )
    else:
        x_train, x_test, y_train, y_test, split_info = split(
            x_train, y_train, cfg.test_fraction, cfg.split_seed
        )
        info.update(split_info)
    num_classes = (  # bounded by as_labels
        0 if y_train is None or y_test is None else max(int(y_train.max()), int(y_test.max())) + 1
    )

    def to_t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    x_val, y_val = _validation(path, arrays, cfg.layout)
    return Dataset(
        path.stem,
        to_t(x_train),
        to_t(x_test),
        None if y_train is None else to_t(y_train),
        None if y_test is None else to_t(y_test),
        [str(i) for i in range(num_classes)],
        info,
        None if x_val is None else to_t(x_val),
        None if y_val is None else to_t(y_val),
    )


def _validation(path: Path, arrays: dict[str, np.ndarray], layout: str) -> tuple[Any, Any]:
    """The file's own validation set (x_val, optional y_val), read like x_test; its shape
    and labels are checked against the training set by validation.check_validation."""
    if "x_val" not in arrays:
        if "y_val" in arrays:
            raise DataError(
                f"{path} has y_val but no x_val; add x_val, or remove y_val to hold out part "
                "of x_train as the validation set (data.val_fraction)"
            )
        return None, None
    x_val = as_examples(arrays["x_val"], f"{path}:x_val", layout)
    y_val = arrays.get("y_val")
    return x_val, None if y_val is None else as_labels(y_val, len(x_val), f"{path}:y_val")
