"""`vaekit score` and `vaekit.score`: per-example -ELBO, its terms and log p(x), the numbers
`vaekit evaluate` averages, in every output format, sorted or not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import vaekit
from vaekit import cli

pd = pytest.importorskip("pandas")


def test_the_mean_score_is_what_evaluate_prints(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = str(trained_run)
    assert cli.main(["evaluate", run, "--iw-samples", "16", "--json", "--seed", "3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    out = tmp_path / "s.parquet"
    flags = ["--iw-samples", "16", "--seed", "3", "--out", str(out)]
    assert cli.main(["score", run, *flags]) == 0
    table = pd.read_parquet(out)
    assert len(table) == printed["n"]
    for key in ("nelbo", "recon", "kl", "log_px"):
        assert table[key].mean() == pytest.approx(printed[key], rel=1e-9, abs=1e-9), key
    assert np.allclose(table["nelbo"], table["recon"] + table["kl"], rtol=1e-5)
    assert ((table["iw_ess"] >= 1 - 1e-9) & (table["iw_ess"] <= 16 + 1e-9)).all()
    # log p(x): each example's samples are seeded by its position, so any chunk size agrees
    assert cli.main(["score", run, *flags[:-1], str(tmp_path / "b.npz"), "--batch-size", "5"]) == 0
    chunked = np.load(tmp_path / "b.npz")
    assert np.allclose(chunked["log_px"], table["log_px"], rtol=0, atol=1e-4)


def test_every_format_and_the_sorted_order(trained_run: Path, tmp_path: Path) -> None:
    model = vaekit.load(trained_run)
    plain = vaekit.score(model, "noise", split="test")
    assert set(plain) == {"id", "label", "class", "nelbo", "recon", "kl"}
    ranked = vaekit.score(model, "noise", split="test", sort=True)
    assert np.all(np.diff(ranked["nelbo"]) <= 0)  # most anomalous first
    assert np.array_equal(ranked["nelbo"], plain["nelbo"][ranked["id"]])
    assert np.array_equal(ranked["label"], plain["label"][ranked["id"]])
    for suffix in ("npy", "npz", "csv", "parquet"):
        vaekit.score(model, "noise", split="test", sort=True, out=tmp_path / f"s.{suffix}")
    npy = np.load(tmp_path / "s.npy")  # one structured array
    assert npy.dtype.names == ("id", "label", "class", "nelbo", "recon", "kl")
    npz = np.load(tmp_path / "s.npz")
    for got in (npy, npz, pd.read_csv(tmp_path / "s.csv"), pd.read_parquet(tmp_path / "s.parquet")):
        assert np.array_equal(np.asarray(got["id"]), ranked["id"])
        assert np.allclose(np.asarray(got["nelbo"]), ranked["nelbo"], rtol=1e-12)


def test_arrays_in_memory_with_labels_passed_in(trained_run: Path) -> None:
    model = vaekit.load(trained_run)
    x = np.random.default_rng(0).integers(0, 256, size=(9, 1, 28, 28), dtype=np.uint8)
    got = vaekit.score(model, x, np.arange(9) % 3, iw_samples=4)
    assert set(got) == {"id", "label", "nelbo", "recon", "kl", "log_px", "iw_ess"}
    assert np.array_equal(got["label"], np.arange(9) % 3) and got["nelbo"].shape == (9,)


def test_user_errors_are_one_line(trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import assert_one_line_error

    code = cli.main(["score", str(trained_run), "--out", "scores.json"])
    assert_one_line_error(code, capsys.readouterr().err, "scores.json", ".parquet")
    model = vaekit.load(trained_run)
    with pytest.raises(vaekit.VaekitError, match="iw_samples must be"):
        vaekit.score(model, np.zeros((2, 1, 28, 28), np.uint8), iw_samples=-1)
    with pytest.raises(vaekit.VaekitError, match="values must lie in"):
        vaekit.score(model, np.full((2, 1, 28, 28), 3.0, np.float32))


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".csv"])
def test_out_in_a_folder_not_yet_made(trained_run: Path, tmp_path: Path, suffix: str) -> None:
    """As `vaekit sample --out new/x.npy` does, encode and score make the folders."""
    for command in ("encode", "score"):
        out = tmp_path / command / "new" / f"x{suffix}"
        assert cli.main([command, str(trained_run), "--out", str(out)]) == 0
        assert out.is_file()


def test_every_kind_of_source_with_its_labels_and_file_names(
    trained_run: Path, tmp_path: Path
) -> None:
    """An .npz with labels, an .npy, a folder (file names and class folders), a Hugging
    Face dataset on disk and a named dataset: each scored as the same examples given as an
    array (the same order, chunks and seed: the same numbers), names carried through."""
    from PIL import Image

    model = vaekit.load(trained_run)
    rng = np.random.default_rng(7)
    x = np.kron(
        rng.integers(0, 256, (12, 1, 7, 7), dtype=np.uint8), np.ones((1, 1, 4, 4), np.uint8)
    )
    y = np.arange(12) % 3
    np.savez(tmp_path / "a.npz", x_train=x, y_train=y)
    np.save(tmp_path / "a.npy", x)
    folder = tmp_path / "pics"
    for i, image in enumerate(x):
        (folder / f"c{y[i]}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0]).save(folder / f"c{y[i]}" / f"{i:02d}.png")
    files = sorted(f"c{y[i]}/{i:02d}.png" for i in range(12))
    order = np.array([int(f[-6:-4]) for f in files])
    sources = {"a.npz": np.arange(12), "a.npy": np.arange(12), "pics": order}
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {"image": datasets.Array3D((1, 28, 28), "uint8"), "label": datasets.Value("int64")}
    )
    hf = datasets.Dataset.from_dict({"image": list(x), "label": list(y)}, features=features)
    hf.save_to_disk(str(tmp_path / "hf"))
    sources["hf:" + str(tmp_path / "hf")] = np.arange(12)
    for name, rows in sources.items():
        source = name if name.startswith("hf:") else str(tmp_path / name)
        out = tmp_path / "s.npz"
        assert cli.main(["score", str(trained_run), "--data", source, "--out", str(out)]) == 0
        got = np.load(out)
        direct = vaekit.score(model, x[rows], y[rows] if name != "a.npy" else None)
        assert np.array_equal(got["nelbo"], direct["nelbo"]), name
        if name != "a.npy":
            assert np.array_equal(got["label"], y[rows]), name
        if name == "pics":
            assert list(got["file"]) == files and list(got["class"]) == [f[:2] for f in files]
    named = vaekit.score(model, "noise", split="test")
    assert len(named["nelbo"]) == 26 and "label" in named
