"""Per-example results (latent codes, scores) written a chunk at a time, so that memory is
bounded by the chunk, not the data: .npy, .npz, .parquet or .csv, or arrays in memory.

Each example has *names* (id, split, label, class, file: small, given whole) and *fields*
(arrays with a fixed per-example shape, filled chunk by chunk in order). The formats:

- .npy: one field (`npy`), written into a preallocated memory-mapped file
  (`np.lib.format.open_memmap`), or, with `npy=None`, one structured array of the names
  and the scalar fields (`np.load(path)["nelbo"]`).
- .npz: every name and field as its own array; fields go through memory-mapped .npy
  files beside the output, then into the (uncompressed) zip, copied in bounded pieces.
- .parquet / .csv: one row per example, one column per name and per value of a field
  (`columns` names them; a field of shape (C, h, w) flattens in C order), a row group /
  block of lines per chunk (pyarrow / pandas: the `tables` extra).

Everything is written under a temporary name beside the output and renamed into place at
the end: a failed run leaves no half-written file.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, require
from .fileio import FILE_MODE, TMP_PREFIX

FORMATS = (".npy", ".npz", ".parquet", ".csv")
Field = tuple[tuple[int, ...], Any]  # the per-example shape and the numpy dtype


def check_format(path: str | os.PathLike[str], what: str = "--out") -> str:
    """The suffix of `path` when vaekit writes it, else a one-line ConfigError."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(
            f"{what} {path}: write {', '.join(FORMATS[:-1])} or {FORMATS[-1]} "
            f"(got {suffix or 'no suffix'})"
        )
    return suffix


