"""`vaekit reproduce kingma2013`: the paper's setup, the curves, the files, resuming, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

import vaekit
from conftest import assert_clean_error, run_cli
from vaekit.errors import ConfigError
from vaekit.experiments import kingma2013 as reproduce


def test_the_setup_is_the_papers() -> None:
    cfg = reproduce.kingma2013_config("noise")
    assert cfg.model.hidden == [500] and cfg.model.activation == "tanh"
    assert cfg.model.likelihood == "bernoulli"
    assert cfg.train.batch_size == 100 and cfg.optim.name == "adagrad"
    assert reproduce.BUDGETS["small"].latent_sizes == (3, 5, 10, 20, 200)
    assert reproduce.BUDGETS["full"].samples == 10**8  # the paper's x-axis ends at 10^8


def test_mnist_when_present_else_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reproduce, "find_local", lambda name: Path("/somewhere"))
    assert reproduce.default_dataset() == "mnist"
    monkeypatch.setattr(reproduce, "find_local", lambda name: None)
    assert reproduce.default_dataset() == "fashion-mnist"


@pytest.mark.parametrize("budget", ["small", "full"])
def test_eval_points_are_log_spaced_batches_up_to_the_budget(budget: str) -> None:
    b = reproduce.BUDGETS[budget]
    points = reproduce.eval_points(b, 100)
    assert points[0] == b.first_eval and points[-1] == b.samples
    assert all(p % 100 == 0 for p in points)
    ratios = [q / p for p, q in zip(points[:-1], points[1:], strict=True)]
    assert max(ratios) == pytest.approx(min(ratios), rel=0.01)  # evenly spaced on a log axis
    assert ratios[0] == pytest.approx(10 ** (1 / b.points_per_decade), rel=0.01)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("repro") / "k"
    return out, reproduce.reproduce_kingma2013(out, "tiny", data="noise", progress=False)


def test_a_tiny_run_writes_the_figure_the_curves_and_the_models(
    tiny_run: tuple[Path, dict],
) -> None:
    out, result = tiny_run
    b = reproduce.BUDGETS["tiny"]
    saved = json.loads((out / "figure2.json").read_text())
    assert saved["curves"] == result["curves"] and saved["dataset"] == "noise"
    assert set(result["curves"]) == {str(k) for k in b.latent_sizes}
    points = reproduce.eval_points(b, 100)
    for curve in result["curves"].values():
        assert [p["samples"] for p in curve] == points
        # training works: the bound rises from the first measurement to the last
        assert curve[-1]["train_bound"] > curve[0]["train_bound"]
        assert curve[-1]["test_bound"] > curve[0]["test_bound"]
    figure = Image.open(out / "figure2.png")
    assert figure.width > 2 * figure.height  # one panel per latent size, side by side
    manifold = Image.open(out / "manifold.png")
    assert manifold.size == (b.manifold_n * 28 * 2,) * 2
    for k in (*b.latent_sizes, 2):
        model = vaekit.load(out / f"nz-{k}")
        assert model.latent_dim == k and model.architecture()["encoder"]["args"]["hidden"] == [500]


def test_figure2_plots_the_bound_against_samples_on_a_log_axis_as_the_paper(
    tiny_run: tuple[Path, dict],
) -> None:
    curves = {int(k): v for k, v in tiny_run[1]["curves"].items()}
    fig = reproduce.figure2(curves, "noise")
    assert len(fig.axes) == len(curves)
    assert {ax.get_xscale() for ax in fig.axes} == {"log"}
    assert len({ax.get_ylim() for ax in fig.axes}) == 1  # one y-scale for every panel
    for ax, (k, curve) in zip(fig.axes, sorted(curves.items()), strict=True):
        test, train = ax.lines
        assert test.get_xdata().tolist() == [p["samples"] for p in curve]
        assert train.get_ydata().tolist() == [p["train_bound"] for p in curve]
        assert test.get_linestyle() == "-" and train.get_linestyle() == "--"
        assert f"N_z = {k}" in ax.get_title()


def test_a_rerun_reads_finished_latent_sizes_back(tiny_run: tuple[Path, dict]) -> None:
    out, result = tiny_run
    weights = out / "nz-3" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    again = reproduce.reproduce_kingma2013(out, "tiny", data="noise", progress=False)
    assert weights.stat().st_mtime_ns == before  # not retrained
    assert again["curves"] == result["curves"]


def test_summary_reads_like_the_paper(tiny_run: tuple[Path, dict]) -> None:
    text = reproduce.summary(tiny_run[1])
    assert "N_z" in text and "train - test" in text and "best test bound" in text


def test_cli(tmp_path: Path) -> None:
    result = run_cli(
        "reproduce",
        "kingma2013",
        "--budget",
        "tiny",
        "--data",
        "noise",
        "--out",
        str(tmp_path / "r"),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["budget"] == "tiny"
    assert (tmp_path / "r" / "figure2.png").is_file()
    assert_clean_error(
        run_cli(
            "reproduce",
            "kingma2013",
            "--budget",
            "huge",
            "--data",
            "noise",
            "--out",
            str(tmp_path / "x"),
        ),
        "--budget",
    )
    with pytest.raises(ConfigError, match="small or full"):
        reproduce.reproduce_kingma2013(tmp_path / "y", "medium", data="noise")
