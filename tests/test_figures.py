"""The pictures: what each one draws, checked on tiny models and on the pixels themselves."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vaekit
from conftest import assert_clean_error, run_cli, tiny_config
from vaekit.cli import main
from vaekit.config import ModelConfig
from vaekit.errors import ConfigError
from vaekit.io import fileio
from vaekit.models import VAE
from vaekit.normalize import Normalization
from vaekit.viz import charts, figures


def tiny_vae(latent_dim: int = 5, conditional: bool = False) -> VAE:
    cfg = ModelConfig(hidden=[16], latent_dim=latent_dim, conditional=conditional)
    return VAE.from_config(cfg, (1, 8, 8), num_classes=3 if conditional else 0).eval()


def images(n: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)


def colour_pixels(image: Image.Image, colour: tuple[int, int, int], tol: int = 40) -> np.ndarray:
    """(row, col) of every pixel within `tol` of `colour`."""
    a = np.asarray(image.convert("RGB")).astype(int)
    return np.argwhere(np.abs(a - np.array(colour)).sum(-1) < tol)


# -- the manifold of Appendix A --------------------------------------------------------------
def test_manifold_latents_follow_the_inverse_gaussian_cdf() -> None:
    n = 4
    z = figures.manifold_latents(n, 5, dims=(3, 1)).view(n, n, 5)  # (row, col, D)
    expected = [
        torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor((i + 0.5) / n)).item()
        for i in range(n)
    ]
    assert z[0, :, 3].tolist() == pytest.approx(expected, abs=1e-6)  # left to right: rising
    assert z[:, 0, 1].tolist() == pytest.approx(expected[::-1], abs=1e-6)  # top row highest
    assert torch.all(z[:, :, [0, 2, 4]] == 0)  # every other dimension at the prior's mode
    assert expected[0] == pytest.approx(-expected[-1]) and expected[0] < -1.1


def test_manifold_varies_the_two_most_active_dimensions() -> None:
    model = tiny_vae(latent_dim=5)
    with torch.no_grad():  # a posterior that ignores x: KL decided by the biases alone
        model.mu_head.weight.zero_()
        model.logvar_head.weight.zero_()
        model.logvar_head.bias.zero_()
        model.mu_head.bias.copy_(torch.tensor([0.1, 1.5, 0.0, 3.0, 0.5]))
    x = images()
    assert figures.most_active_dims(model, x, 2) == [3, 1]
    grid = figures.manifold(model, n=3, x=x)
    z = figures.manifold_latents(3, 5, (3, 1))
    assert torch.allclose(grid, model.mean(model.decode(z)))
    other = model.mean(model.decode(figures.manifold_latents(3, 5, (0, 2))))
    assert not torch.allclose(grid, other)
    assert grid.shape == (9, 1, 8, 8)


def test_manifold_is_in_the_users_units() -> None:
    model = VAE.from_config(
        ModelConfig(hidden=[16], latent_dim=2, likelihood="gaussian"), (1, 8, 8)
    )
    model.eval().set_normalization(Normalization("standardize", (0.5,), (0.1,), bounded=False))
    z = figures.manifold_latents(3, 2)
    expected = model.mean(model.decode(z)) * 0.1 + 0.5
    assert torch.allclose(figures.manifold(model, n=3), expected)


def test_manifold_of_a_2d_latent_space_needs_no_data_and_bad_dims_are_refused() -> None:
    model = tiny_vae(latent_dim=2)
    assert figures.manifold(model, n=5).shape == (25, 1, 8, 8)
    with pytest.raises(ConfigError, match="pass dims or images"):
        figures.manifold(tiny_vae(latent_dim=4), n=3)
    with pytest.raises(ConfigError, match="two different latent dimensions"):
        figures.manifold(tiny_vae(latent_dim=4), n=3, dims=(1, 1))


def test_conditional_models_draw_every_figure(tmp_path: Path) -> None:
    model = tiny_vae(latent_dim=3, conditional=True)
    x, y = images(10), torch.arange(10) % 3
    written = figures.write_all(tmp_path, model, x, y, ["a", "b", "c"], n_manifold=4)
    assert set(written) == set(figures.FILES) - {"curves"}  # no metrics were given


# -- interpolation --------------------------------------------------------------------------
def test_linear_and_spherical_paths_join_the_same_images() -> None:
    model = tiny_vae(latent_dim=5)
    x = images(8)
    lin = figures.interpolation(model, x, pairs=3, steps=6, method="linear", seed=1)
    sph = figures.interpolation(model, x, pairs=3, steps=6, method="slerp", seed=1)
    assert lin.shape == sph.shape == (18, 1, 8, 8)
    lin, sph = lin.view(3, 6, -1), sph.view(3, 6, -1)
    assert torch.allclose(lin[:, [0, -1]], sph[:, [0, -1]], atol=1e-5)  # same endpoints
    assert not torch.allclose(lin[:, 2:4], sph[:, 2:4], atol=1e-4)  # different paths


@pytest.mark.parametrize("n", [2, 3, 5])
def test_an_odd_image_count_pairs_all_but_one(n: int) -> None:
    paths = figures.interpolation(tiny_vae(latent_dim=3), images(n), pairs=4, steps=2)
    assert paths.shape == (n // 2 * 2, 1, 8, 8)


def test_one_image_draws_every_figure_but_the_interpolations(tmp_path: Path) -> None:
    written = figures.write_all(tmp_path, tiny_vae(latent_dim=3), images(1), n_manifold=2)
    assert set(written) == set(figures.FILES) - {
        "curves",
        "interpolation_linear",
        "interpolation_slerp",
    }


# -- latent scatter -------------------------------------------------------------------------
def test_pca_2d_finds_the_axis_of_largest_variance() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(500, 6, generator=g) * 0.1
    z[:, 4] += torch.randn(500, generator=g) * 5.0  # nearly all variance on dimension 4
    points, share = figures.pca_2d(z)
    assert points.shape == (500, 2)
    assert share[0] > 0.95 and share[0] + share[1] <= 1.0 + 1e-9
    corr = torch.corrcoef(torch.stack([points[:, 0], z[:, 4]]))[0, 1]
    assert abs(float(corr)) > 0.99


def rendered(fig: object) -> Image.Image:
    import io

    return Image.open(io.BytesIO(charts.png_bytes(fig)))  # type: ignore[arg-type]


def test_scatter_colours_each_group_where_its_points_are() -> None:
    points = (
        [(-1.0 + 0.01 * i, 0.0) for i in range(30)]
        + [(1.0 - 0.01 * i, 0.0) for i in range(30)]
        + [(math.nan, 0.0)]
    )
    groups = [0] * 30 + [1] * 30 + [1]
    fig = charts.scatter_plot(points, groups, ["left", "right"], "t", "x", "y")
    ax = fig.axes[0]
    for g, collection in enumerate(ax.collections):
        offsets = np.asarray(collection.get_offsets())
        assert len(offsets) == 30  # the NaN point is left out
        assert (offsets[:, 0] < 0).all() if g == 0 else (offsets[:, 0] > 0).all()
        rgb = tuple(round(c * 255) for c in collection.get_facecolor()[0][:3])
        assert rgb == charts.PALETTE[g]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["left", "right"]
    image = rendered(fig)
    assert image.size == (charts.WIDTH, 480)
    for g in (0, 1):
        assert len(colour_pixels(image, charts.PALETTE[g], tol=120)) > 50


def test_line_chart_draws_each_series_in_order_and_skips_non_finite_points() -> None:
    up = [(float(i), float(i * i)) for i in range(1, 8)] + [(8.0, math.nan)]
    down = [(float(i), 50.0 - i) for i in range(8, 0, -1)]  # unsorted: drawn by x
    fig = figures.line_chart({"up": up, "down": down}, "title", "epoch", "nats")
    ax = fig.axes[0]
    (line_up, line_down) = ax.lines
    assert line_up.get_xydata().tolist() == [[float(i), float(i * i)] for i in range(1, 8)]
    assert line_down.get_xdata().tolist() == [float(i) for i in range(1, 9)]
    assert all(float(t).is_integer() for t in ax.get_xticks())  # epochs: whole ticks
    assert ax.get_xscale() == "linear" and ax.get_title() == "title"
    image = rendered(fig)
    assert image.size == (charts.WIDTH, charts.HEIGHT)
    assert len(colour_pixels(image, charts.PALETTE[0])) > 200  # both series drawn
    assert len(colour_pixels(image, charts.PALETTE[1])) > 200


def test_a_log_axis_draws_only_positive_values() -> None:
    fig = charts.line_chart(
        {"a": [(0.0, 1.0), (10.0, 2.0), (1000.0, 3.0)]}, "t", "x", "y", logx=True
    )
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert ax.lines[0].get_xdata().tolist() == [10.0, 1000.0]


def test_bar_chart_bars_are_the_values_and_grey_where_not_highlighted() -> None:
    fig = charts.bar_chart([1.0, 2.0, math.inf, 4.0], "t", "dim", "KL", highlight=[1, 1, 0, 0])
    bars = fig.axes[0].patches
    assert [b.get_height() for b in bars] == [1.0, 2.0, 0.0, 4.0]  # non-finite: no bar
    colours = [tuple(round(c * 255) for c in b.get_facecolor()[:3]) for b in bars]
    assert colours == [charts.PALETTE[0]] * 2 + [charts.GREY] * 2
    blue = colour_pixels(rendered(fig), charts.PALETTE[0], tol=10)
    heights = []
    for left, right in ((0.0, 0.25), (0.25, 0.5)):
        width = charts.WIDTH
        rows = blue[(blue[:, 1] > left * width) & (blue[:, 1] < right * width)][:, 0]
        heights.append(rows.max() - rows.min())
    assert heights[1] / heights[0] == pytest.approx(2.0, rel=0.05)


def test_training_curves_draw_three_panels_from_metrics_records() -> None:
    records = [
        {
            "epoch": e,
            "train_nelbo": 200 - e,
            "train_recon": 180 - e,
            "train_kl": 20.0,
            "val_nelbo": 205 - e,
            "val_recon": 185 - e,
            "val_kl": 20.0,
        }
        for e in range(1, 5)
    ]
    fig = figures.training_curves(records)
    assert fig is not None and len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes][0] == "negative ELBO"
    train, val = fig.axes[0].lines
    assert train.get_ydata().tolist() == [199, 198, 197, 196] and val.get_label() == "validation"
    assert rendered(fig).width == 3 * 480
    # a log written by an older vaekit, whose training evaluated the test set, says so
    old = figures.training_curves([{"epoch": 1, "train_nelbo": 2.0, "test_nelbo": 3.0}])
    assert old is not None and [x.get_label() for x in old.axes[0].lines] == [
        "train",
        "test (old log)",
    ]
    assert figures.training_curves([]) is None
    assert figures.training_curves([{"epoch": 1, "train_nelbo": None}]) is None


# -- files and commands ---------------------------------------------------------------------
def test_write_all_writes_every_figure_as_a_png(trained_run: Path, tmp_path: Path) -> None:
    from vaekit.data import load_data
    from vaekit.tracking import read_metrics

    model = vaekit.load(trained_run)
    data = load_data(model.run_config.data, seed=0, progress=False)
    written = figures.write_all(
        tmp_path,
        model,
        data.x_test,
        data.y_test,
        data.class_names,
        read_metrics(trained_run),
        n_manifold=5,
    )
    assert set(written) == set(figures.FILES)
    for name, path in written.items():
        assert path == tmp_path / figures.FILES[name]
        with Image.open(path) as image:
            assert image.format == "PNG" and np.asarray(image).std() > 1, name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(fileio.TMP_PREFIX)]
    with Image.open(written["manifold"]) as image:  # 5 x 5 cells of 28 px, 2 px padding
        assert image.size == (5 * 30 + 2, 5 * 30 + 2)


@pytest.mark.parametrize(
    "command,name",
    [
        ("manifold", "manifold.png"),
        ("latents", "latents.png"),
        ("curves", "curves.png"),
        ("kl", "kl.png"),
    ],
)
def test_picture_commands_write_their_png(
    trained_run: Path, tmp_path: Path, command: str, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / name
    extra = ["--n", "4"] if command == "manifold" else []
    assert main([command, str(trained_run), "--out", str(out), *extra]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    with Image.open(out) as image:
        assert image.format == "PNG"


def test_manifold_command_refuses_bad_dims_in_one_line(trained_run: Path) -> None:
    result = run_cli("manifold", str(trained_run), "--dims", "0,0")
    assert_clean_error(result, "--dims")


def test_overwriting_a_run_removes_its_pictures(tmp_path: Path) -> None:
    """`train --overwrite` must not leave the old run's pictures beside the new run."""
    run = vaekit.train(tiny_config(tmp_path / "run"))
    for name in figures.FILES.values():
        (run / name).write_bytes(b"old picture")
    vaekit.train(tiny_config(tmp_path / "run"), overwrite=True)
    assert not [name for name in figures.FILES.values() if (run / name).exists()]
