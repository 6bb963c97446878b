"""Disentanglement metrics: how one-to-one a code's latents are with known generative factors.

- **MIG** (Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs"): each latent is
  discretised into equal-width bins, the mutual information I(z_j; v_k) between every
  latent and every factor is computed from their joint histogram (nats), and for each factor
  the gap between its two most informative latents is divided by the factor's entropy
  H(v_k); MIG is the mean over factors. 1 when each factor is copied into one latent and
  the others know nothing of it; near 0 when two latents share a factor or none holds it.
- **DCI** (Eastwood & Williams 2018, "A Framework for the Quantitative Evaluation of
  Disentangled Representations"): a predictor of each factor from all latents gives an
  importance R_jk of latent j for factor k. Disentanglement is 1 - the entropy (base K) of
  each latent's importance spread over the factors, averaged with weights by the latent's
  share of all importance; completeness is 1 - the entropy (base D) of each factor's
  importance spread over the latents, weighted alike; informativeness is the predictors'
  accuracy on held-out examples.

Why written here: no library in vaekit's environment computes them. torchmetrics has
none of them; disentanglement_lib (Google, TensorFlow 1, archived) is not installable
beside torch 2.13; scikit-learn (whose gradient-boosted trees disentanglement_lib's DCI
uses for the importances) installs from the registry but with scipy, a large dependency for
one metric. So the predictor here is a small gradient-boosted ensemble of depth-1 trees
(stumps) with squared loss on the one-hot factor, written in numpy: like scikit-learn's
trees, its importance of a latent is the total squared-error reduction of the splits on it,
and it is invariant to monotone transforms of each latent (it splits on quantile bins).

Factors are the indices of a discrete grid (as `scripts/make_shapes.py --factors` records
them in factors.csv; a column with more than `bins` distinct values is binned like a
latent). Latents are the posterior means, (N, D). `of_run(model, folder)` scores a trained
model on such a folder (`vaekit evaluate RUN --data FOLDER --disentanglement`).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError, DataError
from ..models import VAE

BINS = 20  # MIG's histogram bins per latent, as in Chen et al.'s and Locatello et al.'s code


def _check(latents: Any, factors: Any) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(latents, dtype=np.float64)
    v = np.asarray(factors)
    if z.ndim != 2 or v.ndim != 2 or len(z) != len(v) or len(z) < 2:
        raise DataError(
            f"latents {z.shape} and factors {v.shape}: give (N, D) latents and (N, K) factors "
            "for the same N >= 2 examples"
        )
    if not np.isfinite(z).all():
        raise DataError("latents: some values are NaN or infinite; encode finite data")
    return z, v


def discretize(values: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Each column of (N, D) `values` as integer codes: equal-width bins between its
    minimum and maximum, or its distinct values' ranks when it has at most `bins` of them."""
    codes = np.empty(values.shape, dtype=np.int64)
    for j in range(values.shape[1]):
        column = values[:, j]
        distinct, inverse = np.unique(column, return_inverse=True)
        if len(distinct) <= bins:
            codes[:, j] = inverse.reshape(-1)
        else:
            edges = np.histogram_bin_edges(column.astype(np.float64), bins)
            codes[:, j] = np.digitize(column, edges[1:-1])
    return codes


def entropy(codes: np.ndarray) -> float:
    """H of integer codes (N,) in nats."""
    p = np.bincount(codes) / len(codes)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """I(a; b) in nats of two integer code arrays (N,), from their joint histogram."""
    na, nb = int(a.max()) + 1, int(b.max()) + 1
    table = np.bincount(a * nb + b, minlength=na * nb).reshape(na, nb) / len(a)  # (A, B)
    pa, pb = table.sum(axis=1), table.sum(axis=0)
    ia, ib = np.nonzero(table)
    p = table[ia, ib]
    return float((p * np.log(p / (pa[ia] * pb[ib]))).sum())


def mig(
    latents: Any, factors: Any, names: list[str] | None = None, bins: int = BINS
) -> dict[str, Any]:
    """The mutual information gap of (N, D) latents for (N, K) factors: {"mig": the mean
    over factors, "per_factor": {name: gap / H(factor)}, "mutual_information": (D, K)}."""
    z, v = _check(latents, factors)
    if z.shape[1] < 2:
        raise DataError("MIG needs at least 2 latent dimensions (the gap is between two)")
    names = names or [f"factor {k}" for k in range(v.shape[1])]
    zc, vc = discretize(z, bins), discretize(v, bins)
    info = np.array(
        [
            [mutual_information(zc[:, j], vc[:, k]) for k in range(v.shape[1])]
            for j in range(z.shape[1])
        ]
    )  # (D, K)
    per_factor = {}
    for k, name in enumerate(names):
        h = entropy(vc[:, k])
        if h <= 0:
            raise DataError(f"factor {name!r} takes one value; drop it or vary it")
        top = np.sort(info[:, k])[::-1]
        per_factor[name] = float((top[0] - top[1]) / h)
    return {
        "mig": float(np.mean(list(per_factor.values()))),
        "per_factor": per_factor,
        "mutual_information": info,
    }


