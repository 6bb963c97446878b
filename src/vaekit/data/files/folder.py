"""A folder of images as a `Dataset`: decoded once, cached as a uint8 .npy, labelled by subfolder.

Each image is decoded as images.py says (RGB or L, resized and centre-cropped); the decoded
array (N, C, H, W) is streamed into `<folder>/.vaekit-cache/<key>.npy` (or a user cache
directory) so later runs skip decoding and can memory-map large folders (folder_cache.py).
With `data.augment crop` the images are decoded (and keyed) at augment.decoded_size, a
margin larger, for random crops; `load_data` then takes their centres (augment.centred).

Labels: when every readable image lies inside a first-level subfolder and there are at least
two such subfolders, the subfolder names are the classes (sorted; label = index). Otherwise the
folder is unlabelled; images directly at the top level beside two or more class folders make
it unlabelled too, with a warning saying which images to move.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ...config import DataConfig
from ...errors import DataError
from ..core import augment
from ..core.dataset import Dataset, split
from . import folder_cache
from .images import EXTENSIONS

RAM_BUDGET = 2 * 2**30  # cached arrays larger than this are memory-mapped instead of loaded
FileStat = tuple[str, int, int, int, int]  # path under the folder, size, mtime, inode, ctime


def load_folder(
    path: str | Path,
    cfg: DataConfig,
    progress: bool = True,
    *,
    max_pixels: int | None = None,
    ram_budget: int = RAM_BUDGET,
    own: bool = True,
) -> Dataset:
    """Decode (or load from the cache) every image under `path` and split it into train/test.

    `max_pixels` bounds width*height of any file (default: Pillow's MAX_IMAGE_PIXELS); larger
    files are refused like unreadable ones. A cached array above `ram_budget` bytes is
    memory-mapped rather than read into memory. The cache is written beside the folder
    only when it is the user's `own` (here the default; load_data passes False for the
    folder a run's config names); a cache found there is read either way.
    """
    root, files, ignored = _image_files(path)
    if "crop" in cfg.augment:  # random crops need a margin around each image (core/augment.py)
        cfg = dataclasses.replace(cfg, image_size=augment.decoded_size(cfg.image_size))
    x, meta, cache, hit = _decoded(root, files, cfg, max_pixels, ram_budget, own, progress)
    skipped = _warn_skipped(root, meta["skipped"], named_above=not hit)
    y, class_names = _labels(root, meta["files"])
    info: dict[str, object] = {
        "source": "folder",
        "path": str(root),
        "images": int(x.shape[0]),
        "files": list(meta["files"]),  # the images' paths under root, in row order
        "skipped": skipped,
        "ignored_non_images": ignored,
        "cache": None if cache is None else str(cache),
        "cache_hit": hit,
    }
    return _split(root.name, x, y, class_names, cfg, cache, ram_budget, info)


def _image_files(path: str | Path) -> tuple[Path, list[FileStat], int]:
    """The folder (resolved), its image files as `_scan` lists them, and how many other
    files it ignored; a folder that is not there or holds no images is a DataError."""
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
    return root, files, ignored


def _decoded(
    root: Path,
    files: list[FileStat],
    cfg: DataConfig,
    max_pixels: int | None,
    ram_budget: int,
    own: bool,
    progress: bool,
) -> tuple[np.ndarray, dict, Path | None, bool]:
    """The images as an array, the cache's record of them, the cache file, and whether it
    was a cache hit: read from a cache that fits, else decoded (and cached where `own`)."""
    mode = "L" if cfg.channels == 1 else "RGB"
    limit = int(max_pixels) if max_pixels is not None else Image.MAX_IMAGE_PIXELS
    key = folder_cache.cache_key(files, cfg.image_size, mode, limit)
    dirs = folder_cache.cache_dirs(root, cfg)  # read from
    hit = next(
        (r for d in dirs if (r := folder_cache.read_cache(d, key, ram_budget)) is not None), None
    )
    if hit is None:
        writable = folder_cache.cache_dirs(root, cfg, own)  # written to
        x, meta, cache = folder_cache.build(
            root, [f[0] for f in files], writable, key, cfg, mode, limit, progress, ram_budget
        )
        return x, meta, cache, False
    x, meta, cache = hit
    if cfg.strict and meta["skipped"]:  # the cache was built without --strict
        rel, reason = next(iter(meta["skipped"].items()))
        raise folder_cache.strict_error(f"{root / rel}: {reason}")
    return x, meta, cache, True


def _warn_skipped(root: Path, skipped_files: dict[str, str], named_above: bool) -> list[str]:
    """The unreadable images' paths, counted in one line on stderr (`named_above`: the
    decoding just named the first of them)."""
    skipped = [str(root / rel) for rel in skipped_files]
    if skipped:
        plural = "" if len(skipped) == 1 else "s"
        named = folder_cache.MAX_NAMED_SKIPS
        first = f" (the first {named} named above)" if len(skipped) > named and named_above else ""
        print(
            f"vaekit: skipped {len(skipped)} unreadable image{plural} in {root}{first}",
            file=sys.stderr,
        )
    return skipped


def _split(
    name: str,
    x: np.ndarray,
    y: np.ndarray | None,
    class_names: list[str],
    cfg: DataConfig,
    cache: Path | None,
    ram_budget: int,
    info: dict[str, object],
) -> Dataset:
    """The train/test split of a folder's array as a Dataset (on disk when memory-mapped)."""
    if isinstance(x, np.memmap) and cache is not None:  # too big for RAM: split on disk
        x_train, x_test, y_train, y_test, split_info = folder_cache.split_on_disk(
            x, y, cfg, cache.with_suffix(""), ram_budget
        )
    else:
        x_train, x_test, y_train, y_test, split_info = split(
            x, y, cfg.test_fraction, cfg.split_seed
        )

    def tensor(a: np.ndarray) -> torch.Tensor:
        # split() indexes with arrays, so these are fresh writable arrays; copy only if not.
        return torch.from_numpy(a if a.flags.writeable else a.copy())

    return Dataset(
        name=name,
        x_train=tensor(x_train),
        x_test=tensor(x_test),
        y_train=None if y_train is None else tensor(y_train),
        y_test=None if y_test is None else tensor(y_test),
        class_names=class_names,
        info={**info, **split_info},
    )


def _scan(root: Path) -> tuple[list[FileStat], int]:
    """Sorted (relative path, size, mtime_ns, inode, ctime_ns) of candidate images, and the
    count of other files.

    The cache key is made of these: a file rewritten in place with the same size and its
    mtime set back (os.utime) still gets a new ctime, and a file replaced by another a new
    inode, without reading every file on every load. Names starting with '.' (the cache
    included) are skipped; symlinked folders are followed once each. Nothing is opened
    here: a FIFO or device named like an image is refused by name when decoding.
    """
    files: list[tuple[str, int, int, int, int]] = []
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
                    files.append((name, est.st_size, est.st_mtime_ns, est.st_ino, est.st_ctime_ns))
                except OSError:  # a broken link: decoding will name it as unreadable
                    files.append((name, -1, -1, -1, -1))
            else:
                ignored += 1
    files.sort()
    return files, ignored


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
