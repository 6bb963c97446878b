"""The importance-weighted log p(x) against an exact value, its bounds and monotonicity in K,
and `evaluate` / `vaekit evaluate` reporting every number."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal

import vaekit
from conftest import assert_clean_error, run_cli
from vaekit.config import ModelConfig
from vaekit.data import load_data, to_float
from vaekit.data.sources import make_noise
from vaekit.errors import ConfigError
from vaekit.evaluation.evaluate import EvaluateOptions, evaluate_with
from vaekit.evaluation.likelihood import importance_sampling, log_likelihood_broadcast

SIGMA = 0.3  # the decoder's fixed standard deviation


class _Identity(nn.Module):
    """Encoder body x -> x.flatten(1): the heads then make q(z|x) affine in x."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.out_features = features

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return x.flatten(1)


class _LinearDecoder(nn.Module):
    def __init__(self, w: torch.Tensor, b: torch.Tensor, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.linear = nn.Linear(w.shape[1], w.shape[0])
        self.linear.weight.data.copy_(w)
        self.linear.bias.data.copy_(b)
        self.shape = shape

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z).view(-1, *self.shape)


def linear_gaussian_vae(exact_posterior: bool) -> tuple[vaekit.VAE, MultivariateNormal]:
    """p(z) = N(0, I), p(x|z) = N(Wz + b, SIGMA^2 I), so p(x) = N(b, WW^T + SIGMA^2 I).

    W has orthogonal columns, which makes the true posterior N(m(x), S) diagonal:
    S = (I + W^T W / SIGMA^2)^-1, m(x) = S W^T (x - b) / SIGMA^2. With `exact_posterior`
    the encoder outputs exactly that; otherwise a poor guess (shrunk means, twice the variance).
    """
    shape = (1, 2, 2)
    cfg = ModelConfig(hidden=[4], latent_dim=2, likelihood="gaussian", obs_scale=SIGMA)
    model = vaekit.VAE.from_config(cfg, shape)
    w = torch.tensor([[0.8, 0.0], [0.8, 0.0], [0.0, 0.5], [0.0, -0.5]])  # (P=4, D=2)
    b = torch.tensor([0.5, 0.3, 0.6, 0.4])
    s = torch.linalg.inv(torch.eye(2) + w.T @ w / SIGMA**2)  # diagonal
    gain = s @ w.T / SIGMA**2  # (2, 4): m(x) = gain (x - b)
    logvar = torch.log(torch.diagonal(s))
    if not exact_posterior:  # poor but safe: a wider proposal keeps the weights' variance finite
        gain, logvar = 0.8 * gain, logvar + math.log(2.0)
    model.encoder = _Identity(4)
    model.mu_head = nn.Linear(4, 2)
    model.mu_head.weight.data.copy_(gain)
    model.mu_head.bias.data.copy_(-gain @ b)
    model.logvar_head = nn.Linear(4, 2)
    model.logvar_head.weight.data.zero_()
    model.logvar_head.bias.data.copy_(logvar)
    model.decoder = _LinearDecoder(w, b, shape)
    px = MultivariateNormal(b, covariance_matrix=w @ w.T + SIGMA**2 * torch.eye(4))
    return model.eval(), px


