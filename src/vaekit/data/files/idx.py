"""IDX files (the MNIST format): a magic number, dimensions, then raw big-endian values.

Written here because the readers that exist come with a framework vaekit cannot use
(torchvision does not import beside the CPU torch build) or read whole files into Python
lists; the format is 20 lines of struct and numpy, checked against its own writer and
against damaged files (tests/test_data.py, tests/test_guarantees.py)."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from ...errors import DataError
from ..core.untrusted import memory_limit, open_regular, over_limit

# The third byte of the magic number names the element type (LeCun's IDX description).
_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzipped or not, checking the header against the payload size.

    Only a regular file is opened, and no more is read (or decompressed) than the header
    claims, once that claim is within the memory limit: a gzip bomb stops at its header.
    """
    path = Path(path)
    try:
        with open_regular(path) as f:
            gzipped = f.read(2) == b"\x1f\x8b"
            f.seek(0)
            stream: IO[bytes] | gzip.GzipFile = gzip.GzipFile(fileobj=f) if gzipped else f
            return _read(stream, path)
    except FileNotFoundError:
        raise DataError(f"IDX file {path} does not exist") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"IDX file {path} is truncated or not valid gzip ({e}); "
            "delete it and fetch the dataset again"
        ) from None


def _read(stream: IO[bytes] | gzip.GzipFile, path: Path) -> np.ndarray:
    magic = stream.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _DTYPES or not magic[3]:
        raise DataError(
            f"{path} is not an IDX file (bad magic number); delete it and fetch the dataset again"
        )
    dtype, ndim = _DTYPES[magic[2]], magic[3]
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise DataError(
            f"IDX file {path} is truncated inside its header; delete it and fetch the dataset again"
        )
    shape = struct.unpack(f">{ndim}I", dims)
    expected = int(np.prod(shape, dtype=object)) * dtype.itemsize  # Python ints: no overflow
    limit = memory_limit()
    if expected > limit:
        raise over_limit(f"IDX file {path} (shape {shape})", expected, limit)
    payload = stream.read(expected)
    extra = len(stream.read(1))  # one byte past the claim is enough to know it lies
    if len(payload) != expected or extra:
        held = f"{len(payload)}" if not extra else f"more than {len(payload)}"
        raise DataError(
            f"IDX file {path} holds {held} data bytes but its header "
            f"says {expected} (shape {shape}); it is truncated or corrupt, "
            "delete it and fetch the dataset again"
        )
    array = np.frombuffer(payload, dtype=dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write an IDX file (gzipped when the name ends in .gz); used by tests and tools."""
    codes = {v.newbyteorder("="): k for k, v in _DTYPES.items()}
    array = np.asarray(array)
    code = codes[array.dtype.newbyteorder("=")]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(_DTYPES[code]).tobytes()
    data = gzip.compress(payload, compresslevel=1) if str(path).endswith(".gz") else payload
    Path(path).write_bytes(data)
