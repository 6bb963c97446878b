"""`vaekit score` as a function: per example, the negative ELBO (nats) and its two terms,
and optionally the importance-weighted estimate of log p(x): the numbers `vaekit
evaluate` averages, one per example, for anomaly and out-of-distribution detection.

They are computed exactly as `evaluate` computes them (evaluation/likelihood.py): the
ELBO with one z-sample per example drawn from one generator seeded with `seed`, batch
after batch of `batch_size` examples (so the mean over a split equals `evaluate`'s nelbo
at the same batch size and seed), and log p(x) by `importance_sampling` with `seed + 1`
and each example's samples seeded by its position (so it equals `evaluate`'s log_px at
any batch size, up to float rounding). A higher -ELBO or a lower log p(x) is a less
likely example.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import records
from ..models import VAE
from ..progress import bar as progress_bar
from .encode import check_model, check_out, chunks, rows_of
from .evaluate import MAX_IW_SAMPLES, _check_counts
from .likelihood import DEFAULT_BUDGET, importance_sampling


def score(
    model: VAE,
    data: Any,
    y: Any = None,
    *,
    out: str | Path | None = None,
    split: str | None = None,
    iw_samples: int = 0,
    sort: bool = False,
    batch_size: int = 1000,
    seed: int = 0,
    budget: int = DEFAULT_BUDGET,
    precision: str = "fp32",
    progress: bool = False,
) -> dict[str, np.ndarray] | Path:
    """Per-example scores of `data` (as `encode.rows_of` takes it): a dict of numpy arrays,
    or, with `out`, the file written (.npy: one structured array; .npz; .parquet/.csv).

    Arrays (N,): nelbo, recon, kl (float64, nats); with `iw_samples` K, log_px and iw_ess
    (the effective sample size, 1..K: near 1, the estimate rests on one sample); id, and
    split, label, class and file where the data have them. `sort`: most anomalous first
    (highest -log p(x) with K, else highest nelbo). `budget` and `precision` are those of
    `likelihood.importance_sampling`.
    """
    rows = rows_of(model, data, y, split, progress)
    check_model(model, rows, "score")
    _check_counts(batch_size=(batch_size, 1), seed=(seed, 0), iw_samples=(iw_samples, 0))
    path = None if out is None else check_out(out, "scores.parquet")
    values = _scores(model, rows, iw_samples, batch_size, seed, budget, precision, progress)
    names = rows.names(0, len(rows))
    if sort:
        key = -values["log_px"] if iw_samples else values["nelbo"]
        order = np.argsort(-key, kind="stable")
        names = {k: v[order] for k, v in names.items()}
        values = {k: v[order] for k, v in values.items()}
    fields: dict[str, records.Field] = {k: ((), v.dtype) for k, v in values.items()}
    with records.Records(path, len(rows), names, fields) as written:
        written.write(0, values)
        return written.finish()


def _scores(
    model: VAE,
    rows: Any,
    k: int,
    batch_size: int,
    seed: int,
    budget: int,
    precision: str,
    progress: bool,
) -> dict[str, np.ndarray]:
    """nelbo, recon, kl (and log_px, iw_ess) of every example, a chunk at a time."""
    if k > MAX_IW_SAMPLES:
        raise ValueError(f"iw_samples {k} over {MAX_IW_SAMPLES}")  # _check_counts refuses it
    n = len(rows)
    names = ("nelbo", "recon", "kl", *(("log_px", "iw_ess") if k else ()))
    values = {name: np.empty(n, dtype=np.float64) for name in names}
    device = model.device
    g = torch.Generator(device=device).manual_seed(seed)  # as likelihood.elbo_stats draws
    was_training = model.training
    model.eval()
    bar = progress_bar(total=n, show=progress, unit="example", desc="score")
    try:
        for start, x, y in chunks(rows, model, batch_size):
            s = slice(start, start + len(x))
            with torch.inference_mode():  # no autograd records, no version counters
                terms, _ = model.elbo_terms(model.prepare(x), y, generator=g)
            values["nelbo"][s] = terms.nelbo.double().cpu().numpy()
            values["recon"][s] = terms.recon.double().cpu().numpy()
            values["kl"][s] = terms.kl.double().cpu().numpy()
            if k:
                iw = importance_sampling(
                    model, x, k, y, seed=seed + 1, budget=budget, precision=precision, first=start
                )
                values["log_px"][s] = iw.log_px.numpy()
                values["iw_ess"][s] = iw.ess.numpy()
            bar.update(len(x))
    finally:
        bar.close()
        model.train(was_training)
    return values
