"""The pictures of a trained model: manifold, interpolations, latent scatter, curves, KL.

Each function returns a tensor of images, a PIL image or a matplotlib figure; `write_all`
writes them as PNGs into the run directory (atomically, through fileio). Charts come
from `charts`, grids from `grid`, so this module only decides what to draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from ..data.core.dataset import to_float
from ..errors import ConfigError
from ..evaluation import metrics
from ..io import fileio
from ..models import VAE
from . import charts, grid
from .charts import bar_chart, line_chart, scatter_plot

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "FILES",
    "bar_chart",
    "interpolation",
    "kl_chart",
    "latent_scatter",
    "line_chart",
    "manifold",
    "manifold_latents",
    "most_active_dims",
    "pca_2d",
    "save_png",
    "scatter_plot",
    "training_curves",
    "write_all",
]

# what `write_all` writes into a run directory, by figure name
FILES = {
    "interpolation_linear": "interpolation_linear.png",
    "interpolation_slerp": "interpolation_slerp.png",
    "manifold": "manifold.png",
    "latents": "latents.png",
    "curves": "curves.png",
    "kl": "kl.png",
}


def save_png(path: str | Path, image: Image.Image | Figure) -> Path:
    """Write a PIL image or a matplotlib figure as a PNG, atomically."""
    png = grid.png_bytes(image) if isinstance(image, Image.Image) else charts.png_bytes(image)
    fileio.write_bytes(path, png)
    return Path(path)


def _labels(model: VAE, y: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """Labels to condition on: the given ones, or class 0 for a conditional model."""
    if not model.conditional:
        return None
    if y is None:
        return torch.zeros(n, dtype=torch.long, device=model.device)
    return y.to(model.device)


def most_active_dims(
    model: VAE, x: torch.Tensor, k: int = 2, y: torch.Tensor | None = None
) -> list[int]:
    """The k latent dimensions with the largest KL over x (a model whose KL does not split
    by dimension: the largest activity, Cov_x E_q[z_d]), most active first."""
    if model.closed_form_kl:
        kl = metrics.kl_per_dimension(model, x, y)
    else:
        kl = metrics.active_units(model, x, y).activity
    order = torch.argsort(kl, descending=True, stable=True)
    return [int(i) for i in order[:k]]


def manifold_latents(n: int, latent_dim: int, dims: Sequence[int] = (0, 1)) -> torch.Tensor:
    """The latent grid of Kingma & Welling's Appendix A: (n*n, latent_dim).

    Linearly spaced coordinates of the unit square, (i + 0.5) / n, go through the inverse
    Gaussian CDF, so that each cell covers the same prior mass. Columns vary dims[0] from
    low to high (left to right), rows vary dims[1] from high to low (top to bottom, as a
    y axis reads); every other dimension stays at 0, the prior's mode.
    """
    a, b = dims
    p = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    values = torch.distributions.Normal(0.0, 1.0).icdf(p).float()  # (n,) increasing
    z = torch.zeros(n, n, latent_dim)
    z[:, :, a] = values.view(1, n)
    z[:, :, b] = values.flip(0).view(n, 1)
    return z.view(n * n, latent_dim)


@torch.no_grad()
def manifold(
    model: VAE,
    n: int = 20,
    dims: Sequence[int] | None = None,
    x: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
) -> torch.Tensor:
    """The learned data manifold: images decoded over an n x n latent grid, (n*n, C, H, W).

    A 2-D latent space is drawn whole. With more dimensions, `dims` names the two to vary;
    without it they are the two most active over the images x. Tile the result with
    `grid.make_grid(images, nrow=n)`.
    """
    if dims is None:
        if model.latent_dim == 1:
            raise ConfigError("a manifold needs a latent space of at least 2 dimensions")
        if model.latent_dim == 2:
            dims = (0, 1)
        elif x is None:
            raise ConfigError(
                "with more than 2 latent dimensions, pass dims or images x to "
                "pick the two most active dimensions from"
            )
        else:
            dims = most_active_dims(model, x, 2, y)
    if len(dims) != 2 or len(set(dims)) != 2 or not all(0 <= d < model.latent_dim for d in dims):
        raise ConfigError(
            f"dims must be two different latent dimensions in "
            f"[0, {model.latent_dim}); got {list(dims)}"
        )
    z = manifold_latents(n, model.latent_dim, dims).to(model.device)
    return model.decode_images(z, _labels(model, None, z.shape[0])).cpu()


@torch.no_grad()
def interpolation(
    model: VAE,
    x: torch.Tensor,
    pairs: int = 4,
    steps: int = 10,
    method: str = "linear",
    seed: int = 0,
    y: torch.Tensor | None = None,
) -> torch.Tensor:
    """Paths between the posterior means of random pairs of images: (pairs*steps, C, H, W).

    The pairs are drawn with `seed`, so linear and spherical paths join the same images.
    """
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(x.shape[0], generator=g)[: 2 * pairs]
    pairs = idx.numel() // 2
    if pairs < 1:
        raise ConfigError("interpolation needs at least two images")
    a, b = idx[:pairs], idx[pairs : 2 * pairs]
    xf = to_float(x[idx].to(model.device))
    ya = yb = None
    if model.conditional:
        ya, yb = (
            _labels(model, None if y is None else y[a], pairs),
            _labels(model, None if y is None else y[b], pairs),
        )
    path = model.interpolate(xf[:pairs], xf[pairs : 2 * pairs], steps, method, ya, yb)
    return path.flatten(0, 1).cpu()  # (P*steps, C, H, W)


def pca_2d(z: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """Project (N, D) onto its two principal axes: (N, 2) and the variance share of each."""
    z = z.double()
    if z.shape[1] <= 2:
        pad = torch.zeros(z.shape[0], 2 - z.shape[1], dtype=z.dtype)
        return torch.cat([z, pad], 1).float(), [1.0, 0.0][:2]
    if z.shape[0] < 2:  # one point has no principal axes: it sits at the origin
        return torch.zeros(z.shape[0], 2), [0.0, 0.0]
    centred = z - z.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    var = s.pow(2)
    share = (var[:2] / var.sum().clamp_min(1e-12)).tolist()
    # fix each axis's sign so the picture does not flip between runs of the same model
    axes = vh[:2]
    signs = torch.sign(axes[torch.arange(2), axes.abs().argmax(1)])
    return (centred @ (axes * signs.unsqueeze(1)).T).float(), share


def latent_scatter(
    model: VAE, x: torch.Tensor, y: torch.Tensor | None = None, class_names: Sequence[str] = ()
) -> Figure:
    """Posterior means of x coloured by label; PCA to 2-D when the latent has more dims."""
    mu, _ = metrics.posterior(model, x, y)
    if model.latent_dim > 2:
        points, share = pca_2d(mu)
        title = f"posterior means of {len(mu)} test images (PCA of {model.latent_dim} dims)"
        xlabel = f"principal component 1 ({share[0]:.0%} of variance)"
        ylabel = f"principal component 2 ({share[1]:.0%})"
    else:
        points = pca_2d(mu)[0] if model.latent_dim == 1 else mu
        title = f"posterior means of {len(mu)} test images"
        xlabel, ylabel = "z1", ("z2" if model.latent_dim == 2 else "(1-D latent)")
    groups = None if y is None else [int(v) for v in y[: len(mu)]]
    names = list(class_names) or ([str(i) for i in range(max(groups) + 1)] if groups else [])
    return scatter_plot(points.tolist(), groups, names, title, xlabel, ylabel)


def _series(records: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    out = []
    for i, r in enumerate(records):
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out.append((float(r.get("epoch", i + 1)), float(v)))
    return out


# metrics.jsonl's key prefix -> the split's name in the legend
CURVE_SPLITS = {"train": "train", "val": "validation", "test": "test (old log)"}


def training_curves(records: list[dict[str, Any]]) -> Figure | None:
    """Negative ELBO, reconstruction and KL per epoch, training and validation sets side
    by side (and the test set in logs of older vaekit, whose training evaluated it).

    `records` are metrics.jsonl lines (`tracking.read_metrics`); None when they hold no
    curve to draw.
    """
    panels = []
    for term, title in (
        ("nelbo", "negative ELBO"),
        ("recon", "reconstruction -log p(x|z)"),
        ("kl", "KL(q(z|x) || p(z))"),
        ("objective", "VQ-VAE objective"),  # a VQ-VAE's records
        ("vq", "codebook + beta x commitment"),
    ):
        series = {
            label: pts
            for key, label in CURVE_SPLITS.items()
            if (pts := _series(records, f"{key}_{term}"))
        }
        if series:
            panels.append((series, title))
    if not panels:
        return None
    fig = charts.new_figure(len(panels), (480, 340))
    for ax, (series, title) in zip(fig.axes, panels, strict=True):
        charts.draw_lines(ax, series, title, "epoch", "nats per example")
    return fig


def kl_chart(
    model: VAE, x: torch.Tensor, y: torch.Tensor | None = None, threshold: float = 0.01
) -> Figure:
    """A bar per latent dimension: its mean KL over x; inactive units (Burda et al. 2015:
    Cov_x(E_q[z_d|x]) <= threshold) in grey."""
    if not model.has_density:
        raise ConfigError(
            "a VQ-VAE's posterior is a point mass on its codes: it has no KL per dimension "
            "(evaluate reports its codebook's perplexity and usage)"
        )
    if not model.closed_form_kl:
        raise ConfigError(f"this model has no KL per latent dimension: {model.no_kl_per_dim}")
    kl = metrics.kl_per_dimension(model, x, y).tolist()
    units = metrics.active_units(model, x, y, threshold=threshold)
    active = (units.activity > threshold).tolist()
    title = f"KL per latent dimension (blue: active units, {units.count} of {len(kl)})"
    return bar_chart(kl, title, "latent dimension", "KL (nats per example)", highlight=active)


def write_all(
    run_dir: str | Path,
    model: VAE,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    class_names: Sequence[str] = (),
    records: list[dict[str, Any]] | None = None,
    seed: int = 0,
    n_manifold: int = 20,
) -> dict[str, Path]:
    """Write every figure this module draws into run_dir; returns {figure name: path}.

    x, y: test images (uint8 or [0, 1] floats) and labels, used for interpolations, the
    scatter, the KL bars and the choice of the manifold's two dimensions.
    """
    run_dir = Path(run_dir)
    scale = grid.auto_scale(model.input_shape[1])
    written: dict[str, Path] = {}

    def tiles(images: torch.Tensor, nrow: int) -> Image.Image:
        return grid.to_pil(grid.make_grid(images, nrow=nrow), scale)

    # a path joins two images: none for a table, nor from a single image
    for method in () if model.is_table or x.shape[0] < 2 else ("linear", "slerp"):
        name = f"interpolation_{method}"
        images = interpolation(model, x, method=method, seed=seed, y=y)
        written[name] = save_png(run_dir / FILES[name], tiles(images, 10))
    if model.latent_dim >= 2 and not model.is_table and model.has_density:
        images = manifold(model, n_manifold, x=x, y=y)
        written["manifold"] = save_png(
            run_dir / FILES["manifold"], grid.to_pil(grid.make_grid(images, nrow=n_manifold))
        )
    written["latents"] = save_png(
        run_dir / FILES["latents"], latent_scatter(model, x, y, class_names)
    )
    curves = training_curves(records or [])
    if curves is not None:
        written["curves"] = save_png(run_dir / FILES["curves"], curves)
    if model.has_density and model.closed_form_kl:  # a VQ-VAE has no KL; a VampPrior's
        written["kl"] = save_png(run_dir / FILES["kl"], kl_chart(model, x, y))
    return written


@torch.no_grad()
def write_images(
    model: VAE,
    x: torch.Tensor,
    y: torch.Tensor | None,
    run_dir: Path | None,
    seed: int = 0,
    n: int = 64,
) -> dict[str, Any]:
    """samples.png (prior samples) and reconstructions.png (the first 8 of `x` above, their
    reconstructions below) in `run_dir` (None: the grids only, for trackers); nothing for a
    table (examples of 1x1 "pixels" make no picture). The caller picks the images:
    training passes validation images, `vaekit report` test images, so each says which
    split it shows."""
    if model.is_table:
        return {}
    model.eval()
    device = model.device
    g = torch.Generator(device=device).manual_seed(seed)
    labels = None
    if model.conditional:
        labels = torch.arange(n, device=device) % max(1, model.num_classes)
    k = min(8, x.shape[0])
    xk = to_float(x[:k].to(device))
    yk = y[:k].to(device) if model.conditional and y is not None else None
    recon = model.reconstruct(xk, yk)
    scale = grid.auto_scale(model.input_shape[1])
    grids = {"reconstructions": grid.make_grid(torch.cat([xk, recon]), nrow=k)}
    if model.has_prior:  # a VQ-VAE without a prior over its codes has no samples
        grids["samples"] = grid.make_grid(model.sample(n, labels, generator=g), nrow=8)
    if run_dir is not None:
        for name, image in grids.items():
            fileio.write_bytes(run_dir / f"{name}.png", grid.png_bytes(grid.to_pil(image, scale)))
    return grids
