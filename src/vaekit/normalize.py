"""`data.normalize`: the per-channel affine map between the user's units and the model's.

x_model = (x - shift) / scale, per channel (a table's channels are its features). The
statistics come from the training split only and travel with the model (config.json's
architecture record), so that `vaekit.load(...).reconstruct(x)` takes and returns data in
the user's units. uint8 data are first read as x / 255, as always.

- none: the identity (shift 0, scale 1).
- minmax: each channel to [0, 1] by its training minimum and maximum (values past them,
  in test data, are clipped).
- standardize: each channel to mean 0, standard deviation 1.

`bounded` says whether the model's data lie in [0, 1] (images, or minmax): decoded means
are then clipped to [0, 1], and only then may the likelihood be Bernoulli.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .errors import ConfigError, DataError

KINDS = ("none", "minmax", "standardize")
# the scales (and shift sizes) a normalisation may have: data divided by a smaller scale,
# in float32, would overflow to infinity, and a model would report a -ELBO of NaN
SCALES = (1e-12, 1e12)
CHUNK_ROWS = 4096  # rows reduced at a time: bounded memory on large (memory-mapped) sets


@dataclass(frozen=True)
class Normalization:
    kind: str = "none"
    shift: tuple[float, ...] = ()  # per channel; empty: 0
    scale: tuple[float, ...] = ()  # per channel; empty: 1
    bounded: bool = True  # the model's data lie in [0, 1]

    @property
    def identity(self) -> bool:
        return not self.shift and not self.scale

    def check_likelihood(self, likelihood: str, source: str = "the data") -> None:
        """A Bernoulli likelihood only for data in [0, 1] (once normalised); `source` names
        the data in the refusal."""
        if likelihood == "bernoulli" and not self.bounded:
            raise DataError(
                f"{source}: a Bernoulli likelihood needs data in [0, 1] and these are not; "
                "divide 0-255 data by 255, or use model.likelihood auto, gaussian or laplace, "
                "or data.normalize minmax"
            )

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """User units (float, (N, C, ...)) -> the model's. minmax clips values outside the
        training range (test data may reach past it) to [0, 1]."""
        if self.identity:
            return x
        shift, scale = self._params(x)
        x = (x - shift) / scale
        return x.clamp_(0.0, 1.0) if self.kind == "minmax" else x

    def to_user(self, x: torch.Tensor) -> torch.Tensor:
        """The model's units -> the user's."""
        if self.identity:
            return x
        shift, scale = self._params(x)
        return x * scale + shift

    def _params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = len(self.shift)
        if x.dim() < 2 or x.shape[1] != c:
            raise DataError(
                f"data of shape {tuple(x.shape)} do not have the {c} channels this model's "
                "normalisation was fitted on"
            )
        view = (1, c) + (1,) * (x.dim() - 2)
        shift = torch.tensor(self.shift, dtype=x.dtype, device=x.device).view(view)
        return shift, torch.tensor(self.scale, dtype=x.dtype, device=x.device).view(view)

    def record(self) -> dict[str, Any] | None:
        """The JSON record config.json keeps (None: the identity on [0, 1] data)."""
        if self.identity and self.bounded:
            return None
        return {
            "kind": self.kind,
            "shift": list(self.shift),
            "scale": list(self.scale),
            "bounded": self.bounded,
        }

    @classmethod
    def from_record(cls, record: Any, channels: int) -> Normalization:
        """A record as config.json holds it, checked (it is a file a user may edit)."""
        if record is None:
            return cls()
        if not isinstance(record, dict) or record.get("kind") not in KINDS:
            raise ConfigError(
                f"normalization must be an object with kind {'|'.join(KINDS)}; got {record!r:.80}"
            )
        shift, scale = record.get("shift", []), record.get("scale", [])
        numbers = all(isinstance(v, list) and all(_finite(s) for s in v) for v in (shift, scale))
        if not numbers or len(shift) != len(scale) or len(shift) not in (0, channels):
            raise ConfigError(
                f"normalization needs 'shift' and 'scale' lists of {channels} finite numbers"
            )
        if not all(SCALES[0] <= s <= SCALES[1] for s in scale) or any(
            abs(s) > SCALES[1] for s in shift
        ):
            raise ConfigError(
                f"normalization 'scale' values must lie in [{SCALES[0]:g}, {SCALES[1]:g}] and "
                f"'shift' values within +-{SCALES[1]:g} (float32 data divided by them must "
                f"stay finite); got scale {scale!r:.60} shift {shift!r:.60}"
            )
        bounded = record.get("bounded", True)
        if not isinstance(bounded, bool):
            raise ConfigError(f"normalization 'bounded' must be true or false; got {bounded!r}")
        return cls(record["kind"], tuple(map(float, shift)), tuple(map(float, scale)), bounded)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def fit(x: torch.Tensor, kind: str) -> Normalization:
    """The normalisation of kind `kind` fitted on training data x (N, C, H, W), stored as
    uint8 (read as x / 255) or float, in chunks of rows."""
    if kind not in KINDS:
        raise ConfigError(f"unknown data.normalize {kind!r}; choose from {', '.join(KINDS)}")
    lo, hi, mean, std = channel_stats(x)
    if kind == "none":
        return Normalization("none", bounded=bool(lo.min() >= 0.0 and hi.max() <= 1.0))
    if kind == "minmax":
        shift, scale = lo, (hi - lo)
    else:
        shift, scale = mean, std
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # a constant channel
    if not (
        scale.min() >= SCALES[0] and scale.max() <= SCALES[1] and shift.abs().max() <= SCALES[1]
    ):
        raise DataError(
            f"data.normalize {kind}: the data's channels vary by {scale.min().item():.3g} to "
            f"{scale.max().item():.3g} around {shift.abs().max().item():.3g}, outside "
            f"[{SCALES[0]:g}, {SCALES[1]:g}]; rescale the data first"
        )
    return Normalization(
        kind, tuple(shift.tolist()), tuple(scale.tolist()), bounded=kind == "minmax"
    )


def channel_stats(
    x: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel minimum, maximum, mean and standard deviation (float64, (C,)) of x in
    the units the model reads (uint8 / 255)."""
    c = x.shape[1]
    lo = torch.full((c,), math.inf, dtype=torch.float64)
    hi = torch.full((c,), -math.inf, dtype=torch.float64)
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    count = 0
    for start in range(0, x.shape[0], CHUNK_ROWS):
        rows = x[start : start + CHUNK_ROWS].double()
        rows = rows / 255.0 if x.dtype == torch.uint8 else rows
        per_channel = rows.transpose(0, 1).reshape(c, -1)
        lo = torch.minimum(lo, per_channel.min(1).values)
        hi = torch.maximum(hi, per_channel.max(1).values)
        total += per_channel.sum(1)
        squares += per_channel.pow(2).sum(1)
        count += per_channel.shape[1]
    mean = total / count
    std = (squares / count - mean.pow(2)).clamp_min(0.0).sqrt()
    return lo, hi, mean, std
