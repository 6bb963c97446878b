"""`vaekit export RUN --format diffusers OUT` measures the scaling factor on the run's
training images and refuses what diffusers would read as another model: data that were
not images in [0, 1], a config.json diffusers rebuilds differently, a non-finite factor,
an OUT whose links never end."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vaekit
from conftest import TINY_AUTOENCODERKL, assert_one_line_error
from vaekit import cli
from vaekit.config import load_config
from vaekit.evaluation import latent_scale

diffusers = pytest.importorskip("diffusers", reason="needs vaekit[diffusers]")
SCRATCH = ["--model.arch", "autoencoderkl", "--model.channels", "8,16"]
SCRATCH += ["--model.latent_channels", "2", "--batch-size", "8", "--epochs", "1"]
SCRATCH += ["--train.progress", "false"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 16x16 RGB images: gradients with noise, as PNG files."""
    root = tmp_path_factory.mktemp("images") / "pictures"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        ramp = np.linspace(0, 255, 16)[None, :, None] * np.ones((16, 1, 3))
        pixels = np.clip(ramp * (i % 3) / 2 + rng.normal(0, 30, ramp.shape), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(root / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def scratch(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An autoencoderkl trained from scratch on the folder, from the CLI."""
    out = tmp_path_factory.mktemp("runs") / "scratch"
    args = ["train", "--data", str(folder), "--data.image_size", "16", *SCRATCH]
    assert cli.main([*args, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def finetuned(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run started from a tiny AutoencoderKL that diffusers saved (scaling_factor 0.3)."""
    torch.manual_seed(0)
    base = tmp_path_factory.mktemp("kl") / "base"
    diffusers.AutoencoderKL(**TINY_AUTOENCODERKL, scaling_factor=0.3).save_pretrained(base)
    out = tmp_path_factory.mktemp("runs") / "finetuned"
    args = ["train", "--data", str(folder), "--data.image_size", "16", "--batch-size", "8"]
    args += ["--model.init", f"diffusers:{base}", "--epochs", "1", "--train.progress", "false"]
    assert cli.main([*args, "--out", str(out)]) == 0
    return out


def export(run: Path, out: Path, *more: str) -> int:
    return cli.main(["export", str(run), "--format", "diffusers", str(out), *more])


def exported_factor(out: Path) -> float:
    return float(diffusers.AutoencoderKL.load_config(out)["scaling_factor"])


def test_the_export_measures_the_scaling_factor_on_the_training_images(
    scratch: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert export(scratch, tmp_path / "out") == 0
    printed = capsys.readouterr().out
    factor = exported_factor(tmp_path / "out")
    assert f"scaling_factor {factor:.6g}: 1 / the standard deviation" in printed, printed
    # independently: the standard deviation of posterior samples of every training image
    model = vaekit.load(scratch).eval()
    cfg = model.training_config()
    x = vaekit.data.load_data(cfg.data, seed=cfg.train.seed, progress=False).x_train
    with torch.no_grad():
        mean, logvar = model.posterior(model.prepare(x))
        draws = [mean + (0.5 * logvar).exp() * torch.randn(mean.shape) for _ in range(8)]
    assert factor == pytest.approx(1 / torch.cat(draws).std().item(), rel=0.03)
    assert factor != pytest.approx(0.18215, rel=0.1)  # diffusers' default, which it was
    # a number given wins; the diffusers model computes what vaekit's does either way
    assert export(scratch, tmp_path / "given", "--scaling-factor", "0.5") == 0
    assert exported_factor(tmp_path / "given") == 0.5


def test_a_model_init_run_keeps_its_factor_unless_measure_is_asked(
    finetuned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert export(finetuned, tmp_path / "kept") == 0
    assert exported_factor(tmp_path / "kept") == 0.3
    assert "kept from model.init" in capsys.readouterr().out
    assert export(finetuned, tmp_path / "measured", "--scaling-factor", "measure") == 0
    measured = exported_factor(tmp_path / "measured")
    assert measured != 0.3 and f"scaling_factor {measured:.6g}: 1 /" in capsys.readouterr().out


def test_the_factor_is_measured_on_a_bounded_evenly_spaced_subset() -> None:
    cfg = load_config(None, {"model.arch": "autoencoderkl", "model.channels": [8]}).model
    model = vaekit.VAE.from_config(cfg, (1, 8, 8))
    x = torch.randint(0, 256, (latent_scale.MOST_IMAGES + 40, 1, 8, 8), dtype=torch.uint8)
    factor, n = latent_scale.scaling_factor(model, x)
    assert n == latent_scale.MOST_IMAGES and math.isfinite(factor) and factor > 0
    assert latent_scale.scaling_factor(model, x[:5])[1] == 5


def test_a_run_trained_on_data_from_python_needs_the_factor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its config names the default dataset (noise, of the same shape): measuring there
    would measure other images. The fingerprint in state.pt tells."""
    settings = {"data.name": "noise", "data.noise_examples": 64, "model.arch": "autoencoderkl"}
    settings |= {"model.channels": [8], "train.epochs": 1, "train.progress": False}
    config = load_config(None, {**settings, "train.out": str(tmp_path / "run")})
    images = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    run = vaekit.Trainer(None, config, data=torch.utils.data.TensorDataset(images)).fit().run_dir
    capsys.readouterr()
    code, err = export(run, tmp_path / "out"), capsys.readouterr().err
    assert_one_line_error(code, err, "cannot be reloaded", "from Python", "--scaling-factor X")
    assert not (tmp_path / "out").exists()
    assert export(run, tmp_path / "out", "--scaling-factor", "0.7") == 0


def test_a_model_of_data_outside_0_1_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Float images in [-1, 1] with data.normalize none: diffusers fed the same data
    computes encoder(x) where vaekit computes encoder(2x - 1)."""
    x = np.random.default_rng(0).uniform(-1, 1, (24, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "pm1.npz", x_train=x)
    run = tmp_path / "run"
    args = ["train", "--data", str(tmp_path / "pm1.npz"), "--data.normalize", "none"]
    assert cli.main([*args, *SCRATCH, "--out", str(run)]) == 0
    capsys.readouterr()
    code, err = export(run, tmp_path / "out", "--scaling-factor", "1"), capsys.readouterr().err
    assert_one_line_error(code, err, "trained on data outside [0, 1]", "(x + 1) / 2")
    assert not (tmp_path / "out").exists()


def edited_run(run: Path, target: Path, half: str, **args: object) -> Path:
    """A copy of `run` whose config.json records other arguments for one half."""
    shutil.copytree(run, target)
    record = json.loads((target / "config.json").read_text())
    record["architecture"][half]["args"].update(args)
    (target / "config.json").write_text(json.dumps(record))
    return target


def test_a_config_diffusers_would_rebuild_differently_is_refused(
    scratch: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The decoder's act_fn is not in AutoencoderKL's config (the encoder's is): the
    rebuilt decoder would use SiLU where vaekit's uses ReLU."""
    run = edited_run(scratch, tmp_path / "relu", "decoder", act_fn="relu")
    capsys.readouterr()
    code, err = export(run, tmp_path / "out", "--scaling-factor", "1"), capsys.readouterr().err
    assert_one_line_error(code, err, "the decoded images differ from vaekit's by up to")
    assert "nothing was written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["relu"]  # no temporary folder


def test_a_non_finite_scaling_factor_is_refused(
    finetuned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for i, value in enumerate((math.nan, math.inf, -1.0)):
        run = edited_run(finetuned, tmp_path / f"run{i}", "encoder", scaling_factor=value)
        capsys.readouterr()
        code, err = export(run, tmp_path / "out"), capsys.readouterr().err
        assert_one_line_error(code, err, "not a finite number > 0", "--scaling-factor measure")
        assert not (tmp_path / "out").exists()
    assert export(run, tmp_path / "out", "--scaling-factor", "measure") == 0
    for bad in ("nan", "inf", "0"):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            export(run, tmp_path / "other", "--scaling-factor", bad)
        code, err = int(str(e.value.code)), capsys.readouterr().err
        assert_one_line_error(code, err, f"must be a finite number > 0; got {bad!r}")


def test_an_out_whose_links_never_end_is_one_line(
    finetuned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    for out in (loop, loop / "inside"):
        capsys.readouterr()
        code, err = export(finetuned, out), capsys.readouterr().err
        assert_one_line_error(code, err, str(loop))
