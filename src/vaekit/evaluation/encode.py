"""`vaekit encode` as a function: the posterior q(z|x) = N(mu, diag(exp(logvar))) of every
example of a data source, and optionally K seeded draws z ~ q(z|x) each, computed a chunk
of examples at a time and written as they come (io/records.py), so that memory holds one
chunk of examples and of latents, whatever the size of the data.

K draws each are made and written batch_size / K examples at a time, so that the draws
held at once follow the chunk, not K. Examples are read in the user's units (uint8 images,
float data, table rows) and brought to the model's scaling by `model.prepare`; the latents
are the model's own (N(0, I) under the prior). A spatial latent keeps its shape (C, h, w)
in arrays.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import Dataset
from ..errors import ConfigError, DataError
from ..io import outputs, records
from ..models import VAE
from ..models.protocol import as_input
from ..progress import bar as progress_bar
from .evaluate import _check_counts, check_input
from .likelihood import _example_noise
from .rows import SPLITS, Rows, select

MAX_SAMPLES = 10_000  # draws per example: far beyond what a downstream model needs


def rows_of(
    model: VAE, data: Any, y: Any = None, split: str | None = None, progress: bool = False
) -> Rows:
    """The examples `data` stands for: an array or tensor of examples in the user's units
    (with labels `y`), a `vaekit.data.Dataset`, or a data source as `--data` names it (read
    with the model's data settings: `loading.data_of`); of `split` (default all)."""
    if not isinstance(model, VAE):
        raise ConfigError(f"the model must be a vaekit.VAE, not {type(model).__name__}")
    if isinstance(data, str | Path):
        from ..loading import data_of

        data = data_of(model, str(data), split=split or "all", progress=progress)
    if isinstance(data, Dataset):
        if y is not None:
            raise ConfigError("y is taken from the Dataset; pass y only with an array")
        return select(data, split or "all")
    if split is not None and split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if split not in (None, "all"):
        raise ConfigError(f"split={split!r} needs a Dataset or a data source, not an array")
    if not isinstance(data, torch.Tensor | np.ndarray):
        raise ConfigError(
            "data must be an array or tensor of examples, a vaekit.data.Dataset or a data "
            f"source name or path; got {type(data).__name__}"
        )
    # a C-ordered array (a memory-mapped .npy too) is wrapped, not copied: chunks read it
    x = torch.from_numpy(np.ascontiguousarray(data)) if isinstance(data, np.ndarray) else data
    if x.ndim in (1, 3):  # one row or one image
        x = x[None]
    labels = None if y is None else _labels(y)
    if labels is not None and len(labels) != len(x):
        raise DataError(f"{len(labels)} labels y for {len(x)} examples")
    n = len(x)
    zeros = np.zeros(n, dtype=np.int64)
    return Rows("input", [("input", x, labels)], zeros, np.arange(n), np.arange(n))


def check_model(model: Any, rows: Rows, what: str = "encode") -> None:
    """The model can read these rows: a vaekit.VAE, and labels for a conditional one."""
    if not isinstance(model, VAE):
        raise ConfigError(f"{what} takes a vaekit.VAE, not {type(model).__name__}")
    if model.conditional and not rows.labelled:
        raise DataError(
            f"this model is class-conditional and {rows.name} has no labels; pass data with "
            "labels (y=...)"
        )


def chunks(rows: Rows, model: VAE, batch_size: int) -> Iterator[tuple[int, torch.Tensor, Any]]:
    """(start, x, y) for each chunk of `batch_size` examples: x checked and in the user's
    float units on the model's device (see evaluate.check_input), y the labels the model
    needs (None for an unconditional one). x lives in a buffer that the next chunk reuses
    (tensors of the same sizes each chunk keep the heap from growing with the data)."""
    device = model.device
    floats: torch.Tensor | None = None
    for start in range(0, len(rows), batch_size):
        x, y = rows.read(start, min(start + batch_size, len(rows)))
        # uint8 examples are finite and in [0, 1] once read as x / 255: without a
        # normalisation only their shape needs checking (a pass over the values costs
        # as much as an MLP encoder's first layer)
        if x.dtype == torch.uint8 and model.normalization.identity:
            _shape_checked(x[:1], model, rows.name)
            if floats is None or len(floats) < len(x):
                floats = torch.empty(x.shape, dtype=torch.float32)
            xf = _shape_checked(torch.div(x, 255.0, out=floats[: len(x)]), model, rows.name)
        else:
            xf = check_input(x, model, rows.name)
        xf = xf.to(device)
        yield start, xf, (y.to(device) if model.conditional and y is not None else None)


def encode(
    model: VAE,
    data: Any,
    y: Any = None,
    *,
    out: str | Path | None = None,
    split: str | None = None,
    samples: int = 0,
    batch_size: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, np.ndarray] | Path:
    """The posterior of every example of `data` (see `rows_of`): a dict of numpy arrays,
    or, with `out`, the file written (.npy: the means; .npz: every array; .parquet/.csv:
    one row per example), `batch_size` examples at a time.

    Arrays: mu and logvar (N, D), or (N, C, h, w) for a spatial latent; with `samples` K,
    z (N, K, ...) drawn as mu + exp(logvar / 2) * eps, eps seeded by `seed` and the
    example's position alone (the chunk size changes only the rounding of batched
    matmuls); id (N,), and split, label, class and file where the data have them.
    Tables name the values z0..zD-1 (means), logvar0.., and sample{k}_z{d}.
    """
    rows = rows_of(model, data, y, split, progress)
    check_model(model, rows)
    _check_counts(batch_size=(batch_size, 1), seed=(seed, 0), samples=(samples, 0))
    if samples > MAX_SAMPLES:
        raise ConfigError(f"samples must be at most {MAX_SAMPLES}; got {samples}")
    path = None if out is None else _output(out, samples)
    shape = model.latent_shape or (model.latent_dim,)
    fields: dict[str, records.Field] = {"mu": (shape, np.float32), "logvar": (shape, np.float32)}
    columns = {
        "mu": records.latent_columns("z", shape),
        "logvar": records.latent_columns("logvar", shape),
    }
    if samples:
        fields["z"] = ((samples, *shape), np.float32)
        columns["z"] = [
            f"sample{k}_z{d}" for k in range(samples) for d in range(len(columns["mu"]))
        ]
    was_training = model.training
    model.eval()
    bar = progress_bar(total=len(rows), show=progress, unit="example", desc="encode")
    try:
        with records.Records(path, len(rows), rows.names(0, len(rows)), fields, npy="mu",
                             columns=columns) as written:  # fmt: skip
            for start, x, yb in chunks(rows, model, batch_size):
                for at, part in _posterior(model, x, yb, start, samples, seed, batch_size):
                    written.write(at, part)
                bar.update(len(x))
            return written.finish()
    finally:
        bar.close()
        model.train(was_training)


def check_out(out: Any, example: str) -> Path:
    """`out` as a file to write numbers to (.npy, .npz, .parquet, .csv), or a ConfigError."""
    if not isinstance(out, str | os.PathLike):
        raise ConfigError(f"out must be a path (a str or Path); got {type(out).__name__}")
    path = outputs.check_file(out, "out", example=example)
    records.check_format(path, "out")
    return path


def _output(out: str | Path, samples: int) -> Path:
    path = check_out(out, "latents.npz")
    if records.check_format(path, "out") == ".npy" and samples:
        raise ConfigError(
            f"{path}: an .npy file holds the posterior means only; write .npz, .parquet or "
            ".csv to keep the samples"
        )
    return path


def _shape_checked(x: torch.Tensor, model: VAE, source: str) -> torch.Tensor:
    try:
        return as_input(x, model.input_shape)
    except DataError as e:
        raise DataError(f"{source}: {e}") from None


@torch.inference_mode()
def _posterior(
    model: VAE,
    x: torch.Tensor,
    y: torch.Tensor | None,
    start: int,
    samples: int,
    seed: int,
    batch_size: int,
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """mu, logvar (and z) of one chunk, starting at example `start`, as numpy arrays: the
    whole chunk, or with `samples` K, parts of batch_size / K examples (one at least), so
    that the draws held at once number about batch_size, whatever K is."""
    mu, logvar = model.posterior(model.prepare(x), y)  # (B, D) each
    shape = model.latent_shape or (model.latent_dim,)
    means = mu.cpu().numpy().reshape(len(x), *shape)
    logvars = logvar.cpu().numpy().reshape(len(x), *shape)
    if not samples:
        yield start, {"mu": means, "logvar": logvars}
        return
    std = torch.exp(0.5 * logvar)
    step = max(1, batch_size // samples)
    for i in range(0, len(x), step):
        j = min(i + step, len(x))
        eps = torch.stack(
            [
                _example_noise(start + e, samples, model.latent_dim, seed, mu.device)
                for e in range(i, j)
            ]
        )  # (b, K, D): each example's draws seeded by its position alone
        z = mu[i:j, None] + std[i:j, None] * eps
        part = {"mu": means[i:j], "logvar": logvars[i:j]}
        yield start + i, {**part, "z": z.cpu().numpy().reshape(j - i, samples, *shape)}


def _labels(y: Any) -> torch.Tensor:
    """Labels y (a tensor, array or list of whole numbers) as a long tensor (N,)."""
    try:
        labels = torch.as_tensor(np.asarray(y) if isinstance(y, (list, tuple)) else y)
    except (TypeError, ValueError, RuntimeError, IndexError):
        labels = None
    if (
        labels is None
        or labels.dtype.is_floating_point
        or labels.dtype.is_complex
        or labels.dtype == torch.bool
    ):
        kind = type(y).__name__ if labels is None else str(labels.dtype)
        raise DataError(f"labels y must be whole numbers (a tensor, array or list); got {kind}")
    return labels.long().reshape(-1)
