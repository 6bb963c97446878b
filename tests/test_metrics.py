"""SSIM, PSNR, bits/dim, KL per dimension, active units and FID against closed forms,
hand computations and their defining properties."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import vaekit
from vaekit.data import load_data, to_float
from vaekit.errors import ConfigError, DownloadError
from vaekit.evaluation import inception, metrics
from vaekit.evaluation.likelihood import elbo_stats

C1, C2 = 0.01**2, 0.03**2


def _images(n: int = 4, c: int = 1, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


# -- SSIM -------------------------------------------------------------------------------------
def test_ssim_of_an_image_with_itself_is_one_and_it_is_symmetric_and_bounded() -> None:
    x, y = _images(seed=0), _images(seed=1)
    assert torch.allclose(metrics.ssim(x, x), torch.ones(4, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(metrics.ssim(x, y), metrics.ssim(y, x), atol=1e-6)
    s = metrics.ssim(x, y)
    assert ((s > -1) & (s < 1)).all()
    assert (metrics.ssim(x, 1 - x) < 0).all()  # inverted structure: negative covariance


def test_ssim_falls_as_noise_grows() -> None:
    x = _images(1, size=28)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(x.shape, generator=g)
    values = [float(metrics.ssim(x, (x + s * noise).clamp(0, 1))) for s in (0.01, 0.05, 0.2, 0.5)]
    assert values == sorted(values, reverse=True) and values[0] > 0.95 and values[-1] < 0.6


@pytest.mark.parametrize("a, b", [(0.2, 0.6), (0.5, 0.5), (0.0, 1.0)])
def test_ssim_of_two_constant_images_is_the_luminance_term(a: float, b: float) -> None:
    # no variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1) * (C2 / C2); for (0.2, 0.6): 0.6001
    x, y = (torch.full((1, 1, 12, 12), v, dtype=torch.float64) for v in (a, b))
    expected = (2 * a * b + C1) / (a * a + b * b + C1)
    # float32, as torchmetrics users compute it: E[x^2] - E[x]^2 of a flat image is ~1e-8
    # instead of 0, which against C2 = 9e-4 moves the contrast term by up to ~1e-4
    assert float(metrics.ssim(x, y)) == pytest.approx(expected, abs=2e-4)
    hand = {(0.2, 0.6): 0.24010 / 0.40010, (0.5, 0.5): 1.0, (0.0, 1.0): 0.0001 / 1.0001}
    assert float(metrics.ssim(x, y)) == pytest.approx(hand[(a, b)], abs=2e-4)


def test_ssim_and_psnr_are_torchmetrics_own_numbers() -> None:
    """vaekit's SSIM and PSNR are the library's: equal on the same images, any size the
    library takes, and on a trained model's reconstructions as `evaluate` reports them."""
    from torchmetrics.functional.image.psnr import peak_signal_noise_ratio
    from torchmetrics.functional.image.ssim import structural_similarity_index_measure

    for size, c in ((28, 1), (16, 3), (11, 1), (8, 2)):
        x, y = _images(3, c=c, size=size, seed=0), _images(3, c=c, size=size, seed=1)
        y = 0.7 * x + 0.3 * y
        want = structural_similarity_index_measure(y, x, data_range=1.0, reduction="none")
        assert torch.equal(metrics.ssim(y, x), want.double())
        exact = structural_similarity_index_measure(y.double(), x.double(), data_range=1.0)
        assert float(metrics.ssim(y, x).mean()) == pytest.approx(float(exact), abs=1e-6)
        y = y.double()
        want = peak_signal_noise_ratio(
            y, x.double(), data_range=1.0, reduction="none", dim=(1, 2, 3)
        )
        assert torch.equal(metrics.psnr(y, x), want)


def test_evaluate_reports_torchmetrics_ssim_and_psnr_of_the_reconstructions(
    trained_run: Path,
) -> None:
    from torchmetrics.functional.image.psnr import peak_signal_noise_ratio
    from torchmetrics.functional.image.ssim import structural_similarity_index_measure

    model = vaekit.load(trained_run)
    x = to_float(load_data(model.run_config.data, seed=0).x_test[:50])
    stats = vaekit.evaluate(model, x, iw_samples=0, latent_metrics=False)
    recon = model.reconstruct(x).double()
    ssim = structural_similarity_index_measure(recon.float(), x, data_range=1.0, reduction="none")
    psnr = peak_signal_noise_ratio(
        recon, x.double(), data_range=1.0, reduction="none", dim=(1, 2, 3)
    )
    assert stats["ssim"] == pytest.approx(float(ssim.double().mean()), abs=1e-9)
    assert stats["psnr"] == pytest.approx(float(psnr.mean()), abs=1e-12)


def test_ssim_averages_channels_and_fits_small_images() -> None:
    x, y = _images(2, c=3, seed=0), _images(2, c=3, seed=1)
    per_channel = torch.stack([metrics.ssim(x[:, i : i + 1], y[:, i : i + 1]) for i in range(3)])
    assert torch.allclose(metrics.ssim(x, y), per_channel.mean(0), atol=1e-6)
    for size in (5, 4, 1):  # reflection padding of 3.5 sigma must fit: a narrower window
        small = _images(2, size=size)
        assert metrics.ssim_sigma(size, size) < 1.5
        assert torch.allclose(metrics.ssim(small, small), torch.ones(2, dtype=torch.float64))
        assert (metrics.ssim(small, 1 - small) < 1).all()
    assert metrics.ssim_sigma(6, 40) == 1.5
    with pytest.raises(ConfigError, match="shape"):
        metrics.ssim(x, y[:, :1])


