"""A folder of images as a `Dataset`: decoded once, cached as a uint8 .npy, labelled by subfolder.

Every image is opened with Pillow, oriented by its EXIF tag, brought to RGB or L (transparency
composited on white, 16-bit scaled without clipping), resized on its shorter side and centre-
cropped. The decoded array (N, C, H, W) is streamed into `<folder>/.vaekit-cache/<key>.npy`
(or a user cache directory) so later runs skip decoding and can memory-map large folders.

Labels: when every readable image lies inside a first-level subfolder and there are at least
two such subfolders, the subfolder names are the classes (sorted; label = index). Otherwise the
folder is unlabelled; images directly at the top level beside two or more class folders make
it unlabelled too, with a warning saying which images to move.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import struct
import sys
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps
from tqdm import tqdm

from ..config import DataConfig
from ..errors import DataError
from ..io.fileio import atomic_open, write_json
from .dataset import Dataset, split, split_indices

EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"})
CACHE_DIRNAME = ".vaekit-cache"
CACHE_VERSION = 1  # bump when decoding changes: it is part of every cache key
RAM_BUDGET = 2 * 2**30  # cached arrays larger than this are memory-mapped instead of loaded
_HEADER_LEN = 128  # fixed .npy header size, so the row count can be rewritten in place
_KEY_FILE = re.compile(r"^[0-9a-f]{64}\.(npy|json)$")
# What Pillow raises on corrupt, truncated or refused files (as in its own fuzz tests).
_READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error)


def load_folder(
    path: str | Path,
    cfg: DataConfig,
    progress: bool = True,
    *,
    max_pixels: int | None = None,
    ram_budget: int = RAM_BUDGET,
) -> Dataset:
    """Decode (or load from the cache) every image under `path` and split it into train/test.

    `max_pixels` bounds width*height of any file (default: Pillow's MAX_IMAGE_PIXELS); larger
    files are refused like unreadable ones. A cached array above `ram_budget` bytes is
    memory-mapped rather than read into memory.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"{root} {what}; pass a folder of images (or an .npz file) as --data")
    root = root.resolve()
    files, ignored = _scan(root)
    if not files:
        extra = f" ({ignored} files with other extensions were ignored)" if ignored else ""
        raise DataError(
            f"{root} holds no images{extra}; add .png, .jpg, .jpeg, .bmp, .webp, .gif or .tif files"
        )
    mode = "L" if cfg.channels == 1 else "RGB"
    limit = int(max_pixels) if max_pixels is not None else Image.MAX_IMAGE_PIXELS
    key = cache_key(files, cfg.image_size, mode, limit)
    dirs = _cache_dirs(root, cfg)

    cache: Path | None
    hit = next((r for d in dirs if (r := _read_cache(d, key, ram_budget)) is not None), None)
    if hit is not None:
        x, meta, cache = hit
        if cfg.strict and meta["skipped"]:  # the cache was built without --strict
            rel, reason = next(iter(meta["skipped"].items()))
            raise _strict_error(f"{root / rel}: {reason}")
    else:
        x, meta, cache = _build(
            root, [f[0] for f in files], dirs, key, cfg, mode, limit, progress, ram_budget
        )
    skipped = [str(root / rel) for rel in meta["skipped"]]
    if skipped:
        plural = "" if len(skipped) == 1 else "s"
        print(f"vaekit: skipped {len(skipped)} unreadable image{plural} in {root}", file=sys.stderr)

    y, class_names = _labels(root, meta["files"])
    if isinstance(x, np.memmap) and cache is not None:  # too big for RAM: split on disk
        x_train, x_test, y_train, y_test, split_info = _split_on_disk(
            x, y, cfg, cache.with_suffix(""), ram_budget
        )
    else:
        x_train, x_test, y_train, y_test, split_info = split(
            x, y, cfg.test_fraction, cfg.split_seed
        )
    info: dict[str, object] = {
        "source": "folder",
        "path": str(root),
        "images": int(x.shape[0]),
        "skipped": skipped,
        "ignored_non_images": ignored,
        "cache": None if cache is None else str(cache),
        "cache_hit": hit is not None,
        **split_info,
    }

    def tensor(a: np.ndarray) -> torch.Tensor:
        # split() indexes with arrays, so these are fresh writable arrays; copy only if not.
        return torch.from_numpy(a if a.flags.writeable else a.copy())

    return Dataset(
        name=root.name,
        x_train=tensor(x_train),
        x_test=tensor(x_test),
        y_train=None if y_train is None else tensor(y_train),
        y_test=None if y_test is None else tensor(y_test),
        class_names=class_names,
        info=info,
    )


