"""LPIPS and reconstruction FID (rFID) of held-out images: rFID is torchmetrics' FID of the
same pairs, zero for a perfect autoencoder; LPIPS is zero for identical images and positive
otherwise; `vaekit evaluate --rfid --lpips` reports both, and refuses what cannot work in one
line. Weights are seeded random ones (the real ones download, see tests/test_download.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

import vaekit
from conftest import assert_clean_error, run_cli
from vaekit.config import ModelConfig
from vaekit.data import load_data
from vaekit.errors import ConfigError
from vaekit.evaluation import metrics, perceptual_scores
from vaekit.evaluation.perceptual import build_perceptual

SIDE = 16  # LPIPS's VGG needs at least 16 px


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


def _random_lpips() -> nn.Module:
    return build_perceptual("lpips-vgg", "cpu", "random", "random")  # type: ignore[return-value]


class _Flatten(nn.Module):
    out_features = SIDE * SIDE

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return x.flatten(1)


class _Unflatten(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.view(-1, 1, SIDE, SIDE)


def perfect_autoencoder() -> vaekit.VAE:
    """Posterior mean = the image, decoded mean = the latent: every reconstruction is exact."""
    d = SIDE * SIDE
    cfg = ModelConfig(hidden=[4], latent_dim=d, likelihood="gaussian", obs_scale=0.1)
    model = vaekit.VAE.from_config(cfg, (1, SIDE, SIDE))
    model.encoder = _Flatten()
    model.mu_head = nn.Linear(d, d)
    model.logvar_head = nn.Linear(d, d)
    with torch.no_grad():
        model.mu_head.weight.copy_(torch.eye(d))
        model.mu_head.bias.zero_()
        model.logvar_head.weight.zero_()
        model.logvar_head.bias.fill_(-4.0)
    model.decoder = _Unflatten()
    return model.eval()


@pytest.fixture(scope="module")
def trained(trained_run: Path) -> tuple[vaekit.VAE, torch.Tensor]:
    model = vaekit.load(trained_run)
    data = load_data(model.run_config.data, seed=0)
    return model, data.x_train[:150]  # uint8 (N, 1, 28, 28)


def test_rfid_is_torchmetrics_fid_of_the_images_and_their_reconstructions(
    trained: tuple[vaekit.VAE, torch.Tensor],
) -> None:
    model, x = trained
    value = perceptual_scores.rfid(model, x, feature="random", n=150, batch_size=64, seed=3)
    direct = FrechetInceptionDistance(feature=metrics.RandomFeatures(1, seed=3), normalize=True)
    direct.update(x.float() / 255, real=True)
    direct.update(model.reconstruct(x), real=False)
    assert value > 0 and value == pytest.approx(float(direct.compute()), rel=1e-6)
    stats = vaekit.evaluate(model, x, rfid="random", fid_samples=150, seed=3, latent_metrics=False)
    assert stats["rfid"] == pytest.approx(value, rel=1e-6) and stats["rfid_features"] == "random"
    assert "rfid" in stats["seconds"]
    fewer = perceptual_scores.rfid(model, x, feature="random", n=100, seed=3)
    assert fewer != value  # n counts: the first 100 images only


def test_a_perfect_autoencoder_has_zero_rfid_and_zero_lpips() -> None:
    model, x = perfect_autoencoder(), _images(200)
    assert torch.equal(model.reconstruct(x), x)
    shifted = perceptual_scores.rfid(model, x, feature="random", batch_size=64)
    assert abs(shifted) < 1e-3
    distance = _random_lpips()
    assert perceptual_scores.lpips(model, x[:40], None, distance, batch_size=16) == 0.0


def test_lpips_is_the_mean_distance_and_positive_for_real_reconstructions(
    trained: tuple[vaekit.VAE, torch.Tensor],
) -> None:
    model, x = trained
    x = x[:40]  # VGG is the slow part: ~0.1 s per pair here
    distance = _random_lpips()
    value = perceptual_scores.lpips(model, x, None, distance, batch_size=25)
    with torch.no_grad():
        direct = distance(model.reconstruct(x), x.float() / 255)
    assert value > 0 and value == pytest.approx(float(direct.double().mean()), rel=1e-5)
    stats = vaekit.evaluate(model, x, lpips=distance, image_metrics=False, latent_metrics=False)
    assert stats["lpips"] == pytest.approx(value, rel=1e-6)
    assert stats["lpips_net"] == "lpips-vgg (random weights)"


def test_rfid_and_lpips_refuse_what_is_not_an_image() -> None:
    cfg = ModelConfig(hidden=[8], latent_dim=2, likelihood="gaussian")
    table = vaekit.VAE.from_config(cfg, (1, 1, 5)).eval()  # a row of 5 values
    rows = torch.rand(20, 1, 1, 5)
    with pytest.raises(ConfigError, match="rFID compares images"):
        perceptual_scores.rfid(table, rows, feature="random")
    with pytest.raises(ConfigError, match="LPIPS compares images"):
        perceptual_scores.lpips(table, rows, None, _random_lpips(), batch_size=8)


def test_cli_evaluate_reports_rfid_and_lpips(trained_run: Path, tmp_path: Path) -> None:
    random = ["--lpips-backbone-weights", "random", "--lpips-lin-weights", "random"]
    result = run_cli("evaluate", str(trained_run), "--json", "--rfid", "random", "--lpips", *random)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    model = vaekit.load(trained_run)
    data = load_data(model.run_config.data, seed=model.run_config.train.seed)
    assert stats["rfid"] == pytest.approx(
        perceptual_scores.rfid(model, data.x_test, feature="random")
    )
    assert stats["rfid_features"] == "random" and stats["lpips"] > 0
    assert stats["lpips_net"] == "lpips-vgg (random weights)"
    text = run_cli("evaluate", str(trained_run), "--rfid", "random", "--lpips", *random).stdout
    assert "rFID" in text and f"{stats['rfid']:.3f}" in text and "LPIPS" in text
    # offline, with no weights in the cache: one line naming the file's URL
    env = {"TORCH_HOME": str(tmp_path / "torch")}
    missing = run_cli("evaluate", str(trained_run), "--lpips", "lpips-vgg", env=env)
    assert_clean_error(
        missing,
        "https://download.pytorch.org/models/vgg16-397923af.pth",
        "or set --lpips-backbone-weights to its path",  # this command's flag, not train's
    )
    assert_clean_error(
        run_cli("evaluate", str(trained_run), "--lpips-lin-weights", "random"), "need --lpips"
    )
