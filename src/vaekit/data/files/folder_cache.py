"""The decoded-folder cache: every image of a folder decoded once into a uint8 .npy (streamed,
so memory stays bounded), keyed by a hash of everything the array depends on, beside the
folder (or in a user cache directory), memory-mapped when large, pruned of stale entries;
and the train/test split of a memory-mapped array written once as two more .npy files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
from tqdm import tqdm

from ... import untrusted_files
from ...config import DataConfig
from ...errors import DataError
from ...io.fileio import atomic_open, write_json
from ...progress import bar as progress_bar
from ..core.dataset import split_indices
from ..core.untrusted import open_regular, read_npy_header
from . import images

CACHE_DIRNAME = ".vaekit-cache"
CACHE_VERSION = 1  # bump when decoding changes: it is part of every cache key
_HEADER_LEN = 128  # fixed .npy header size, so the row count can be rewritten in place
_KEY_FILE = re.compile(r"^[0-9a-f]{64}\.(npy|json)$")
MAX_NAMED_SKIPS = 10  # unreadable images named one by one on stderr; the rest are counted


def cache_key(
    files: list[tuple[str, int, int, int, int]],
    image_size: int,
    mode: str,
    max_pixels: int | None,
) -> str:
    """A hash of everything the decoded array depends on (each file by its path, size, mtime,
    inode and ctime); any change means a new cache entry."""
    spec = {
        "version": CACHE_VERSION,
        "image_size": image_size,
        "mode": mode,
        "max_pixels": max_pixels,
        "files": files,
    }
    return hashlib.sha256(json.dumps(spec, separators=(",", ":")).encode()).hexdigest()


def cache_dirs(root: Path, cfg: DataConfig, own: bool = True) -> list[Path]:
    """Where this folder's cache may live, in order of preference: beside the folder only
    when it is the user's `own` (the --data of train), else in vaekit's cache directory,
    keyed by the folder (a run from elsewhere names a folder vaekit must not write into)."""
    tag = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    if cfg.cache_dir:
        return [Path(cfg.cache_dir).expanduser() / tag]
    beside = [root / CACHE_DIRNAME] if own else []
    return [*beside, Path.home() / ".cache" / "vaekit" / "folders" / tag]


def read_cache(d: Path, key: str, ram_budget: int) -> tuple[np.ndarray, dict, Path] | None:
    """The cached array and its metadata, or None when absent or unusable (then it is rebuilt)."""
    npy, meta_path = d / f"{key}.npy", d / f"{key}.json"
    try:
        meta = untrusted_files.load_json_file(meta_path)
        x = _load_npy(npy, ram_budget)
    except (OSError, ValueError, EOFError, DataError):
        return None
    if not _meta_matches(meta, key, x):
        return None
    return x, meta, npy


def _load_npy(npy: Path, ram_budget: int) -> np.ndarray:
    """A uint8 .npy this module wrote, memory-mapped above `ram_budget` bytes. Its header is
    checked first against the file's exact size: a damaged or edited header would otherwise
    make np.load allocate whatever it claims."""
    with open_regular(npy) as f:
        size = os.fstat(f.fileno()).st_size
        header = read_npy_header(f, size, str(npy))
    if header.dtype != np.uint8 or header.offset + header.nbytes != size:
        raise DataError(f"{npy} does not hold the uint8 array its header describes")
    return np.load(npy, mmap_mode="c" if size > ram_budget else None, allow_pickle=False)


def _meta_matches(meta: object, key: str, x: np.ndarray) -> bool:
    """The JSON beside an array is the one _meta wrote for it (nothing else is trusted)."""
    return (
        isinstance(meta, dict)
        and meta.get("key") == key
        and list(x.shape) == meta.get("shape")
        and isinstance(meta.get("files"), list)
        and len(meta["files"]) == x.shape[0]
        and all(isinstance(f, str) for f in meta["files"])
        and isinstance(meta.get("skipped"), dict)
        and all(isinstance(v, str) for v in meta["skipped"].values())
    )


def build(
    root: Path,
    files: list[str],
    dirs: list[Path],
    key: str,
    cfg: DataConfig,
    mode: str,
    limit: int | None,
    progress: bool,
    ram_budget: int,
) -> tuple[np.ndarray, dict, Path | None]:
    """Decode every file into the first writable cache directory (else into memory)."""
    shape = (1 if mode == "L" else 3, cfg.image_size, cfg.image_size)
    for d in dirs:
        try:
            d.mkdir(parents=True, exist_ok=True)
            if not os.access(d, os.W_OK):
                continue
            with atomic_open(d / f"{key}.npy", "wb") as f:
                stream = _NpyStream(f, shape)
                kept, skipped = _decode_all(root, files, cfg, mode, limit, progress, stream.add)
                stream.finish()
            meta = _meta(key, kept, skipped, shape)
            write_json(d / f"{key}.json", meta)
        except OSError as e:
            print(f"vaekit: cannot write a cache in {d} ({e}); trying elsewhere", file=sys.stderr)
            continue
        _prune(d, key, meta)
        hit = read_cache(d, key, ram_budget)
        if hit is None:
            raise RuntimeError(f"the cache {d / key}.npy is unreadable right after writing it")
        return hit
    rows: list[np.ndarray] = []
    kept, skipped = _decode_all(root, files, cfg, mode, limit, progress, rows.append)
    return np.stack(rows), _meta(key, kept, skipped, shape), None


def split_on_disk(
    x: np.ndarray, y: np.ndarray | None, cfg: DataConfig, stem: Path, ram_budget: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, dict]:
    """The same split as `dataset.split`, written once as two memory-mapped .npy files.

    Indexing a memmap with an index array copies it into RAM; the split files let train
    and test stay on disk, gathered row by row into the page cache as batches need them.
    """
    train_rows, test_rows, info = split_indices(x.shape[0], cfg.test_fraction, cfg.split_seed)
    parts = {"train": train_rows, "test": test_rows}
    tag = f"{stem.name}-split-{cfg.test_fraction:g}-{cfg.split_seed}"
    arrays: dict[str, np.ndarray] = {}
    for name, rows in parts.items():
        path = stem.parent / f"{tag}-{name}.npy"
        try:  # written by an earlier run; rewritten when damaged
            arrays[name] = _load_npy(path, ram_budget=-1)
            if arrays[name].shape == (len(rows), *x.shape[1:]):
                continue
        except (OSError, ValueError, DataError):
            pass
        with atomic_open(path, "wb") as f:
            stream = _NpyStream(f, tuple(x.shape[1:]))
            chunk = max(1, ram_budget // (8 * max(1, int(np.prod(x.shape[1:])))))
            for start in range(0, len(rows), chunk):
                for row in x[rows[start : start + chunk]]:
                    stream.add(row)
            stream.finish()
        arrays[name] = np.load(path, mmap_mode="c", allow_pickle=False)
    y_train = None if y is None else y[parts["train"]]
    y_test = None if y is None else y[parts["test"]]
    return arrays["train"], arrays["test"], y_train, y_test, info


class _NpyStream:
    """Rows streamed into an .npy file whose fixed-size header gets the final count at the end.

    Keeps memory bounded while decoding a folder larger than RAM; np.load reads the result.
    """

    def __init__(self, f: IO[bytes], shape: tuple[int, int, int]) -> None:
        self.f, self.shape, self.rows = f, shape, 0
        f.write(self._header())

    def _header(self) -> bytes:
        d = {"descr": "|u1", "fortran_order": False, "shape": (self.rows, *self.shape)}
        text = repr(d).ljust(_HEADER_LEN - 11) + "\n"  # 10 bytes of preamble + text = 128
        return np.lib.format.magic(1, 0) + struct.pack("<H", len(text)) + text.encode("latin1")

    def add(self, row: np.ndarray) -> None:
        self.f.write(row.tobytes())
        self.rows += 1

    def finish(self) -> None:
        self.f.seek(0)
        self.f.write(self._header())
        self.f.seek(0, os.SEEK_END)


def _decode_all(
    root: Path,
    files: list[str],
    cfg: DataConfig,
    mode: str,
    limit: int | None,
    progress: bool,
    sink: Callable[[np.ndarray], None],
) -> tuple[list[str], dict[str, str]]:
    """Decode `files` in order into `sink`; return the kept paths and {skipped path: reason}.

    One process: on this project's 2-core machines a thread or process pool was no faster
    (PNG decoding holds the GIL; measured 1.4 s per 300 images either way).
    """
    kept: list[str] = []
    skipped: dict[str, str] = {}
    held: list[str] = []  # skip messages wait for a first good image: if none comes, the
    # error (which names the first bad file) is the only line
    with images.pillow_guards(limit):
        for rel in progress_bar(files, desc=f"decoding {root.name}", unit="img", show=progress):
            try:
                row = images.decode_image(root / rel, cfg.image_size, mode, limit)
            except DataError as e:
                if cfg.strict:
                    raise strict_error(str(e)) from None
                skipped[rel] = str(e).removeprefix(f"{root / rel}: ")
                if len(skipped) <= MAX_NAMED_SKIPS:
                    held.append(f"vaekit: skipping {e}")
            else:
                sink(row)
                kept.append(rel)
            if kept and held:
                for line in held:
                    tqdm.write(line, file=sys.stderr)
                held.clear()
    if not kept:
        rel, reason = next(iter(skipped.items()))
        raise DataError(
            f"none of the {len(files)} images in {root} could be read (the first: "
            f"{root / rel}: {reason}); check the files or their format"
        )
    return kept, skipped


def strict_error(message: str) -> DataError:
    return DataError(
        f"{message}; --strict is on: remove or fix the file, or run without "
        "--strict to skip unreadable images"
    )


def _meta(key: str, kept: list[str], skipped: dict[str, str], shape: tuple[int, int, int]) -> dict:
    """The JSON beside the array: the files in row order and the skipped ones with reasons."""
    return {
        "version": CACHE_VERSION,
        "key": key,
        "shape": [len(kept), *shape],
        "files": kept,
        "skipped": skipped,
    }


def _prune(d: Path, key: str, meta: dict) -> None:
    """Remove this folder's older entries of the same image shape (other sizes are kept)."""
    for p in d.iterdir():
        if not _KEY_FILE.match(p.name) or p.stem == key:
            continue
        if p.suffix == ".json":
            try:
                old = untrusted_files.load_json_file(p)
                stale = old.get("shape", [None])[1:] == meta["shape"][1:]
            except (OSError, ValueError):
                stale = True
        else:
            stale = not p.with_suffix(".json").exists()  # an orphan left by an interrupted write
        if stale:
            for q in (p.with_suffix(".json"), p.with_suffix(".npy")):
                with contextlib.suppress(FileNotFoundError):
                    q.unlink()
    for p in d.glob("*-split-*.npy"):  # on-disk splits of entries that are gone
        if not (d / f"{p.name.split('-', 1)[0]}.npy").exists():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
