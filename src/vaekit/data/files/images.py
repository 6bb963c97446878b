"""One image file as a uint8 array: opened with Pillow, oriented by its EXIF tag, brought to
RGB or L (transparency composited on white, 16-bit scaled without clipping), resized on its
shorter side and centre-cropped; unreadable, truncated and oversized files (decompression
bombs) are a DataError naming the file, and so is anything but a regular file."""

from __future__ import annotations

import contextlib
import os
import struct
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageFile, ImageOps

from ...errors import DataError, first_line
from ..core.untrusted import open_regular

EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"})
# What Pillow raises on corrupt, truncated or refused files (as in its own fuzz tests).
READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error)


def decode_image(
    path: str | Path, image_size: int, mode: str = "RGB", max_pixels: int | None = None
) -> np.ndarray:
    """One image file -> uint8 (C, image_size, image_size), C = 3 for "RGB", 1 for "L".

    Raises `DataError` naming the file when it cannot be read or exceeds `max_pixels`.
    """
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    try:
        f = open_regular(path)  # a FIFO or device named .png is refused, never opened blocking
    except OSError as e:
        raise DataError(f"{path}: cannot read image ({e.strerror or e})") from None
    with f:
        if os.fstat(f.fileno()).st_size == 0:
            raise DataError(f"{path}: cannot read image (empty file)")
        return _decode(f, path, image_size, mode, limit)


def _decode(
    f: IO[bytes], path: str | Path, image_size: int, mode: str, limit: int | None
) -> np.ndarray:
    try:
        with Image.open(f) as im:  # lazy: only the header has been read
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
    except Image.UnidentifiedImageError:  # its own text names the file object, not the path
        raise DataError(f"{path}: cannot read image (not a format Pillow can identify)") from None
    except READ_ERRORS as e:
        raise DataError(f"{path}: cannot read image ({first_line(e)})") from None
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


@contextlib.contextmanager
def pillow_guards(limit: int | None) -> Iterator[None]:
    """Pillow's global pixel limit set to ours, its bomb warning an error, truncation an error."""
    old_limit, old_truncated = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = limit, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = old_limit, old_truncated
