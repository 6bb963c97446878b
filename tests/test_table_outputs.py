"""A CSV goes in, a CSV comes out: `vaekit sample` and `vaekit reconstruct` write a table
model's rows as .csv or .parquet under the training table's column names, and the numbers
files of both commands share one layout (.npy: the examples, (n, F) for a table; .npz: the
originals `x` beside their `reconstruction`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import vaekit
from vaekit import cli

pd = pytest.importorskip("pandas", reason="needs vaekit[tables]")
COLUMNS = ["height", "weight", "age", "income"]


@pytest.fixture(scope="module")
def table_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("table")
    rng = np.random.default_rng(0)
    rows = rng.normal([170, 70, 40, 3e4], [10, 12, 15, 8e3], size=(200, 4))
    pd.DataFrame(rows, columns=COLUMNS).to_csv(root / "people.csv", index=False)
    args = ["train", "--data", str(root / "people.csv"), "--out", str(root / "run")]
    args += ["--epochs", "1", "--model.hidden", "[16]", "--latent-dim", "2"]
    args += ["--data.normalize", "standardize", "--train.progress", "false"]
    assert cli.main(args) == 0
    return root / "run"


def test_sample_writes_a_table_with_the_training_tables_columns(
    table_run: Path, tmp_path: Path
) -> None:
    for name in ("rows.csv", "rows.parquet"):
        out = tmp_path / name
        assert cli.main(["sample", str(table_run), "--n", "5", "--out", str(out)]) == 0
        frame = pd.read_csv(out) if name.endswith(".csv") else pd.read_parquet(out)
        assert list(frame.columns) == COLUMNS and frame.shape == (5, 4)
        assert 100 < frame["height"].mean() < 250  # the user's units, not the model's
    assert vaekit.load(table_run).column_names == COLUMNS


def test_reconstruct_writes_the_layout_sample_writes(table_run: Path, tmp_path: Path) -> None:
    assert cli.main(["sample", str(table_run), "--n", "3", "--out", str(tmp_path / "s.npy")]) == 0
    args = ["reconstruct", str(table_run), "--n", "3", "--out"]
    assert cli.main([*args, str(tmp_path / "r.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == np.load(tmp_path / "r.npy").shape == (3, 4)
    assert cli.main([*args, str(tmp_path / "r.npz")]) == 0
    with np.load(tmp_path / "r.npz") as pair:
        assert sorted(pair.files) == ["reconstruction", "x"]
        assert pair["x"].shape == pair["reconstruction"].shape == (3, 4)
        np.testing.assert_allclose(pair["reconstruction"], np.load(tmp_path / "r.npy"))
    assert cli.main([*args, str(tmp_path / "r.csv")]) == 0
    assert list(pd.read_csv(tmp_path / "r.csv").columns) == COLUMNS


def test_an_image_model_refuses_a_table_file_and_keeps_its_layout(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["sample", str(trained_run), "--n", "2", "--out", str(tmp_path / "s.csv")]) == 1
    assert "holds table rows and this model's examples are images" in capsys.readouterr().err
    args = ["reconstruct", str(trained_run), "--n", "2", "--out", str(tmp_path / "r.npy")]
    assert cli.main(args) == 0
    assert np.load(tmp_path / "r.npy").shape == (2, 1, 28, 28)
