"""Random crops and horizontal flips of training batches (`data.augment crop,flip`).

A folder is decoded once into a cached uint8 array (folder.py), so a random crop needs
the cache to hold more than the crop: with 'crop', a folder's images are decoded at
`decoded_size(image_size)` = image_size + 2 x ceil(image_size / 16) (resized on the
shorter side and centre-cropped to that square, as without it), and cached under a key
of that size. Each training batch takes a random image_size window of each image; the
validation and test images are the centre window, so a model is evaluated at the scale
it trains at. taming-transformers' and latent diffusion's loaders crop at random along
the longer side of images resized to the crop's size; a cache of one fixed shape cannot
hold every aspect ratio, so here the margin is the same on all four sides.

The crop offsets and flips of a batch are a pure function of (train.seed, the optimizer
step, the batch's place in it): a resumed run and every DDP rank draw the same, and the
run's own generator (the model's noise) is untouched. They are applied to the batch's
uint8 rows by two gathers, with no per-image Python work.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ...errors import DataError
from .dataset import Dataset, to_float

CHOICES = ("crop", "flip")


def margin(image_size: int) -> int:
    """The pixels a crop may move on each side of the centre: ceil(image_size / 16)."""
    return math.ceil(image_size / 16)


def decoded_size(image_size: int) -> int:
    """The side a folder's images are decoded and cached at for random crops."""
    return image_size + 2 * margin(image_size)


@dataclasses.dataclass(frozen=True)
class Augment:
    """What `data.augment` asks for: crops within `margin` pixels of the centre (0: none),
    and left-right flips of half of the images."""

    margin: int = 0
    flip: bool = False

    @property
    def active(self) -> bool:
        return self.margin > 0 or self.flip


def from_options(augment: list[str], image_size: int) -> Augment:
    return Augment(margin(image_size) if "crop" in augment else 0, "flip" in augment)


def centred(data: Dataset, image_size: int) -> Dataset:
    """A folder decoded at `decoded_size(image_size)` as the Dataset of image_size images:
    x_train the centre windows of `x_train_full` (a view, no copy), which keeps the whole
    decoded training images for the random crops; the validation and test sets their
    centre windows."""
    m = margin(image_size)
    if data.info.get("source") != "folder":
        raise DataError(
            f"data.augment crop takes random crops of a folder's images (decoded with a "
            f"margin), but {data.name} is not a folder; use data.augment flip alone for it"
        )
    assert data.shape[1:] == (image_size + 2 * m,) * 2, (data.shape, image_size)

    def centre(x: torch.Tensor) -> torch.Tensor:
        return x[:, :, m : m + image_size, m : m + image_size]

    full = data.x_train
    return dataclasses.replace(
        data,
        x_train=centre(full),
        x_val=None if data.x_val is None else centre(data.x_val).contiguous(),
        x_test=centre(data.x_test).contiguous(),
        x_train_full=full,
    )


def training_rows(data: Dataset, augment: list[str]) -> torch.Tensor:
    """What training batches are gathered from: with 'crop', the whole decoded images
    (`centred` kept them); else x_train."""
    if "crop" not in augment:
        return data.x_train
    if data.x_train_full is None:
        raise DataError(
            f"data.augment crop takes random crops of a folder's images, decoded with a "
            f"margin by vaekit's loader, but {data.name} was given ready-made; pass the "
            "folder as data.name, or use data.augment flip alone"
        )
    return data.x_train_full


def batch_draws(seed: int, step: int, part: int) -> torch.Generator:
    """The generator of the draws of batch `part` of optimizer step `step`: a pure function
    of (seed, step, part), as data.dataset.epoch_permutation is of (seed, epoch)."""
    mixed = (seed * 1_000_003 + step * 7_919 + part * 104_729 + 24_691) % 2**63
    return torch.Generator().manual_seed(mixed)


def apply(
    rows: torch.Tensor, augment: Augment, size: tuple[int, int], generator: torch.Generator
) -> torch.Tensor:
    """Random size[0] x size[1] windows of uint8 rows (B, C, H, W) within `augment.margin`
    of their centre (the whole row when 0), mirrored left-right for a random half:
    (B, C, *size), by two gathers. The draws come from `generator` (CPU)."""
    b, c, _, full_w = rows.shape
    h, w = size
    span = 2 * augment.margin + 1
    offsets = torch.randint(0, span, (b, 2), generator=generator) if augment.margin else None
    flips = torch.rand(b, generator=generator) < 0.5 if augment.flip else None
    top = torch.zeros(b, dtype=torch.long) if offsets is None else offsets[:, 0]
    left = torch.zeros(b, dtype=torch.long) if offsets is None else offsets[:, 1]
    ys = (top[:, None] + torch.arange(h)).to(rows.device)  # (B, h)
    across = torch.arange(w).expand(b, w)
    if flips is not None:
        across = torch.where(flips[:, None], w - 1 - across, across)
    xs = (left[:, None] + across).to(rows.device)  # (B, w)
    # two gathers (rows, then columns): half the time of one 4-index advanced indexing
    picked = rows.gather(2, ys[:, None, :, None].expand(b, c, h, full_w))  # (B, C, h, W)
    return picked.gather(3, xs[:, None, None, :].expand(b, c, h, w))  # (B, C, h, w)


def gather_augmented(
    x: torch.Tensor,
    idx: torch.Tensor,
    device: torch.device,
    augment: Augment,
    size: tuple[int, int],
    generator: torch.Generator,
) -> torch.Tensor:
    """Rows x[idx], augmented (`apply`), as float32 in [0, 1] on `device` (B, C, *size):
    as data.dataset.gather, with the crop and flip done on the uint8 rows."""
    rows = x.index_select(0, idx.to(x.device))
    if rows.device != device:
        rows = rows.to(device)
    return to_float(apply(rows, augment, size, generator))
