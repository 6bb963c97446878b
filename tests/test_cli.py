"""The `vaekit` command as a user runs it: a fresh process, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import TINY_FLAGS, assert_clean_error, run_cli

TINY = ["--data", "noise", *TINY_FLAGS]


def test_train_evaluate_sample_reconstruct_interpolate(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = run_cli("train", *TINY, "--out", str(run))
    assert result.returncode == 0, result.stderr
    assert str(run) in result.stdout
    result = run_cli("evaluate", str(run), "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert (
        stats["nelbo"] == stats["recon"] + stats["kl"]
        or abs(stats["nelbo"] - stats["recon"] - stats["kl"]) < 1e-6 * stats["nelbo"]
    )
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert "val_nelbo" in last and not any(k.startswith("test_") for k in last)
    assert stats["n"] == 26  # the test set: 10% of the 256 noise examples, held out apart
    text = run_cli("evaluate", str(run))
    assert "negative ELBO" in text.stdout and "KL" in text.stdout

    out = tmp_path / "s.png"
    assert (
        run_cli("sample", str(run), "--n", "10", "--seed", "3", "--out", str(out)).returncode == 0
    )
    again = tmp_path / "s2.png"
    run_cli("sample", str(run), "--n", "10", "--seed", "3", "--out", str(again))
    assert out.read_bytes() == again.read_bytes()  # seeded
    r = run_cli("reconstruct", str(run), "--n", "5")
    assert r.returncode == 0, r.stderr
    grid = np.asarray(Image.open(run / "reconstructions.png"))
    assert grid.shape[0] < grid.shape[1]  # two rows of five
    r = run_cli("interpolate", str(run), "--steps", "6", "--pairs", "2")
    assert r.returncode == 0 and (run / "interpolation.png").is_file(), r.stderr


def test_help_shows_config_docs() -> None:
    result = run_cli("train", "--help")
    assert result.returncode == 0
    assert "--latent-dim" in result.stdout and "size of the latent vector z" in result.stdout
    assert "--model.likelihood" in result.stdout


def test_user_mistakes_are_one_clean_line(tmp_path: Path) -> None:
    assert_clean_error(run_cli("train", "--no-such-flag"), "--no-such-flag")
    assert_clean_error(
        run_cli("train", *TINY, "--latent-dim", "0", "--out", str(tmp_path / "a")),
        "model.latent_dim",
    )
    assert_clean_error(
        run_cli(
            "train", *TINY, "--data", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "b")
        ),
        "missing.npz",
    )
    assert_clean_error(run_cli("train", "--config", str(tmp_path / "nope.yaml")), "nope.yaml")
    assert_clean_error(run_cli("evaluate", str(tmp_path / "no-run")), "no-run")
    assert_clean_error(run_cli("data", "fetch", "cifar-1000"), "cifar-1000")


def test_missing_dataset_offline_is_one_clean_line(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "VAEKIT_DATA": str(tmp_path / "d")}
    result = run_cli("data", "fetch", "mnist", "--no-download", env=env)
    assert_clean_error(result, "mnist", "train-images-idx3-ubyte.gz")


def test_data_list_and_presets() -> None:
    result = run_cli("data", "list")
    assert result.returncode == 0 and "fashion-mnist" in result.stdout
    result = run_cli("presets")
    assert result.returncode == 0 and "fashion-mlp" in result.stdout


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("vaekit ")
