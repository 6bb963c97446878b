"""`vaekit report RUN`: one self-contained HTML page with the numbers and pictures of a run.

Every image is embedded as a data: URI and the styles are inline, so the file opens
anywhere, offline, and can be mailed or archived on its own: no network, no CDN, no script.
"""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .. import templates, tracking
from ..diffusers.model import reference_of
from ..errors import ConfigError
from ..evaluation.summary import metrics_rows, number
from ..io import fileio
from ..io.card import describe_architecture, describe_latent
from ..models import VAE
from ..models.pretrained import resolve
from ..version import __version__
from . import figures

REPORT_FILE = "report.html"

# figure name -> (caption, drawn pixel by pixel); the manifold's depends on the model
CAPTIONS = {
    "samples": ("Prior samples: z ~ N(0, I) decoded to the mean of p(x|z).", True),
    "code_samples": (
        "Prior samples: code maps drawn cell by cell from the prior over the codes (a gated "
        "PixelCNN, vaekit train-prior), looked up in the codebook and decoded to the mean "
        "of p(x|z).",
        True,
    ),
    "reconstructions": (
        "Test images (top) and their reconstructions from the posterior mean (bottom).",
        True,
    ),
    "interpolation_linear": (
        "Linear interpolation between the posterior means of pairs of test images (one pair "
        "per row).",
        True,
    ),
    "interpolation_slerp": (
        "Spherical interpolation (slerp) between the same pairs: the path keeps to the "
        "prior's typical radius.",
        True,
    ),
    "kl": (
        "Mean KL per latent dimension over the test images; grey bars are inactive units, "
        "whose posterior stays at the prior.",
        False,
    ),
    "curves": (
        "Training curves from metrics.jsonl, per epoch: the training set (the mean over the "
        "epoch's minibatches) and the validation set (held out from the training data, "
        "which training selects on). The test set is only in the table above.",
        False,
    ),
}
ORDER = [
    "samples",
    "reconstructions",
    "interpolation_linear",
    "interpolation_slerp",
    "manifold",
    "latents",
    "kl",
]


def _manifold_caption(dims: int) -> str:
    if dims == 2:
        return (
            "The learned manifold: images decoded over a 20 x 20 grid of the 2-D latent space, "
            "coordinates spaced evenly in probability and mapped through the inverse Gaussian "
            "CDF (Kingma & Welling, Appendix A)."
        )
    return (
        f"The learned manifold over the two most active of {dims} latent dimensions (the "
        "others at 0), on a grid spaced evenly in probability and mapped through the "
        "inverse Gaussian CDF (Kingma & Welling, Appendix A)."
    )


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(name: str, png: bytes, caption: str, pixelated: bool = False) -> str:
    cls = ' class="px"' if pixelated else ""
    return (
        f'<figure id="fig-{html.escape(name)}"><img{cls} alt="{html.escape(name)}" '
        f'src="{_data_uri(png)}"><figcaption>{html.escape(caption)}</figcaption></figure>'
    )


def _table(rows: list[tuple[str, str, str]]) -> str:
    body = "".join(
        f"<tr><th>{html.escape(a)}</th><td class=num>{html.escape(b)}</td>"
        f"<td class=note>{html.escape(c)}</td></tr>"
        for a, b, c in rows
    )
    return f"<table>{body}</table>"


def _layer_columns(records: list[dict[str, Any]]) -> list[str]:
    """train_kl_1, val_kl_1, ... for the layers the records hold (kl_1: z_1)."""
    columns = []
    i = 1
    while any(f"val_kl_{i}" in r or f"train_kl_{i}" in r for r in records):
        columns += [f"train_kl_{i}", f"val_kl_{i}"]
        i += 1
    return columns


def _epoch_table(records: list[dict[str, Any]]) -> str:
    cols = [
        c
        for c in (
            "epoch",
            "train_nelbo",
            "val_nelbo",
            "test_nelbo",  # logs of older vaekit, whose training evaluated the test set
            "train_recon",
            "train_kl",
            "val_kl",
            "test_kl",
            "train_objective",  # a VQ-VAE's
            "val_objective",
            "train_vq",
            "val_perplexity",
            "train_mi",  # beta-TCVAE's terms (training/latent_objectives.py)
            "train_tc",  # and FactorVAE's discriminator estimate
            "train_dim_kl",
            "train_mmd",  # WAE-MMD's, InfoVAE's
            *_layer_columns(records),  # a hierarchical VAE's KL per layer
            "samples_per_s",
            "skipped_updates",
        )
        if any(c in r for r in records)
    ]
    if not records or not cols:
        return ""
    shown = records if len(records) <= 12 else records[:3] + records[-9:]
    head = "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in cols)
    rows = []
    for r in shown:
        cells = "".join(
            "<td class=num>"
            + (number(r[c]) if isinstance(r.get(c), (int, float)) else "")
            + "</td>"
            for c in cols
        )
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def build_report(
    run: str | Path,
    *,
    out_dir: str | Path | None = None,
    iw_samples: int = 100,
    max_test: int = 1000,
    seed: int = 0,
    batch_size: int = 1000,
    progress: bool = False,
    rfid: str | Any | None = None,
    lpips: str | Any | None = None,
    fid_weights: str | None = None,
    data: str | None = None,
    split: str = "test",
    image_size: int | None = None,
) -> Path:
    """Evaluate the run, write its pictures and RUN/report.html; returns the report's path.

    `iw_samples` (K of the log p(x) estimate, 0 to skip) and `max_test` (how many test
    images to evaluate) trade precision for time; the figures use the same images.
    `rfid`, `lpips` and `fid_weights`: as for `evaluate`; their numbers join the table.
    `data`, `split`, `image_size`: the examples, as `vaekit.loading.load_with_data` reads
    them (default: the test split of the data the run trained on).
    """
    from ..evaluation.evaluate import evaluate
    from ..loading import load_with_data

    run_dir, out = _folders(run, out_dir, iw_samples, max_test, batch_size)
    model, examples = load_with_data(
        run_dir, data, split=split, image_size=image_size, progress=progress
    )
    x = examples.x[:max_test]
    y = None if examples.y is None else examples.y[:max_test]
    started = time.perf_counter()
    stats = evaluate(
        model,
        x,
        y if model.conditional else None,
        batch_size=batch_size,
        seed=seed,
        iw_samples=iw_samples if model.has_density else 0,  # a VQ-VAE has no log p(x)
        progress=progress,
        rfid=rfid,
        lpips=lpips,
        fid_weights=fid_weights,
    )
    seconds = time.perf_counter() - started
    records = tracking.read_metrics(run_dir)
    written = _figures(out, model, x, y, examples.class_names, records, seed)
    page = render(run_dir.name, model, examples.dataset, stats, records, written, seed, seconds)
    path = out / REPORT_FILE
    fileio.write_text(path, page)
    return path


