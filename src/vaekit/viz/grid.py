"""Image grids on numpy + Pillow (torchvision cannot sit beside the CPU torch build here)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError
from ..io import fileio


def make_grid(
    images: torch.Tensor | np.ndarray, nrow: int = 8, padding: int = 2, pad_value: float = 1.0
) -> np.ndarray:
    """Tile images (N, C, H, W) into one uint8 array (H', W', C') with C' in {1, 3}: see
    `displayable` for other channel counts and for values outside [0, 1]."""
    x = images.detach().float().cpu().numpy() if torch.is_tensor(images) else np.asarray(images)
    if x.ndim != 4 or x.shape[1] < 1:
        raise ConfigError(f"make_grid expects (N, C, H, W) images, got {x.shape}")
    x = displayable(x)
    n, c, h, w = x.shape
    ncol = max(1, min(nrow, n))
    nrows = math.ceil(n / ncol)
    grid = np.full(
        (c, nrows * (h + padding) + padding, ncol * (w + padding) + padding),
        pad_value,
        dtype=np.float32,
    )
    for i in range(n):
        r, col = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top : top + h, left : left + w] = x[i]
    return (np.clip(grid, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)


def displayable(x: np.ndarray) -> np.ndarray:
    """Images any array of examples can be shown as: 1 or 3 channels are shown as they are,
    2 channels by the first, more than 3 by the first three (RGBA as RGB); values in
    [0, 1] as they are, others with each channel stretched over its range in `x`."""
    x = x[:, :1] if x.shape[1] == 2 else x[:, :3]
    if x.size and (x.min() < 0.0 or x.max() > 1.0):
        lo = x.min(axis=(0, 2, 3), keepdims=True)
        span = x.max(axis=(0, 2, 3), keepdims=True) - lo
        x = (x - lo) / np.where(span > 0, span, 1.0)
    return x


def to_pil(array: np.ndarray, scale: int = 1) -> Image.Image:
    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    return image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_grid(
    path: str | Path, images: torch.Tensor | np.ndarray, nrow: int = 8, scale: int = 1
) -> Path:
    """Write a grid of images as a PNG, atomically; small images are upscaled by `scale`."""
    fileio.write_bytes(path, png_bytes(to_pil(make_grid(images, nrow), scale)))
    return Path(path)


def auto_scale(height: int) -> int:
    """Upscale factor that makes small images (28x28) readable in a browser."""
    return max(1, 64 // height)