class Records:
    """`n` examples' `fields`, filled in order by `write(start, chunk)`, then `finish()`ed:
    written to `path`, or (path None) returned as arrays."""

    def __init__(
        self,
        path: Path | None,
        n: int,
        names: dict[str, np.ndarray],
        fields: dict[str, Field],
        *,
        npy: str | None = None,
        columns: dict[str, list[str]] | None = None,
    ) -> None:
        self.path, self.n, self.names, self.fields = path, n, names, fields
        self.suffix = None if path is None else check_format(path)
        self.npy, self.columns = npy, columns or {}
        self.arrays: dict[str, np.ndarray] = {}
        self.temps: list[Path] = []
        self._table: Any = None  # the open ParquetWriter or CSV file
        self._written = 0
        if self.suffix in (".parquet", ".csv"):
            self._need_tables()
        if path is not None:  # as every --out: the folders check_file allowed are made
            path.parent.mkdir(parents=True, exist_ok=True)
        if self.suffix == ".npz" or (self.suffix == ".npy" and npy is not None):
            wanted = [npy] if self.suffix == ".npy" else list(fields)
            for name in wanted:
                shape, dtype = fields[str(name)]
                self.arrays[str(name)] = np.lib.format.open_memmap(
                    self._temp(".npy"), mode="w+", dtype=dtype, shape=(n, *shape)
                )
        elif self.suffix in (None, ".npy"):  # in memory (.npy: a structured array at the end)
            self.arrays = {k: np.empty((n, *s), dtype=d) for k, (s, d) in fields.items()}

    def _temp(self, suffix: str) -> Path:
        assert self.path is not None
        fd, name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{self.path.name}.", suffix=suffix,
                                    dir=self.path.parent)  # fmt: skip
        os.close(fd)
        self.temps.append(Path(name))
        return Path(name)

    def _need_tables(self) -> None:
        what, instead = f"writing {self.suffix} files", "; or write .npy or .npz"
        require("tables", "pandas", what, also=instead)
        if self.suffix == ".parquet":
            require("tables", "pyarrow", what, also=instead)

    def write(self, start: int, chunk: dict[str, np.ndarray]) -> None:
        """Examples start..start+B-1 of each field (chunks come in order)."""
        stop = start + len(next(iter(chunk.values())))
        if start != self._written:
            raise RuntimeError(f"chunk at {start} written after {self._written} examples")
        self._written = stop
        if self.suffix in (".parquet", ".csv"):
            self._write_rows(start, stop, chunk)
            return
        for name, values in chunk.items():
            if name in self.arrays:
                self.arrays[name][start:stop] = values

    def _write_rows(self, start: int, stop: int, chunk: dict[str, np.ndarray]) -> None:
        import pandas as pd

        frame = pd.DataFrame({k: v[start:stop] for k, v in self.names.items()})
        for name, values in chunk.items():
            flat = values.reshape(len(values), -1)
            names = self.columns.get(name) or (
                [name] if flat.shape[1] == 1 else [f"{name}{i}" for i in range(flat.shape[1])]
            )
            frame = pd.concat([frame, pd.DataFrame(flat, columns=names)], axis=1)
        if self.suffix == ".csv":
            if self._table is None:
                self._table = open(self._temp(".csv"), "w", encoding="utf-8", newline="")
            frame.to_csv(self._table, header=start == 0, index=False)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._table is None:
            self._table = pq.ParquetWriter(self._temp(".parquet"), table.schema)
        self._table.write_table(table)

    def finish(self) -> dict[str, np.ndarray] | Path:
        """Write the file (renamed into place) and return its path; or, in memory, the
        names and fields as one dict of arrays."""
        if self._written != self.n:
            raise RuntimeError(f"{self._written} of {self.n} examples were written")
        if self.path is None:
            return {**self.names, **self.arrays}
        if self.suffix == ".npy" and self.npy is not None:
            self._flush()
            os.replace(self.temps[0], self.path)
        elif self.suffix == ".npy":
            self._save(np.save, _structured({**self.names, **self.arrays}))
        elif self.suffix == ".npz":
            self._flush()
            self._save(self._zip, None)
        else:
            if self._table is None:  # no rows: only the header
                self._write_rows(
                    0, 0, {k: np.empty((0, *s), d) for k, (s, d) in self.fields.items()}
                )
            self._table.close()
            os.replace(self.temps[-1], self.path)
        os.chmod(self.path, FILE_MODE)
        self.temps = []
        return self.path

    def _flush(self) -> None:
        for array in self.arrays.values():
            if isinstance(array, np.memmap):
                array.flush()

    def _save(self, save: Any, value: Any) -> None:
        temp = self._temp(self.suffix or "")
        with open(temp, "wb") as f:
            save(f, value) if value is not None else save(f)
        os.replace(temp, self.path)  # type: ignore[arg-type]

    def _zip(self, f: Any) -> None:
        """The .npz (np.load reads it), its fields copied from their memory-mapped files."""
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, array in {**self.names, **self.arrays}.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                    if isinstance(array, np.memmap):  # the .npy file as written, in pieces
                        with open(array.filename, "rb") as src:  # type: ignore[arg-type]
                            shutil.copyfileobj(src, member, 16 * 2**20)
                    else:
                        np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)

    def close(self) -> None:
        """Remove what a failed write left (a finished one leaves nothing to remove)."""
        if self._table is not None:
            with contextlib.suppress(Exception):
                self._table.close()
        self.arrays = {}
        for temp in self.temps:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        self.temps = []

    def __enter__(self) -> Records:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _structured(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """One structured array (N,) of 1-D arrays of equal length (fields of one example each)."""
    wide = [k for k, v in arrays.items() if v.ndim != 1]
    if wide:
        raise DataError(f"a structured .npy holds one value per example; {wide[0]} has more")
    n = len(next(iter(arrays.values())))
    out = np.empty(n, dtype=[(k, v.dtype) for k, v in arrays.items()])
    for k, v in arrays.items():
        out[k] = v
    return out


def latent_columns(prefix: str, shape: tuple[int, ...]) -> list[str]:
    """Column names of a latent field per example: `prefix`0 .. `prefix`D-1 over its
    values in C order (a spatial latent (C, h, w) flattened)."""
    return [f"{prefix}{i}" for i in range(math.prod(shape))]