def _folders(
    run: str | Path, out_dir: str | Path | None, iw_samples: int, max_test: int, batch_size: int
) -> tuple[Path, Path]:
    """The run's folder and the report's, once the request is one a report can answer."""
    if iw_samples < 0 or max_test < 1 or batch_size < 1:
        raise ConfigError(
            f"report: --iw-samples must be >= 0 and --max-test, --batch-size "
            f">= 1; got {iw_samples}, {max_test}, {batch_size}"
        )
    if reference_of(run) is not None:  # no run: no curves, no configuration to report
        raise ConfigError(
            f"{run} is a diffusers AutoencoderKL, not a vaekit run: use `vaekit evaluate "
            f"{run} --data SOURCE` or `vaekit compare` for its numbers"
        )
    if out_dir is None and str(run).startswith("hf://"):
        raise ConfigError(f"{run} is a downloaded model: pass --out DIR for its report")
    run_dir = resolve(run)
    return run_dir, Path(out_dir) if out_dir is not None else run_dir


def _figures(
    out: Path,
    model: VAE,
    x: torch.Tensor,
    y: torch.Tensor | None,
    class_names: Sequence[str],
    records: list[dict[str, Any]],
    seed: int,
) -> dict[str, Path]:
    """The report's pictures, written to `out`: samples and reconstructions (none for a
    table), then the curves and latent figures; by their names in the page."""
    grids = figures.write_images(model, x, y, out, seed=seed)  # nothing for a table
    written = {name: out / f"{name}.png" for name in grids}  # none without a prior
    written.update(figures.write_all(out, model, x, y, class_names, records, seed=seed))
    return written


def _captions(model: VAE) -> dict[str, tuple[str, bool]]:
    """The figures' captions for this model (its manifold's and samples' depend on it)."""
    pca = " (PCA to 2-D)." if model.latent_dim > 2 else "."
    captions = dict(
        CAPTIONS,
        manifold=(_manifold_caption(model.latent_dim), True),
        latents=("Posterior means of test images, coloured by label" + pca, False),
    )
    if not model.has_density:  # a VQ-VAE's samples come from its prior over the codes
        captions["samples"] = CAPTIONS["code_samples"]
    return captions


def render(
    name: str,
    model: VAE,
    dataset: str,
    stats: dict[str, Any],
    records: list[dict[str, Any]],
    written: dict[str, Path],
    seed: int,
    seconds: float,
) -> str:
    """The report page (templates/report.html) from an evaluation and the written PNGs."""
    cfg = model.training_config()
    captions = _captions(model)
    pictures = "".join(
        _figure(key, written[key].read_bytes(), *captions[key]) for key in ORDER if key in written
    )
    if not model.is_table and "interpolation_linear" not in written:
        pictures += (
            "<p class=note>No interpolations: a path joins two test images; one was evaluated.</p>"
        )
    curves = (
        _figure("curves", written["curves"].read_bytes(), *captions["curves"])
        if "curves" in written
        else "<p class=note>No metrics.jsonl in this run.</p>"
    )
    k = stats.get("iw_samples")
    iw_note = (
        f"log p(x) estimated with K = {k} importance samples per image"
        if k
        else "no importance-weighted estimate (--iw-samples 0)"
    )
    if "no_density" in stats:  # a VQ-VAE
        iw_note = str(stats["no_density"])
    title = f"vaekit report: {name}"
    return templates.render(
        "report.html",
        title=html.escape(title),
        subtitle=html.escape(
            f"{cfg.name} on {dataset}: a VAE of {describe_architecture(model.architecture())}, "
            f"{describe_latent(model.architecture())}, {model.likelihood} likelihood."
        ),
        written=time.strftime("%Y-%m-%d %H:%M"),
        version=__version__,
        metrics=_table(metrics_rows(stats)),
        evaluation_note=html.escape(
            f"{stats.get('n', '?')} images of the test set of {dataset}, seed {seed}; "
            f"{iw_note}; evaluated by this report in "
            f"{seconds:.1f} s."
        ),
        curves=curves,
        epochs=_epoch_table(records),
        pictures=pictures,
        configuration=html.escape(cfg.to_yaml()),
    )