def _data_from(px: MultivariateNormal, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    x = px.sample((n,))
    return x.view(n, 1, 2, 2), px.log_prob(x).double()


@pytest.mark.parametrize("k", [1, 10])
def test_with_the_exact_posterior_every_weight_is_p_x(k: int) -> None:
    model, px = linear_gaussian_vae(exact_posterior=True)
    x, exact = _data_from(px)
    est = importance_sampling(model, x, k, seed=3)
    # p(x, z) / q(z|x) = p(x) for every z: only float32 rounding remains
    assert torch.allclose(est.log_px, exact, atol=2e-4), (est.log_px - exact).abs().max()
    assert torch.allclose(est.ess, torch.full_like(est.ess, float(k)), rtol=1e-3)


def test_the_estimate_converges_to_the_exact_log_px_with_a_poor_encoder() -> None:
    model, px = linear_gaussian_vae(exact_posterior=False)
    x, exact = _data_from(px)
    gap_1 = exact - importance_sampling(model, x, 1, seed=3).log_px
    k = 4000
    est = importance_sampling(model, x, k, seed=3)
    err = est.log_px - exact
    # K=1 is the ELBO: KL(q || p(z|x)) below, here about 0.8 nats; so the test can tell
    assert gap_1.mean() > 0.3
    # stated tolerance: within 0.02 nats per example on average at K=4000 (measured ~0.011)
    assert err.abs().mean() < 0.02, err.abs().mean()
    # and statistically: the delta method gives Var(log mean w) ~ (K/ESS - 1)/K per example;
    # the bias, ~ -(K/ESS - 1)/(2K) < 2e-4 nats, is far below that noise
    sd = ((k / est.ess - 1) / k).sqrt()
    assert (err / sd).abs().max() < 5
    assert abs(err.mean()) < 4 * float(sd.pow(2).mean().sqrt()) / math.sqrt(len(err))


@pytest.fixture(scope="module")
def trained(trained_run: Path) -> tuple[vaekit.VAE, torch.Tensor]:
    """The shared tiny trained model and 300 fresh images of its kind (held out)."""
    model = vaekit.load(trained_run)
    cfg = dataclasses.replace(model.run_config.data, noise_examples=300)
    return model, to_float(make_noise(cfg, seed=123).x_train)


def _paired_z(a: torch.Tensor, b: torch.Tensor) -> float:
    """How many standard errors the mean of a - b lies above 0 (a paired test)."""
    d = a - b
    return float(d.mean() / (d.std(unbiased=True) / math.sqrt(d.numel())))


def test_the_estimate_is_never_below_the_elbo(trained: tuple[vaekit.VAE, torch.Tensor]) -> None:
    model, x = trained
    est = importance_sampling(model, x, 10, seed=5)
    # Jensen on the same samples: log mean w >= mean log w, for every example
    assert (est.log_px >= est.elbo - 1e-9).all()
    # against the independently drawn single-sample ELBO of elbo_stats: above on average,
    # by more than 3 standard errors of the paired difference
    with torch.no_grad():
        terms, _ = model.elbo_terms(x, generator=torch.Generator().manual_seed(9))
    assert _paired_z(est.log_px, -terms.nelbo.double()) > 3


def test_the_estimate_rises_with_k(trained: tuple[vaekit.VAE, torch.Tensor]) -> None:
    model, x = trained
    est = {k: importance_sampling(model, x, k, seed=11).log_px for k in (1, 10, 100)}
    # E[IW_K] is non-decreasing in K (Burda et al. 2015, Theorem 1); examples are
    # independent, so the paired mean difference is tested against its standard error
    assert _paired_z(est[10], est[1]) > 3
    assert _paired_z(est[100], est[10]) > 3


def test_k1_is_the_single_sample_elbo(trained: tuple[vaekit.VAE, torch.Tensor]) -> None:
    model, x = trained
    est = importance_sampling(model, x, 1, seed=2)
    assert torch.equal(est.log_px, est.elbo)
    assert torch.allclose(est.ess, torch.ones_like(est.ess))


def test_an_example_does_not_depend_on_the_budget(trained: tuple[vaekit.VAE, torch.Tensor]) -> None:
    model, x = trained
    x = x[:12]
    pixels = 28 * 28
    small = importance_sampling(
        model, x, 50, seed=4, budget=7 * pixels
    ).log_px  # K split into chunks
    large = importance_sampling(
        model, x, 50, seed=4, budget=10_000 * pixels
    ).log_px  # all 12 in one pass
    assert torch.allclose(small, large, atol=1e-4)
    assert not torch.allclose(small, importance_sampling(model, x, 50, seed=5).log_px, atol=1e-4)


def test_parallel_passes_give_the_same_estimate_and_restore_threads(
    trained: tuple[vaekit.VAE, torch.Tensor],
) -> None:
    model, x = trained
    threads = torch.get_num_threads()
    serial = importance_sampling(model, x[:40], 30, seed=2, budget=784 * 60, workers=1)
    parallel = importance_sampling(model, x[:40], 30, seed=2, budget=784 * 60, workers=3)
    assert torch.get_num_threads() == threads
    assert not parallel.log_px.requires_grad  # no_grad holds inside the worker threads
    for a, b in ((serial.log_px, parallel.log_px), (serial.ess, parallel.ess)):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-4)


