"""Any array a user has: float data kept exactly, any channel count, tables, .npy/.csv/.parquet,
data.normalize saved with the model, and one line for what cannot be used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import vaekit
from conftest import run_cli, tiny_config
from vaekit.config import DataConfig
from vaekit.data import from_arrays, sources
from vaekit.errors import DataError

FAST = ["--epochs", "1", "--batch-size", "16", "--train.progress", "false"]
TINY_CONV = ["--model.arch", "conv", "--model.channels", "[8, 16]", "--model.latent_dim", "4"]


def test_float_data_round_trip_exactly_float16_when_it_holds_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x32 = rng.random((20, 3, 6, 6)).astype(np.float32)  # not representable in float16
    x16 = (rng.integers(0, 8, (20, 3, 6, 6)) / 8).astype(np.float64)  # eighths: exact in half
    np.savez(tmp_path / "a.npz", x_train=x32, x_test=x32[:4])
    np.savez(tmp_path / "b.npz", x_train=x16, x_test=x16[:4])
    a = sources.load_data(DataConfig(name=str(tmp_path / "a.npz"), val_fraction=0))
    b = sources.load_data(DataConfig(name=str(tmp_path / "b.npz"), val_fraction=0))
    assert a.x_train.dtype == torch.float32 and torch.equal(a.x_train, torch.from_numpy(x32))
    assert b.x_train.dtype == torch.float16
    assert np.array_equal(b.x_train.numpy().astype(np.float64), x16)


@pytest.mark.parametrize("channels", [4, 12])
def test_a_many_channel_array_trains_the_conv_vae(tmp_path: Path, channels: int) -> None:
    x = np.random.default_rng(1).random((48, 8, 8, channels)).astype(np.float32)  # NHWC
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "run"
    args = ("train", "--data", str(tmp_path / "x.npy"), *TINY_CONV, *FAST, "--out", str(out))
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    model = vaekit.load(out)
    assert model.input_shape == (channels, 8, 8) and model.likelihood == "bernoulli"
    recon = model.reconstruct(torch.from_numpy(x[:2].transpose(0, 3, 1, 2)))
    assert recon.shape == (2, channels, 8, 8)
    assert (out / "reconstructions.png").stat().st_size > 0  # the first three channels shown


def test_a_table_trains_and_reconstructs_in_the_users_units(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    rows = (1000.0 + 50.0 * rng.standard_normal((300, 5))).astype(np.float32)
    config = tiny_config(tmp_path / "run", **{"data.normalize": "standardize"})
    result = vaekit.Trainer(None, config, data=from_arrays(rows)).fit()
    model = vaekit.load(result.run_dir)
    assert model.likelihood == "gaussian" and model.learn_scale  # auto, for unbounded data
    saved = json.loads((result.run_dir / "config.json").read_text())["architecture"]
    assert saved["normalization"]["kind"] == "standardize"
    train = result.model.normalization.shift
    assert np.allclose(train, rows.mean(0), rtol=1e-3)  # fitted on the training split only
    recon = model.reconstruct(torch.from_numpy(rows[:10]))
    assert recon.shape == (10, 5)
    assert 900 < float(recon.mean()) < 1100  # the user's units, not the model's (~0)
    samples = model.sample(7, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (7, 5) and 800 < float(samples.mean()) < 1200
    stats = vaekit.evaluate(model, rows[:50])  # a numpy table, as the docs promise
    assert np.isfinite(stats["nelbo"]) and "psnr" not in stats and stats["mse"] > 0


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_table_file_trains_from_the_cli(tmp_path: Path, suffix: str) -> None:
    import pandas as pd

    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.normal(-3, 2, (120, 6)), columns=[f"f{i}" for i in range(6)])
    path = tmp_path / f"table{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    out = tmp_path / "run"
    result = run_cli("train", "--data", str(path), *FAST, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "samples.png" not in result.stdout  # a table makes no picture
    sample = run_cli("sample", str(out), "--out", str(tmp_path / "s.npy"))
    assert sample.returncode == 0, sample.stderr
    assert np.load(tmp_path / "s.npy").shape == (64, 6)  # the default --n
    png = run_cli("sample", str(out), "--out", str(tmp_path / "s.png"))
    assert png.returncode != 0 and "--out" in png.stderr and "s.npy" in png.stderr
    report = run_cli("report", str(out), "--iw-samples", "2")
    assert report.returncode == 0, report.stderr


def test_a_table_with_text_columns_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("a,city\n1,Paris\n2,Rome\n")
    result = run_cli("train", "--data", str(tmp_path / "t.csv"), *FAST)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "columns city are not numeric" in result.stderr


def test_minmax_is_saved_with_the_model_and_clips_test_values_past_the_training_range(
    tmp_path: Path,
) -> None:
    x = (np.random.default_rng(4).random((200, 1, 8, 8)) * 80 - 20).astype(np.float32)
    config = tiny_config(tmp_path / "run", **{"data.normalize": "minmax"})
    model = vaekit.Trainer(None, config, data=from_arrays(x)).fit().model
    assert model.likelihood == "bernoulli"  # minmax data lie in [0, 1]
    loaded = vaekit.load(tmp_path / "run")
    assert loaded.normalization == model.normalization
    beyond = torch.full((1, 1, 8, 8), 1e4)
    assert float(loaded.prepare(beyond).max()) == 1.0
    assert float(loaded.reconstruct(torch.from_numpy(x[:3])).max()) <= float(x.max()) + 1e-3


def test_bernoulli_on_data_outside_0_1_is_one_line(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.full((40, 1, 4, 4), 7.0, np.float32))
    args = ("train", "--data", str(tmp_path / "x.npy"), "--model.likelihood", "bernoulli")
    result = run_cli(*args, *FAST)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "Bernoulli likelihood needs data in [0, 1]" in result.stderr


@pytest.mark.parametrize(
    "array, needle",
    [
        (np.zeros((4, 2, 2, 2, 2), np.float32), "(shape (4, 2, 2, 2, 2), dtype float32)"),
        (np.array(["a", "b"]), "does not hold plain numbers"),
        (np.full((4, 3), -1, np.int64), "integer data must lie in 0..255"),
        (np.full((4, 3), np.nan), "NaN or infinite"),
        (np.full((4, 3), 1e300), "beyond the range of float32"),
        (np.zeros((0, 3), np.float32), "holds no examples"),
    ],
)
def test_arrays_vaekit_cannot_use_are_one_line_from_api_and_cli(
    tmp_path: Path, array: np.ndarray, needle: str
) -> None:
    with pytest.raises(DataError) as err:
        from_arrays(array)
    assert needle in str(err.value) and "\n" not in str(err.value)
    np.save(tmp_path / "x.npy", array)
    result = run_cli("train", "--data", str(tmp_path / "x.npy"), *FAST)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert needle in result.stderr


def test_a_dataset_of_raw_rows_names_the_helper(tmp_path: Path) -> None:
    rows = torch.rand(64, 5)
    data = vaekit.data.Dataset("mine", rows, rows[:8])
    with pytest.raises(DataError, match="vaekit.data.from_arrays"):
        vaekit.Trainer(None, tiny_config(tmp_path / "run"), data=data).fit()


def test_a_users_model_gets_the_datas_normalization(tmp_path: Path) -> None:
    from custom_arch import ConvFeatures, ConvPixels  # a registered encoder/decoder pair

    def custom_vae(likelihood: str) -> vaekit.VAE:
        halves = ConvFeatures(width=4), ConvPixels(latent_dim=4, width=4)
        return vaekit.VAE(*halves, latent_dim=4, input_shape=(1, 28, 28), likelihood=likelihood)

    x = (np.random.default_rng(5).random((128, 1, 28, 28)) * 10).astype(np.float32)
    model = custom_vae(likelihood="gaussian")
    config = tiny_config(tmp_path / "run", **{"data.normalize": "minmax"})
    trained = vaekit.Trainer(model, config, data=from_arrays(x)).fit().model
    assert trained.normalization.kind == "minmax"
    assert vaekit.load(tmp_path / "run").normalization == trained.normalization
    bern = custom_vae(likelihood="bernoulli")
    with pytest.raises(DataError, match=r"arrays: a Bernoulli likelihood needs data in \[0, 1\]"):
        vaekit.Trainer(bern, tiny_config(tmp_path / "b"), data=from_arrays(x)).fit()


def test_the_explorer_refuses_a_table_in_one_line(tmp_path: Path) -> None:
    from vaekit.viz.explore.latents import Explorer

    rows = np.random.default_rng(6).normal(size=(80, 3)).astype(np.float32)
    model = vaekit.Trainer(None, tiny_config(tmp_path / "run"), data=from_arrays(rows)).fit().model
    with pytest.raises(vaekit.VaekitError, match="table rows"):
        Explorer(model, torch.from_numpy(rows).view(80, 3, 1, 1))


def _truncated_npy(path: Path) -> None:
    np.save(path, np.zeros((10, 4, 4), np.uint8))
    path.write_bytes(path.read_bytes()[:-20])


@pytest.mark.parametrize(
    "name, make, needle",
    [
        ("gone.csv", lambda p: None, "does not exist"),
        ("gone.npy", lambda p: None, "does not exist"),
        ("pipe.npy", lambda p: __import__("os").mkfifo(p), "not a regular file (a FIFO)"),
        ("cut.npy", _truncated_npy, "truncated or corrupt"),
        ("head.csv", lambda p: p.write_text("a,b\n"), "holds no rows"),
        ("empty.csv", lambda p: p.write_text(""), "cannot be read as a table"),
    ],
)
def test_hostile_array_and_table_files_are_one_line(
    tmp_path: Path, name: str, make, needle: str
) -> None:
    path = tmp_path / name
    make(path)
    result = run_cli("train", "--data", str(path), *FAST, timeout=60)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_examples_of_the_wrong_shape_or_type_are_one_line_in_the_python_api(
    tmp_path: Path,
) -> None:
    x = np.random.default_rng(7).random((64, 2, 8, 8)).astype(np.float32)
    model = vaekit.Trainer(None, tiny_config(tmp_path / "run"), data=from_arrays(x)).fit().model
    assert model.reconstruct(x[:2]).shape == (2, 2, 8, 8)  # numpy works as tensors do
    assert model.interpolate(x[0], x[1], steps=3).shape == (1, 3, 2, 8, 8)
    for bad, needle in [
        (torch.zeros(2, 2, 4, 4), "do not fit this model, which takes (N, 2, 8, 8)"),
        (torch.zeros(2, 3), "do not fit this model"),
        ("pixels", "numeric tensor or numpy array; got str"),
    ]:
        with pytest.raises(DataError) as err:
            model.reconstruct(bad)  # type: ignore[arg-type]
        assert needle in str(err.value)
