"""MIG and DCI (vaekit.evaluation.disentanglement) against codes whose answer is known, and the
factor set of scripts/make_shapes.py --factors they are computed on."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vaekit
from conftest import assert_clean_error, run_cli, tiny_config
from vaekit.cli import main
from vaekit.errors import DataError
from vaekit.evaluation.disentanglement import (
    Stumps,
    _images,
    dci,
    dci_scores,
    mig,
    of_run,
    read_factors,
)

ROOT = Path(__file__).resolve().parents[1]
N = 1200


def factors(n: int = N, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, 4, n), rng.integers(0, 6, n), rng.integers(0, 8, n)], 1)


def copied(v: np.ndarray, seed: int = 1) -> np.ndarray:
    """Each factor in one latent (rescaled: the metrics see through that), plus 2 noise ones."""
    noise = np.random.default_rng(seed).normal(size=(len(v), 2))
    return np.concatenate([v * np.array([0.5, -2.0, 0.1]) + 3.0, noise], axis=1)


def mixed(v: np.ndarray) -> np.ndarray:
    """Two latents, each the sum or difference of the first two factors."""
    a, b = v[:, 0] / 4, v[:, 1] / 6
    return np.stack([a + b, a - b], axis=1)


def test_mig_of_a_copied_code_is_about_one() -> None:
    v = factors()
    result = mig(copied(v), v, names=["shape", "scale", "x"])
    assert result["mig"] > 0.95 and set(result["per_factor"]) == {"shape", "scale", "x"}


def test_mig_is_low_when_a_latent_mixes_two_factors_or_latents_are_noise() -> None:
    v = factors()
    assert mig(mixed(v), v[:, :2])["mig"] < 0.2
    assert mig(np.random.default_rng(2).normal(size=(N, 4)), v)["mig"] < 0.05


def test_mig_by_hand() -> None:
    # v = 0 0 1 1; z1 = 0 0 0 1 shares part of it, z2 = 0 1 0 1 none:
    # I(z1; v) = H(z1) + H(v) - H(z1, v) = (2 ln 2 - 3/4 ln 3) + ln 2 - 3/2 ln 2, I(z2; v) = 0,
    # so MIG = I(z1; v) / ln 2 = 3/2 - 3/4 log2(3)
    z = np.array([[0, 0], [0, 1], [0, 0], [1, 1]], dtype=float)
    v = np.array([[0], [0], [1], [1]])
    assert mig(z, v)["mig"] == pytest.approx(1.5 - 0.75 * math.log2(3), abs=1e-12)


def test_dci_of_a_copied_code_is_about_one() -> None:
    v = factors()
    result = dci(copied(v), v)
    assert result["disentanglement"] > 0.95 and result["completeness"] > 0.95
    assert result["informativeness"] > 0.95
    assert result["importance"][3:].sum() < 0.05  # the noise latents count for nothing


def test_dci_is_low_when_a_latent_mixes_two_factors_or_latents_are_noise() -> None:
    v = factors()
    result = dci(mixed(v), v[:, :2])
    assert result["disentanglement"] < 0.1 and result["informativeness"] > 0.8  # all there, mixed
    noise = dci(np.random.default_rng(2).normal(size=(N, 4)), v)
    assert noise["disentanglement"] < 0.2 and noise["completeness"] < 0.2
    assert noise["informativeness"] < 0.35  # chance is 1/4, 1/6 and 1/8


def test_dci_scores_by_hand() -> None:
    # latent 0 gives 3 to factor 0 and 1 to factor 1, latent 1 gives 2 to factor 1:
    # D = 4/6 (1 - H2(3/4, 1/4)) + 2/6 * 1, C = 3/6 * 1 + 3/6 (1 - H2(1/3, 2/3))
    h = lambda *p: -sum(q * math.log2(q) for q in p)  # noqa: E731
    d, c = dci_scores([[3.0, 1.0], [0.0, 2.0]])
    assert d == pytest.approx(4 / 6 * (1 - h(0.75, 0.25)) + 2 / 6, abs=1e-12)
    assert c == pytest.approx(0.5 + 0.5 * (1 - h(1 / 3, 2 / 3)), abs=1e-12)
    assert dci_scores(np.eye(3)) == pytest.approx((1.0, 1.0))
    assert dci_scores(np.ones((3, 3))) == pytest.approx((0.0, 0.0))  # entropy in base K and D


def test_stump_importance_is_the_squared_error_each_latent_removes() -> None:
    # with leaves at the residuals' means, a step of rate a removes (2a - a^2) x the split's gain
    rng = np.random.default_rng(4)
    z = rng.normal(size=(300, 3))
    y = np.eye(3)[
        (z[:, 0] > 0).astype(int) + (z[:, 1] > 1)
    ]  # (300, 3) one-hot of a factor of z0 and z1
    stumps = Stumps(rounds=20, rate=0.3).fit(z, y)
    removed = ((y - y.mean(0)) ** 2).sum() - ((y - stumps.predict(z)) ** 2).sum()
    assert removed == pytest.approx((2 * 0.3 - 0.3**2) * stumps.importance.sum(), rel=1e-9)
    assert stumps.importance[2] < 0.05 * stumps.importance.sum()  # z2 plays no part


def test_permuting_latents_changes_neither_metric() -> None:
    v = factors()
    z = copied(v) + np.random.default_rng(3).normal(scale=0.5, size=(N, 5))  # imperfect code
    order = [4, 2, 0, 3, 1]
    assert mig(z[:, order], v)["mig"] == pytest.approx(mig(z, v)["mig"], abs=1e-12)
    before, after = dci(z, v), dci(z[:, order], v)
    for key in ("disentanglement", "completeness", "informativeness"):
        assert after[key] == pytest.approx(before[key], abs=1e-9)
    assert np.allclose(after["importance"], before["importance"][order])


def test_mistakes_a_user_can_make_are_one_line_errors() -> None:
    v = factors(10)
    with pytest.raises(DataError, match="at least 2 latent"):
        mig(np.zeros((10, 1)), v)
    with pytest.raises(DataError, match="'size' takes one value"):
        mig(np.random.default_rng(0).normal(size=(10, 2)), np.zeros((10, 1)), names=["size"])
    with pytest.raises(DataError, match="same N"):
        dci(np.zeros((9, 2)), v)


# ---- the factor set -------------------------------------------------------------------------


def load_make_shapes():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location("make_shapes", ROOT / "scripts/make_shapes.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_make_shapes_factors_records_what_each_image_shows(tmp_path: Path) -> None:
    make = load_make_shapes()
    make.main([str(tmp_path / "a"), "--n", "40", "--size", "16", "--seed", "3", "--factors"])
    with open(tmp_path / "a/factors.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40 and list(rows[0]) == ["file", "shape", "scale", "x", "y", "colour"]
    for row in rows[:8]:  # the image is the drawing of its recorded factors, in its shape's folder
        values = {k: int(row[k]) for k in make.FACTOR_NAMES}
        assert row["file"].split("/")[0] == make.FACTOR_SHAPES[values["shape"]]
        shown = np.asarray(Image.open(tmp_path / "a" / row["file"]))
        assert np.array_equal(shown, np.asarray(make.factor_image(values, 16)))
    again = make.make_factor_shapes(tmp_path / "b", n=40, size=16, seed=3)
    recorded = np.array([[int(r[k]) for k in make.FACTOR_NAMES] for r in rows])
    assert np.array_equal(again, recorded)  # reproducible by seed
    other = make.make_factor_shapes(tmp_path / "c", n=40, size=16, seed=4)
    assert not np.array_equal(other, recorded)
    drawn = {
        k: np.asarray(make.factor_image(dict.fromkeys(make.FACTOR_NAMES, 0) | {k: 1}, 16))
        for k in make.FACTOR_NAMES
    }
    base = np.asarray(make.factor_image(dict.fromkeys(make.FACTOR_NAMES, 0), 16))
    assert all(not np.array_equal(image, base) for image in drawn.values())  # each factor shows


# ---- a trained model on the factor set --------------------------------------------------------


def test_evaluate_disentanglement_scores_a_run_on_a_factor_set(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "factors"
    load_make_shapes().make_factor_shapes(folder, n=120, size=16, seed=0)
    config = tiny_config(tmp_path / "run", **{"data.name": str(folder), "data.image_size": 16})
    run = vaekit.train(config)
    result = run_cli("evaluate", str(run), "--data", str(folder), "--disentanglement", "--json")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)["disentanglement"]
    assert scores["images"] == 120 and scores["factors"] == ["shape", "scale", "x", "y", "colour"]
    for key in ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness"):
        assert 0.0 <= scores[key] <= 1.0
    again = of_run(vaekit.load(run), folder)  # the same in Python
    assert again["mig_per_factor"] == pytest.approx(scores["mig_per_factor"])
    assert again["dci_informativeness"] == pytest.approx(scores["dci_informativeness"])
    assert main(["evaluate", str(run), "--data", str(folder), "--disentanglement"]) == 0
    text = capsys.readouterr().out
    assert "disentanglement (120 images, factors shape, scale, x, y, colour): MIG " in text


def test_evaluate_disentanglement_needs_a_factor_set(tmp_path: Path) -> None:
    folder = tmp_path / "shapes"
    load_make_shapes().make_shapes(folder, n=30, size=16, seed=0)  # images, no factors.csv
    run = vaekit.train(
        tiny_config(tmp_path / "run", **{"data.name": str(folder), "data.image_size": 16})
    )
    assert_clean_error(
        run_cli("evaluate", str(run), "--data", str(folder), "--disentanglement"),
        "factors.csv not found",
        "--factors",
    )
    assert_clean_error(run_cli("evaluate", str(run), "--disentanglement"), "needs --data FOLDER")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (b"", "expected a header"),
        (b"\xff\xfe\x00garbage\n" * 3, "not a readable CSV"),
        (b"file,shape\na.png,1\nb.png\n", "one value per factor"),
        (b"file,shape\na.png,1\nb.png,x\n", "whole number"),
        (b"file,shape\na.png,1\n../../b.png,2\n", "outside the folder"),
        (b"file,shape\na.png,1\nb.png,2\n", "cannot read the image"),
    ],
)
def test_a_damaged_factor_set_is_a_one_line_error(tmp_path: Path, text: bytes, needle: str) -> None:
    (tmp_path / "factors.csv").write_bytes(text)
    (tmp_path / "a.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=needle):
        _, files, _ = read_factors(tmp_path)
        _images(tmp_path, files, (3, 16, 16))