def test_broadcast_bernoulli_likelihood_matches_the_model(
    trained: tuple[vaekit.VAE, torch.Tensor],
) -> None:
    model, x = trained
    x = x[:5]
    params = torch.randn(3 * 5, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 4
    x_rep = x.repeat(3, 1, 1, 1)  # sample-major, as the estimator orders rows
    expected = model.log_likelihood(x_rep, params).view(3, 5)
    got = log_likelihood_broadcast(model, x, params)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("likelihood, learn_scale", [("gaussian", True), ("laplace", False)])
def test_other_likelihoods_match_the_model_importance_weights(
    likelihood: str, learn_scale: bool
) -> None:
    cfg = ModelConfig(hidden=[16], latent_dim=3, likelihood=likelihood, learn_scale=learn_scale)
    model = vaekit.VAE.from_config(cfg, (1, 6, 6)).eval()
    x = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    mu, logvar = model.encode(x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(7, 4, 3)
    params = model.decode(z.reshape(28, 3))
    expected = model.log_likelihood(x.repeat(7, 1, 1, 1), params).view(7, 4)
    assert torch.allclose(log_likelihood_broadcast(model, x, params), expected, atol=1e-4)
    assert torch.isfinite(importance_sampling(model, x, 5).log_px).all()


def test_conditional_models_are_estimated_with_their_labels(tiny) -> None:
    run = vaekit.train(tiny(**{"model.conditional": True}))
    model = vaekit.load(run)
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    a = importance_sampling(
        model, x, 20, y=torch.zeros(6, dtype=torch.long), budget=784 * 30
    ).log_px
    b = importance_sampling(
        model, x, 20, y=torch.full((6,), 3, dtype=torch.long), budget=784 * 30
    ).log_px
    assert torch.isfinite(a).all() and not torch.allclose(a, b)


def test_bf16_decoding_stays_close_to_fp32(trained: tuple[vaekit.VAE, torch.Tensor]) -> None:
    model, x = trained
    fp32 = importance_sampling(model, x[:50], 20, seed=1).log_px
    bf16 = importance_sampling(model, x[:50], 20, seed=1, precision="bf16").log_px
    assert (bf16 - fp32).abs().mean() < 0.05  # nats; the measured error is in benchmarks/


def test_bad_arguments_are_config_errors(trained: tuple[vaekit.VAE, torch.Tensor]) -> None:
    model, x = trained
    with pytest.raises(ConfigError, match="at least 1"):
        importance_sampling(model, x, 0)
    with pytest.raises(ConfigError, match="precision"):
        importance_sampling(model, x, 2, precision="fp8")


def test_evaluate_reports_every_number(trained: tuple[vaekit.VAE, torch.Tensor]) -> None:
    model, x = trained
    stats = vaekit.evaluate(model, x, iw_samples=10)
    d = 28 * 28
    assert stats["n"] == 300
    assert stats["nelbo_bits_per_dim"] == pytest.approx(stats["nelbo"] / (d * math.log(2)))
    assert stats["nll_bits_per_dim"] == pytest.approx(-stats["log_px"] / (d * math.log(2)))
    assert stats["log_px"] >= stats["iw_elbo"]
    assert 1 <= stats["iw_ess"] <= 10
    assert sum(stats["kl_per_dim"]) == pytest.approx(stats["kl"], rel=1e-5)
    assert len(stats["kl_per_dim"]) == len(stats["activity"]) == model.latent_dim
    assert stats["active_units"] == sum(a > 0.01 for a in stats["activity"])
    # mean per-image PSNR >= PSNR of the mean MSE (Jensen: -log is convex)
    assert stats["psnr"] >= 10 * math.log10(1 / stats["mse"]) - 1e-9
    assert 0 < stats["ssim"] <= 1
    assert set(stats["seconds"]) == {"elbo", "log_px", "image_metrics", "latent_metrics"}
    again = vaekit.evaluate(model, x, iw_samples=10)
    assert again["log_px"] == stats["log_px"]  # seeded


def test_the_options_record_gives_what_the_keywords_give(
    trained: tuple[vaekit.VAE, torch.Tensor],
) -> None:
    model, x = trained
    options = EvaluateOptions(batch_size=64, seed=3, iw_samples=4, latent_metrics=False)
    record = evaluate_with(model, x[:100], None, options)
    keywords = vaekit.evaluate(model, x[:100], batch_size=64, seed=3, iw_samples=4,
                               latent_metrics=False)  # fmt: skip
    assert set(record["seconds"]) == set(keywords["seconds"]) == {"elbo", "log_px", "image_metrics"}
    for key in ("nelbo", "log_px", "iw_elbo", "mse", "ssim"):
        assert record[key] == keywords[key], key
    assert record["nelbo"] != vaekit.evaluate(model, x[:100], seed=4)["nelbo"]  # seeded
    with pytest.raises(ConfigError, match="iw_samples"):
        evaluate_with(model, x, None, EvaluateOptions(iw_samples=-1))


def test_cli_evaluate_prints_and_emits_the_same_numbers(trained_run: Path) -> None:
    result = run_cli("evaluate", str(trained_run), "--iw-samples", "5", "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    model = vaekit.load(trained_run)
    data = load_data(model.run_config.data, seed=model.run_config.train.seed)
    api = vaekit.evaluate(model, data.x_test, iw_samples=5)
    for key in ("nelbo", "log_px", "log_px_stderr", "mse", "ssim", "active_units"):
        assert stats[key] == pytest.approx(api[key], rel=1e-6), key  # float32 sums
    text = run_cli("evaluate", str(trained_run), "--iw-samples", "5").stdout
    for needle in (
        "negative ELBO",
        "log p(x), K=5",
        f"{stats['log_px']:.3f}",
        "active units",
        "SSIM",
        "KL per dimension",
    ):
        assert needle in text, text
    assert_clean_error(run_cli("evaluate", str(trained_run), "--fid-samples", "0"), "--fid-samples")
    if importlib.util.find_spec("torch_fidelity") is None:  # the Inception path cannot run
        assert_clean_error(run_cli("evaluate", str(trained_run), "--fid"), "--fid random")


def test_decoder_width_is_the_widest_decoder_tensor() -> None:
    from vaekit.config import ModelConfig
    from vaekit.evaluation.likelihood import decoder_width

    mlp = vaekit.VAE.from_config(ModelConfig(hidden=[1000], latent_dim=3), (1, 28, 28))
    assert decoder_width(mlp) == 1000  # the hidden layer is wider than the 784 outputs
    gaussian = vaekit.VAE.from_config(
        ModelConfig(hidden=[64], latent_dim=3, likelihood="gaussian", learn_scale=True),
        (1, 28, 28),
    )
    assert decoder_width(gaussian) == 2 * 784  # a mean and a scale per pixel
    conv = vaekit.VAE.from_config(
        ModelConfig(arch="conv", channels=[8, 16], latent_dim=3), (3, 32, 32)
    )
    assert decoder_width(conv) == 8 * 32 * 32  # its last feature map, not the 3 x 32 x 32 out
    conditional = vaekit.VAE.from_config(
        ModelConfig(hidden=[50], latent_dim=3, conditional=True), (1, 8, 8), 4
    )
    assert decoder_width(conditional) == 64
    assert not any(m._forward_hooks for m in conv.modules())  # the probe's hooks are gone


def test_a_pass_holds_at_most_the_budget_in_the_decoders_widest_tensor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vaekit.config import ModelConfig
    from vaekit.evaluation.likelihood import decoder_width

    model = vaekit.VAE.from_config(
        ModelConfig(arch="conv", channels=[8, 16], latent_dim=3), (3, 32, 32)
    )
    width = decoder_width(model)
    rows: list[int] = []
    decode = model.decode
    monkeypatch.setattr(model, "decode", lambda z, y=None: rows.append(len(z)) or decode(z, y))
    x = torch.rand(12, 3, 32, 32)
    importance_sampling(model, x, 10, budget=25 * width, workers=1)
    # 25 rows fit: 2 examples x 10 samples per pass (with the output's size, 3 x 32 x 32,
    # it would have been 266 rows: all 12 examples in one pass)
    assert rows == [1] + [20] * 6  # the first: decoder_width's one-example probe


@pytest.mark.parametrize("likelihood", ["gaussian", "laplace"])
def test_a_table_models_bits_per_dim_has_no_pixel_bins(likelihood: str) -> None:
    """The +8 bits of an 8-bit pixel's bin belong to images in [0, 1], not table rows."""
    from vaekit.normalize import fit

    torch.manual_seed(0)
    rows = torch.randn(32, 5) * 30 + 160
    record = fit(rows.view(32, 5, 1, 1), "standardize").record()
    cfg = ModelConfig(hidden=[8], latent_dim=2, likelihood=likelihood)
    model = vaekit.VAE.from_config(cfg, (5, 1, 1), normalization=record).eval()
    stats = vaekit.evaluate(model, rows, iw_samples=2, image_metrics=False)
    assert stats["nelbo_bits_per_dim"] == pytest.approx(stats["nelbo"] / (5 * math.log(2)))
    assert stats["nll_bits_per_dim"] == pytest.approx(-stats["log_px"] / (5 * math.log(2)))