def dci_scores(importance: Any) -> tuple[float, float]:
    """(disentanglement, completeness) of a (D latents, K factors) importance matrix >= 0."""
    r = np.asarray(importance, dtype=np.float64)
    total = r.sum()
    if total <= 0:
        return 0.0, 0.0

    def weighted_score(m: np.ndarray) -> float:  # rows are the units scored, columns spread
        mass = m.sum(axis=1)
        keep = mass > 0
        if m.shape[1] == 1:
            return 1.0
        p = m[keep] / mass[keep, None]
        logs = np.log(np.where(p > 0, p, 1.0)) / np.log(m.shape[1])
        score = 1.0 + (p * logs).sum(axis=1)  # 1 - H_base(p)
        return float((score * mass[keep]).sum() / total)

    return weighted_score(r), weighted_score(r.T)


def _quantile_codes(z: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    return np.stack(
        [np.searchsorted(edges[j], z[:, j], side="right") for j in range(len(edges))], 1
    )


class Stumps:
    """Gradient-boosted depth-1 trees, squared loss, on a multi-output target (N, K): each
    round splits one latent at one of its quantile bins, both leaves predict the residuals'
    mean. `importance` (D,) sums each latent's squared-error reductions."""

    def __init__(self, rounds: int = 100, rate: float = 0.2, bins: int = 32) -> None:
        self.rounds, self.rate, self.bins = rounds, rate, bins

    def fit(self, z: np.ndarray, y: np.ndarray) -> Stumps:
        n, d = z.shape
        qs = np.linspace(0, 1, self.bins + 1)[1:-1]
        self.edges = [np.unique(np.quantile(z[:, j], qs)) for j in range(d)]  # <= bins-1 each
        codes = _quantile_codes(z, self.edges)  # (N, D) in 0..bins-1
        width = self.bins
        onehot = np.zeros((n, d * width))
        onehot[np.arange(n)[:, None], np.arange(d) * width + codes] = 1.0
        counts = onehot.sum(axis=0).reshape(d, width).cumsum(axis=1)  # (D, T) left counts
        self.base = y.mean(axis=0)
        residual = y - self.base
        self.splits: list[tuple[int, int, np.ndarray, np.ndarray]] = []
        self.importance = np.zeros(d)
        for _ in range(self.rounds):
            sums = (onehot.T @ residual).reshape(d, width, -1).cumsum(axis=1)  # (D, T, K)
            total = sums[:, -1:, :]
            nl, nr = counts[:, :-1], n - counts[:, :-1]
            with np.errstate(divide="ignore", invalid="ignore"):
                gain = (sums[:, :-1] ** 2).sum(-1) / nl + ((total - sums[:, :-1]) ** 2).sum(-1) / nr
            gain = np.where((nl > 0) & (nr > 0), gain - (total[:, 0] ** 2).sum(-1)[:, None] / n, 0)
            j, t = np.unravel_index(np.argmax(gain), gain.shape)
            if gain[j, t] <= 1e-12:
                break
            left = codes[:, j] <= t
            lv, rv = residual[left].mean(axis=0), residual[~left].mean(axis=0)
            residual -= self.rate * np.where(left[:, None], lv, rv)
            self.importance[j] += gain[j, t]
            self.splits.append((int(j), int(t), self.rate * lv, self.rate * rv))
        return self

    def predict(self, z: np.ndarray) -> np.ndarray:
        codes = _quantile_codes(z, self.edges)
        out = np.tile(self.base, (len(z), 1))
        for j, t, lv, rv in self.splits:
            out += np.where((codes[:, j] <= t)[:, None], lv, rv)
        return out


def dci(
    latents: Any,
    factors: Any,
    names: list[str] | None = None,
    test_fraction: float = 0.25,
    seed: int = 0,
    rounds: int = 100,
) -> dict[str, Any]:
    """DCI of (N, D) latents for (N, K) factors: {"disentanglement", "completeness",
    "informativeness" (mean held-out accuracy), "per_factor": {name: accuracy},
    "importance": (D, K), each factor's column summing to 1}."""
    z, v = _check(latents, factors)
    names = names or [f"factor {k}" for k in range(v.shape[1])]
    vc = discretize(v, BINS)
    order = np.random.default_rng(seed).permutation(len(z))
    n_test = max(1, int(round(len(z) * test_fraction)))
    test, train = order[:n_test], order[n_test:]
    if len(train) < 2:
        raise DataError(f"DCI needs more examples than {len(z)} (a quarter is held out)")
    importance = np.zeros((z.shape[1], v.shape[1]))
    accuracy = {}
    for k, name in enumerate(names):
        classes = vc[:, k].max() + 1
        onehot = np.eye(classes)[vc[train, k]]  # (N, classes)
        model = Stumps(rounds).fit(z[train], onehot)
        share = model.importance.sum()
        importance[:, k] = model.importance / share if share > 0 else 0.0
        accuracy[name] = float((model.predict(z[test]).argmax(1) == vc[test, k]).mean())
    d, c = dci_scores(importance)
    return {
        "disentanglement": d,
        "completeness": c,
        "informativeness": float(np.mean(list(accuracy.values()))),
        "per_factor": accuracy,
        "importance": importance,
    }


def read_factors(folder: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """(factor names, image paths relative to `folder`, (N, K) int64 factors) of a factor set:
    FOLDER/factors.csv, a header `file,NAME,...` and one row of whole numbers per image."""
    path = Path(folder) / "factors.csv"
    if not path.is_file():
        raise DataError(
            f"{path} not found: --disentanglement needs a folder with recorded factors; "
            "write one with `python scripts/make_shapes.py OUT --factors`"
        )
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [row for row in csv.reader(f) if row]
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable CSV file ({e})") from None
    if len(rows) < 3 or rows[0][:1] != ["file"] or len(rows[0]) < 2:
        raise DataError(f"{path}: expected a header `file,FACTOR,...` and 2 or more rows")
    if any(len(row) != len(rows[0]) for row in rows):
        raise DataError(f"{path}: some rows do not have one value per factor")
    try:
        values = np.array([[int(v) for v in row[1:]] for row in rows[1:]], dtype=np.int64)
    except (ValueError, OverflowError):
        raise DataError(f"{path}: every factor must be a whole number (a grid index)") from None
    root = Path(folder).resolve()
    for row in rows[1:]:
        if not (root / row[0]).resolve().is_relative_to(root):
            raise DataError(f"{path}: {row[0]!r} is outside the folder; name images inside it")
    return rows[0][1:], [row[0] for row in rows[1:]], values


def _images(folder: Path, files: list[str], shape: tuple[int, ...]) -> torch.Tensor:
    """The images as uint8 (N, C, H, W), at the model's input shape."""
    c, h, w = shape
    mode = {1: "L", 3: "RGB"}.get(c)
    if mode is None:
        raise ConfigError(f"the model takes {c}-channel inputs; factor sets are images (1 or 3)")
    out = np.empty((len(files), h, w, c), dtype=np.uint8)
    for i, name in enumerate(files):
        try:
            with Image.open(folder / name) as im:
                image = im.convert(mode)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise DataError(f"{folder / name}: cannot read the image ({e})") from None
        if image.size != (w, h):
            raise DataError(
                f"{folder / name} is {image.size[0]}x{image.size[1]} but the model takes "
                f"{w}x{h}; write the factor set with --size {w}"
            )
        out[i] = np.asarray(image).reshape(h, w, c)
    return torch.from_numpy(out).permute(0, 3, 1, 2)


@torch.inference_mode()
def posterior_means(model: VAE, x: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """mu of q(z|x) for each example of x (user's units), flattened to (N, D)."""
    if model.conditional:
        raise ConfigError("--disentanglement scores unconditional models; this one is conditional")
    means = [
        model.posterior(model.prepare(x[i : i + batch_size]), None)[0].float().cpu().numpy()
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(means).reshape(len(x), -1)


def of_run(model: VAE, folder: str | Path, seed: int = 0, batch_size: int = 500) -> dict[str, Any]:
    """MIG and DCI of `model`'s posterior means on every image of a factor set `folder`:
    {"images", "factors", "mig", "dci_disentanglement", "dci_completeness",
    "dci_informativeness", "mig_per_factor", "informativeness_per_factor"}."""
    names, files, factors = read_factors(folder)
    z = posterior_means(model, _images(Path(folder), files, model.input_shape), batch_size)
    gap, scores = mig(z, factors, names), dci(z, factors, names, seed=seed)
    return {
        "images": len(files),
        "factors": names,
        "mig": gap["mig"],
        "dci_disentanglement": scores["disentanglement"],
        "dci_completeness": scores["completeness"],
        "dci_informativeness": scores["informativeness"],
        "mig_per_factor": gap["per_factor"],
        "informativeness_per_factor": scores["per_factor"],
    }


def summary_line(stats: dict[str, Any]) -> str:
    """One line of of_run's numbers, for the CLI."""
    return (
        f"disentanglement ({stats['images']} images, factors {', '.join(stats['factors'])}): "
        f"MIG {stats['mig']:.3f}, DCI disentanglement {stats['dci_disentanglement']:.3f}, "
        f"completeness {stats['dci_completeness']:.3f}, "
        f"informativeness {stats['dci_informativeness']:.3f}"
    )
