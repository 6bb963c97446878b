"""config.yaml never contradicts config.json: the `model` section a run records is the model
trained, for every way a model is made: the config's built-in one (with a preset's
settings overridden), a built-in model made in Python with other settings than the
config's, a model of the user's own (its options naming vaekit's families left out), and
model.init's diffusers start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import vaekit
from conftest import TINY_AUTOENCODERKL, tiny_config
from vaekit.config import ModelConfig


def recorded(run: Path) -> dict[str, Any]:
    return yaml.safe_load((run / "config.yaml").read_text())["model"]


def architecture(run: Path) -> dict[str, Any]:
    return vaekit.load(run).architecture()


def test_a_preset_with_overrides_records_the_model_built(tmp_path: Path) -> None:
    cfg = vaekit.load_config(
        "noise-demo",
        {"model.latent_dim": 3, "model.likelihood": "laplace", "train.epochs": 1},
    )
    cfg.train.out, cfg.train.progress = str(tmp_path / "run"), False
    run = vaekit.train(cfg)
    model = recorded(run)
    arch = architecture(run)
    assert model["latent_dim"] == arch["latent_dim"] == 3
    assert model["likelihood"] == arch["likelihood"] == "laplace"
    assert model["hidden"] == arch["encoder"]["args"]["hidden"]


def test_a_built_in_model_made_in_python_records_its_own_settings(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(arch="conv", channels=[4, 8], latent_dim=3, likelihood="gaussian")
    model = vaekit.VAE.from_config(cfg, (1, 28, 28))
    config = tiny_config(tmp_path / "run")  # the default model section: mlp, latent_dim 4
    run = vaekit.Trainer(model, config).fit().run_dir
    section = recorded(run)
    assert section["arch"] == "conv" and section["channels"] == [4, 8]
    assert section["latent_dim"] == 3 and section["likelihood"] == "gaussian"
    assert section["learn_scale"] is False


@vaekit.register("test-record-spatial-encoder")
class SpatialEncoder(nn.Module):
    """x (B, 1, 28, 28) -> (mu, logvar), each (B, 4, 7, 7): 196 latent values."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, width, 4, stride=4), nn.SiLU())
        self.mu, self.logvar = nn.Conv2d(width, 4, 1), nn.Conv2d(width, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(x)
        return self.mu(h), self.logvar(h)


@vaekit.register("test-record-spatial-decoder")
class SpatialDecoder(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.net = nn.ConvTranspose2d(4, 1, 4, stride=4)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def test_a_custom_spatial_laplace_model_is_recorded_as_it_is(tmp_path: Path) -> None:
    model = vaekit.VAE(
        SpatialEncoder(),
        SpatialDecoder(),
        input_shape=(1, 28, 28),
        latent_shape=(4, 7, 7),
        likelihood="laplace",
    )
    config = tiny_config(tmp_path / "run")
    run = vaekit.Trainer(model, config).fit().run_dir
    text = (run / "config.yaml").read_text()
    section = recorded(run)
    assert section["latent_dim"] == 196 and section["latent_channels"] == 4
    assert section["likelihood"] == "laplace"
    assert "arch" not in section and "hidden" not in section  # no family built it
    assert text.startswith("# The model is test-record-spatial-encoder + test-record-spatial")
    # and the run resumes from its own config.yaml
    resumed = vaekit.load_config(str(run / "config.yaml"), {"train.epochs": 2})
    vaekit.Trainer(None, resumed, resume=True).fit()
    assert recorded(run) == section


def test_model_init_records_the_autoencoderkl_it_starts_from(tmp_path: Path) -> None:
    diffusers = pytest.importorskip("diffusers", reason="needs vaekit[diffusers]")
    torch.manual_seed(0)
    base = tmp_path / "kl"
    diffusers.AutoencoderKL(**TINY_AUTOENCODERKL, sample_size=16).save_pretrained(base)
    images = np.random.default_rng(0).integers(0, 256, (48, 3, 16, 16), dtype=np.uint8)
    np.savez(tmp_path / "images.npz", x_train=images)
    settings = {"data.name": str(tmp_path / "images.npz"), "model.init": f"diffusers:{base}"}
    run = vaekit.train(tiny_config(tmp_path / "run", **settings, **{"train.batch_size": 16}))
    section = recorded(run)
    assert section["arch"] == "autoencoderkl" and section["init"] == f"diffusers:{base}"
    assert section["channels"] == [8, 16] and section["blocks_per_level"] == 1
    assert section["latent_channels"] == 2 and section["latent_dim"] == 2 * 8 * 8
    assert section["likelihood"] == "laplace"