def decode_image(
    path: str | Path, image_size: int, mode: str = "RGB", max_pixels: int | None = None
) -> np.ndarray:
    """One image file -> uint8 (C, image_size, image_size), C = 3 for "RGB", 1 for "L".

    Raises `DataError` naming the file when it cannot be read or exceeds `max_pixels`.
    """
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    try:
        with Image.open(path) as im:  # lazy: only the header has been read
            w, h = im.size
            if limit is not None and w * h > limit:
                raise DataError(
                    f"{path}: refused: {w}x{h} pixels is over the limit of {limit} "
                    "(decompression-bomb guard); shrink the image or raise "
                    "max_pixels"
                )
            im.draft(None, (image_size, image_size))  # JPEG: decode at a reduced scale
            im.load()
            out = _to_mode(ImageOps.exif_transpose(im), mode)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(
            f"{path}: refused: over the pixel limit of {limit} (decompression-"
            "bomb guard); shrink the image or raise max_pixels"
        ) from None
    except _READ_ERRORS as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path}: cannot read image ({reason})") from None
    out = _resize_crop(out, image_size)
    a = np.asarray(out, dtype=np.uint8)  # (H, W) or (H, W, 3)
    return a[None] if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1))


def _to_mode(im: Image.Image, mode: str) -> Image.Image:
    """Any Pillow mode -> `mode` ("RGB" or "L"); alpha over white, deep images scaled to 8 bits."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        im = Image.fromarray(_to_uint8(np.asarray(im)), "L")
    elif im.mode == "1":
        im = im.convert("L")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        im = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im.alpha_composite(rgba)
    if im.mode != mode:
        im = im.convert(mode)  # P, CMYK, YCbCr, RGBA (now opaque), L <-> RGB
    return im


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """16/32-bit integer or float pixels -> uint8 by scaling, never clipping.

    Integers within 0..65535 are 16-bit samples (65535 -> 255, 32768 -> 128); floats within
    [0, 1] are intensities; any other range is stretched from its own min..max.
    """
    v = a.astype(np.float64)
    lo, hi = float(v.min()), float(v.max())
    if a.dtype.kind in "iu" and lo >= 0 and hi <= 65535:
        v = v / 257.0  # the full 16-bit range maps exactly onto 0..255
    elif a.dtype.kind == "f" and lo >= 0 and hi <= 1:
        v = v * 255.0
    else:
        v = (v - lo) * (255.0 / max(hi - lo, 1e-12))
    return np.rint(v).astype(np.uint8)


def _resize_crop(im: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` and keep the centre square, in one resampling pass."""
    w, h = im.size
    if (w, h) == (size, size):
        return im
    side = min(w, h)
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    return im.resize((size, size), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)


def _scan(root: Path) -> tuple[list[tuple[str, int, int]], int]:
    """Sorted (relative path, size, mtime_ns) of candidate images, and the count of other files.

    Names starting with '.' (the cache included) are skipped; symlinked folders are followed
    once each.
    """
    files: list[tuple[str, int, int]] = []
    ignored = 0
    seen: set[tuple[int, int]] = set()
    stack = [""]
    while stack:
        rel = stack.pop()
        folder = root / rel
        st = folder.stat()
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = list(os.scandir(folder))
        except OSError as e:
            raise DataError(
                f"cannot list {folder}: {e.strerror}; fix its permissions or move "
                "it out of the data folder"
            ) from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            name = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_dir():
                stack.append(name)
            elif os.path.splitext(entry.name)[1].lower() in EXTENSIONS:
                try:
                    est = entry.stat()
                    files.append((name, est.st_size, est.st_mtime_ns))
                except OSError:  # a broken link: decoding will name it as unreadable
                    files.append((name, -1, -1))
            else:
                ignored += 1
    files.sort()
    return files, ignored


def cache_key(
    files: list[tuple[str, int, int]], image_size: int, mode: str, max_pixels: int | None
) -> str:
    """A hash of everything the decoded array depends on; any change means a new cache entry."""
    spec = {
        "version": CACHE_VERSION,
        "image_size": image_size,
        "mode": mode,
        "max_pixels": max_pixels,
        "files": files,
    }
    return hashlib.sha256(json.dumps(spec, separators=(",", ":")).encode()).hexdigest()