# -- PSNR, MSE, bits/dim ------------------------------------------------------------------------
def test_psnr_and_mse() -> None:
    x = torch.zeros(2, 1, 4, 4)
    y = torch.full((2, 1, 4, 4), 0.1)  # MSE 0.01 -> 20 dB
    assert torch.allclose(metrics.mse(x, y), torch.full((2,), 0.01, dtype=torch.float64))
    assert torch.allclose(metrics.psnr(x, y), torch.full((2,), 20.0, dtype=torch.float64))
    assert float(metrics.psnr(x, x)[0]) == pytest.approx(100.0)  # capped, not infinite


def test_bits_per_dim() -> None:
    assert metrics.bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    # a density on [0, 1] becomes the probability of an 8-bit bin: 8 bits more per dimension
    assert metrics.bits_per_dim(0.0, 10, "gaussian") == pytest.approx(8.0)


# -- the latent space ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(trained_run: Path) -> tuple[vaekit.VAE, torch.Tensor]:
    model = vaekit.load(trained_run)
    data = load_data(model.run_config.data, seed=0)
    return model, data.x_train[:200]  # uint8, as the report passes it


def test_kl_per_dimension_sums_to_the_kl_term(trained: tuple[vaekit.VAE, torch.Tensor]) -> None:
    model, x = trained
    kl = metrics.kl_per_dimension(model, x, batch_size=64)
    assert kl.shape == (model.latent_dim,) and (kl >= 0).all()
    assert float(kl.sum()) == pytest.approx(elbo_stats(model, x)["kl"], rel=1e-5)


def test_active_units_are_the_dimensions_whose_posterior_mean_varies(
    trained: tuple[vaekit.VAE, torch.Tensor],
) -> None:
    model, x = trained
    model = vaekit.load(Path(model.run_config.train.out))
    with torch.no_grad():  # make units 0 and 1 ignore x, and unit 2 swing widely with it
        model.mu_head.weight[:2] = 0.0
        model.mu_head.weight[2] *= 50.0
    au = metrics.active_units(model, x, batch_size=64)
    mu = model.encode(to_float(x))[0].double().detach()
    assert torch.allclose(au.activity, mu.var(0, unbiased=False), rtol=1e-6, atol=1e-12)
    assert au.activity[0] == 0 and au.activity[1] == 0 and au.activity[2] > 0.01
    assert au.count == int((au.activity > 0.01).sum()) >= 1
    activity, count = au  # unpacks as (per-dimension tensor, count)
    assert count == au.count


# -- FID ------------------------------------------------------------------------------------------
def test_random_features_are_seeded() -> None:
    a, b, c = (
        metrics.RandomFeatures(1, seed=0),
        metrics.RandomFeatures(1, seed=0),
        metrics.RandomFeatures(1, seed=1),
    )
    x = _images(3, size=28)
    assert torch.equal(a(x), b(x)) and not torch.equal(a(x), c(x))
    assert a(x).shape == (3, a.num_features)


def test_fid_is_zero_for_one_set_and_grows_with_a_shift() -> None:
    real = _images(300, size=28, seed=0)
    same = metrics.fid_images(real, real, "random")
    near = metrics.fid_images(real, (real + 0.05).clamp(0, 1), "random")
    far = metrics.fid_images(real, (real + 0.3).clamp(0, 1), "random")
    assert abs(same) < 1e-3 * far and 0 < near < far


def test_fid_of_prior_samples_through_a_pluggable_network(
    trained: tuple[vaekit.VAE, torch.Tensor],
) -> None:
    model, x = trained

    class Pooled(nn.Module):  # any module images -> (N, F) works
        num_features = 16

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return nn.functional.adaptive_avg_pool2d(images, 4).flatten(1)

    a = metrics.fid(model, x, feature="random", n=150, seed=0)
    assert a > 0 and a == metrics.fid(model, x, feature="random", n=150, seed=0)
    assert metrics.fid(model, x, feature=Pooled(), n=150) > 0
    stats = vaekit.evaluate(model, x[:150], iw_samples=0, fid="random", fid_samples=150)
    assert stats["fid"] == pytest.approx(a) and stats["fid_features"] == "random"


def test_inception_fid_without_torch_fidelity_or_weights_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import torchmetrics.image.fid as tm_fid

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(tm_fid, "_TORCH_FIDELITY_AVAILABLE", False)
    with pytest.raises(ConfigError, match="torch-fidelity"):
        metrics.fid_images(_images(), _images(), "inception")
    # with torch-fidelity, the weights come next: offline, one line naming the URL
    monkeypatch.setattr(tm_fid, "_TORCH_FIDELITY_AVAILABLE", True)
    with pytest.raises(DownloadError, match="--fid-weights") as err:
        metrics.fid_images(_images(), _images(), "inception")
    assert inception.URL in str(err.value) and not inception.checkpoint().exists()

    def no_network(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Error(s) in loading state_dict for FeatureExtractorInceptionV3")

    monkeypatch.setattr(tm_fid.FrechetInceptionDistance, "__init__", no_network)
    local = tmp_path / inception.FILE
    torch.save({"fc.weight": torch.zeros(2, 2)}, local)
    with pytest.raises(ConfigError, match="could not be loaded.*--fid-weights"):
        metrics.fid_images(_images(), _images(), "inception", weights=str(local))


def test_fid_says_so_when_torchmetrics_fid_cannot_import(monkeypatch: pytest.MonkeyPatch) -> None:
    # torch-fidelity installed beside a torchvision that does not import: torchmetrics' FID
    # module then fails to import at all, even for the random feature network
    monkeypatch.setitem(sys.modules, "torchmetrics.image.fid", None)
    with pytest.raises(ConfigError, match="does not import here.*pip uninstall torch-fidelity"):
        metrics.fid_images(_images(), _images(), "random")
