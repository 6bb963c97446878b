"""Spatial latents: a posterior of C x h x w Gaussians (the autoencoders of latent
diffusion), through the same ELBO, log p(x), sampling, saving, CLI and explorer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import vaekit
from conftest import assert_clean_error, run_cli, tiny_config
from vaekit.config import ModelConfig
from vaekit.data import from_arrays
from vaekit.errors import CheckpointError, ConfigError
from vaekit.models import VAE
from vaekit.models.conv import ConvDecoder, ConvEncoder

SPATIAL = {
    "model.arch": "conv",
    "model.channels": [8, 8],
    "model.latent_channels": 3,
    "model.likelihood": "laplace",
    "data.noise_examples": 128,
    "train.batch_size": 32,
}


@pytest.mark.parametrize(("levels", "side"), [(2, 16), (3, 8), (4, 4)])
def test_the_latent_map_is_the_image_downsampled_by_2_per_level(levels: int, side: int) -> None:
    """Downsampling factors 4, 8 and 16 of a 64x64 image: latent maps 16, 8 and 4 wide."""
    cfg = ModelConfig(arch="conv", channels=[4] * levels, latent_channels=4)
    model = VAE.from_config(cfg, (3, 64, 64))
    assert model.latent_shape == (4, side, side)
    assert model.latent_dim == 4 * side * side
    assert not model.heads  # the posterior comes from a conv, not from linear heads
    x = torch.rand(2, 3, 64, 64)
    mu, logvar = model.posterior(x)  # inside the VAE: flattened
    assert mu.shape == logvar.shape == (2, 4 * side * side)
    maps = model.encoder(x)  # the encoder's own output: the maps
    torch.testing.assert_close(model.latents(mu), maps[0])
    assert model.decode(mu).shape == (2, 3, 64, 64)
    mu_map, _ = model.encode(x)  # to the user: maps, as diffusers' latent_dist gives them
    torch.testing.assert_close(mu_map, maps[0])


def test_the_kl_is_per_element_of_the_map_in_closed_form() -> None:
    model = VAE.from_config(ModelConfig(arch="conv", channels=[4, 4], latent_channels=2), (1, 8, 8))
    x = torch.rand(3, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    terms, kl_per_dim = model.elbo_terms(x, generator=g)
    mu_map, logvar_map = model.encoder(x)
    expected = 0.5 * (mu_map**2 + logvar_map.exp() - logvar_map - 1)  # per element
    torch.testing.assert_close(kl_per_dim, expected.flatten(1))
    torch.testing.assert_close(terms.kl, expected.flatten(1).sum(1))
    assert kl_per_dim.shape == (3, 2 * 2 * 2)


def test_a_spatial_run_trains_evaluates_samples_and_loads_back(tmp_path: Path) -> None:
    run = vaekit.train(tiny_config(tmp_path / "run", **SPATIAL))
    arch = json.loads((run / "config.json").read_text())["architecture"]
    assert arch["latent_shape"] == [3, 7, 7] and arch["latent_dim"] == 147
    model = vaekit.load(run)
    assert model.latent_shape == (3, 7, 7)
    x = torch.rand(4, 1, 28, 28)
    stats = vaekit.evaluate(model, x, iw_samples=4)
    # the importance-weighted bound over 147 latent values is at least the same samples' ELBO
    assert math.isfinite(stats["log_px"]) and stats["log_px"] >= stats["iw_elbo"]
    assert stats["active_units"] <= 147
    assert model.sample(5, generator=torch.Generator().manual_seed(0)).shape == (5, 1, 28, 28)
    assert model.interpolate(x[:2], x[2:], steps=3).shape == (2, 3, 1, 28, 28)
    # the same weights and map come back from the folder, bit for bit
    again = vaekit.load(run)
    torch.testing.assert_close(again.reconstruct(x), model.reconstruct(x), rtol=0, atol=0)


def test_the_cli_reports_and_explores_a_spatial_latent(tmp_path: Path) -> None:
    run = vaekit.train(tiny_config(tmp_path / "run", **SPATIAL))
    result = run_cli("report", str(run))
    assert result.returncode == 0, result.stderr
    page = (run / "report.html").read_text()
    assert "3x7x7 spatial latent (147 values)" in page
    card = run_cli("evaluate", str(run), "--iw-samples", "2", "--json")
    assert card.returncode == 0, card.stderr
    assert json.loads(card.stdout)["n"] > 0

    from vaekit.viz import explore

    x = (torch.rand(8, 1, 28, 28) * 255).to(torch.uint8)
    info = explore.Explorer(vaekit.load(run), x).info()
    assert info["latent_shape"] == [3, 7, 7] and info["latent_dim"] == 147
    assert len(info["shown"]) == 16  # the 16 most active values of the map get sliders


@vaekit.register("test-spatial-encoder")
class SpatialEncoder(nn.Module):
    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 4, stride=4)  # 8x8 -> 2x2, moments of 2 channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.conv(x).chunk(2, dim=1)
        return mu, logvar


@vaekit.register("test-spatial-decoder")
class SpatialDecoder(nn.Module):
    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(2, channels, 4, stride=4)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.dim() == 4, "the decoder is given the map"
        return self.up(z)


def test_a_users_own_spatial_pair_trains_saves_and_loads(tmp_path: Path) -> None:
    model = VAE(SpatialEncoder(), SpatialDecoder(), latent_shape=(2, 2, 2), input_shape=(1, 8, 8))
    assert model.latent_dim == 8
    x = torch.rand(64, 1, 8, 8)
    config = tiny_config(tmp_path / "run", **{"train.epochs": 2, "train.batch_size": 16})
    result = vaekit.Trainer(model, config, data=from_arrays(x, x[:16])).fit()
    loss = [r["train_nelbo"] for r in result.history]
    assert loss[-1] < loss[0]
    back = vaekit.load(result.run_dir)
    assert back.latent_shape == (2, 2, 2)
    torch.testing.assert_close(back.reconstruct(x[:4]), result.model.reconstruct(x[:4]))


def test_a_spatial_encoder_of_the_wrong_shape_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"each \(B, 3, 2, 2\)"):
        VAE(SpatialEncoder(), SpatialDecoder(), latent_shape=(3, 2, 2), input_shape=(1, 8, 8))
    with pytest.raises(ConfigError, match="holds 8 values, but latent_dim is 9"):
        VAE(
            SpatialEncoder(),
            SpatialDecoder(),
            latent_dim=9,
            latent_shape=(2, 2, 2),
            input_shape=(1, 8, 8),
        )


def test_a_spatial_latent_refuses_labels_and_the_mlp() -> None:
    with pytest.raises(ConfigError, match="needs model.arch conv"):
        VAE.from_config(ModelConfig(arch="mlp", latent_channels=2), (1, 8, 8))
    with pytest.raises(ConfigError, match="needs a latent vector"):
        VAE.from_config(
            ModelConfig(arch="conv", channels=[4], latent_channels=2, conditional=True),
            (1, 8, 8),
            num_classes=3,
        )
    with pytest.raises(ValueError, match="takes no label embedding"):
        ConvEncoder((1, 8, 8), [4], cond_dim=3, latent_channels=2)


@pytest.mark.parametrize("bad", [[3, 7], [0, 7, 7], "3x7x7", [3, 7, 8]])
def test_a_hostile_latent_shape_in_config_json_is_one_line(tmp_path: Path, bad: object) -> None:
    run = vaekit.train(tiny_config(tmp_path / "run", **SPATIAL))
    record = json.loads((run / "config.json").read_text())
    record["architecture"]["latent_shape"] = bad
    (run / "config.json").write_text(json.dumps(record))
    with pytest.raises((CheckpointError, ConfigError)):
        vaekit.load(run)
    assert_clean_error(run_cli("sample", str(run), "--out", str(tmp_path / "s.png")))


def test_the_decoder_takes_the_map_through_a_conv() -> None:
    dec = ConvDecoder((3, 16, 16), [4, 8], latent_channels=5)
    assert not hasattr(dec, "fc")  # no dense layer between the map and the first level
    assert dec(torch.zeros(1, 5, 4, 4)).shape == (1, 3, 16, 16)