def _cache_dirs(root: Path, cfg: DataConfig) -> list[Path]:
    """Where this folder's cache may live, in order of preference."""
    tag = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    if cfg.cache_dir:
        return [Path(cfg.cache_dir).expanduser() / tag]
    return [root / CACHE_DIRNAME, Path.home() / ".cache" / "vaekit" / "folders" / tag]


def _read_cache(d: Path, key: str, ram_budget: int) -> tuple[np.ndarray, dict, Path] | None:
    """The cached array and its metadata, or None when absent or unusable (then it is rebuilt)."""
    npy, meta_path = d / f"{key}.npy", d / f"{key}.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        big = npy.stat().st_size > ram_budget
        x = np.load(npy, mmap_mode="c" if big else None, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if (
        not isinstance(meta, dict)
        or meta.get("key") != key
        or list(x.shape) != meta.get("shape")
        or x.dtype != np.uint8
    ):
        return None
    return x, meta, npy


def _build(
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
        hit = _read_cache(d, key, ram_budget)
        if hit is None:
            raise RuntimeError(f"the cache {d / key}.npy is unreadable right after writing it")
        return hit
    rows: list[np.ndarray] = []
    kept, skipped = _decode_all(root, files, cfg, mode, limit, progress, rows.append)
    return np.stack(rows), _meta(key, kept, skipped, shape), None


def _split_on_disk(
    x: np.ndarray, y: np.ndarray | None, cfg: DataConfig, stem: Path, ram_budget: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, dict]:
    """The same split as `dataset.split`, written once as two memory-mapped .npy files.

    Indexing a memmap with an index array copies it into RAM; the split files let train
    and test stay on disk, gathered row by row into the page cache as batches need them.
    """
    train_rows, test_rows, info = split_indices(x.shape[0], cfg.test_fraction, cfg.split_seed)
    parts = {"train": train_rows, "test": test_rows}
    tag = f"{stem.name}-split-{cfg.test_fraction:g}-{cfg.split_seed}"
    arrays = {}
    for name, rows in parts.items():
        path = stem.parent / f"{tag}-{name}.npy"
        if not path.is_file():
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
    with _pillow_guards(limit):
        for rel in tqdm(files, desc=f"decoding {root.name}", unit="img", disable=not progress):
            try:
                row = decode_image(root / rel, cfg.image_size, mode, limit)
            except DataError as e:
                if cfg.strict:
                    raise _strict_error(str(e)) from None
                tqdm.write(f"vaekit: skipping {e}", file=sys.stderr)
                skipped[rel] = str(e).removeprefix(f"{root / rel}: ")
            else:
                sink(row)
                kept.append(rel)
    if not kept:
        raise DataError(
            f"none of the {len(files)} images in {root} could be read (see the "
            "messages above); check the files or their format"
        )
    return kept, skipped


@contextlib.contextmanager
def _pillow_guards(limit: int | None) -> Iterator[None]:
    """Pillow's global pixel limit set to ours, its bomb warning an error, truncation an error."""
    old_limit, old_truncated = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = limit, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = old_limit, old_truncated


def _strict_error(message: str) -> DataError:
    return DataError(
        f"{message}; --strict is on: remove or fix the file, or run without "
        "--strict to skip unreadable images"
    )


def _labels(root: Path, files: list[str]) -> tuple[np.ndarray | None, list[str]]:
    """Labels (N,) and class names by the rule in the module docstring, from the kept files."""
    top = sorted({rel.split("/", 1)[0] for rel in files if "/" in rel})
    loose = [rel for rel in files if "/" not in rel]
    if len(top) < 2:
        return None, []
    if loose:
        print(
            f"vaekit: {root} has {len(top)} subfolders but also {len(loose)} images at its top "
            f"level (e.g. {loose[0]}), so it is used without labels; move those images into "
            "a subfolder to label by subfolder name",
            file=sys.stderr,
        )
        return None, []
    index = {name: i for i, name in enumerate(top)}
    return np.array([index[rel.split("/", 1)[0]] for rel in files], dtype=np.int64), top


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
                old = json.loads(p.read_text(encoding="utf-8"))
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
