"""KL, log-likelihoods and bounds against torch.distributions and closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

from vaekit import losses


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_kl_matches_torch_distributions() -> None:
    g = _gen()
    mu, logvar = torch.randn(16, 7, generator=g) * 2, torch.randn(16, 7, generator=g)
    q = D.Normal(mu, torch.exp(0.5 * logvar))
    p = D.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = D.kl_divergence(q, p)
    assert torch.allclose(losses.kl_standard_normal(mu, logvar), expected, atol=1e-5)


def test_kl_is_zero_at_the_prior_and_positive_elsewhere() -> None:
    zero = torch.zeros(3, 5)
    assert torch.allclose(losses.kl_standard_normal(zero, zero), zero)
    assert (losses.kl_standard_normal(zero + 0.1, zero) > 0).all()


@pytest.mark.parametrize("binary", [True, False])
def test_log_bernoulli_matches_torch(binary: bool) -> None:
    g = _gen(1)
    logits = torch.randn(4, 1, 5, 5, generator=g) * 3
    x = torch.rand(4, 1, 5, 5, generator=g)
    if binary:
        x = (x > 0.5).float()
        expected = D.Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    else:  # continuous targets: the negative binary cross-entropy
        p = torch.sigmoid(logits.double())
        expected = (x * torch.log(p) + (1 - x) * torch.log1p(-p)).flatten(1).sum(1).float()
    assert torch.allclose(losses.log_bernoulli(x, logits), expected, atol=1e-4)


def test_log_bernoulli_keeps_a_gradient_where_sigmoid_saturates() -> None:
    logits = torch.full((1, 1, 1, 1), -40.0, requires_grad=True)
    loss = -losses.log_bernoulli(torch.ones(1, 1, 1, 1), logits).sum()
    loss.backward()
    assert torch.isfinite(loss) and logits.grad is not None
    assert logits.grad.abs().item() > 0.5  # sigmoid + BCE would give 0 or NaN here


def test_log_gaussian_and_laplace_match_torch() -> None:
    g = _gen(2)
    x, loc = torch.rand(3, 2, 4, 4, generator=g), torch.rand(3, 2, 4, 4, generator=g)
    logvar = torch.randn(3, 2, 4, 4, generator=g) * 0.5
    expected = D.Normal(loc, torch.exp(0.5 * logvar)).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(losses.log_gaussian(x, loc, logvar), expected, atol=1e-4)
    fixed = D.Normal(loc, 0.3).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(losses.log_gaussian(x, loc, 2 * math.log(0.3)), fixed, atol=1e-4)
    logscale = torch.randn(3, 2, 4, 4, generator=g) * 0.5
    expected = D.Laplace(loc, torch.exp(logscale)).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(losses.log_laplace(x, loc, logscale), expected, atol=1e-4)
    l1 = (x - loc).abs().flatten(1).sum(1)
    assert torch.allclose(-losses.log_laplace(x, loc, 0.0) - 32 * math.log(2), l1, atol=1e-4)


def test_log_normal_diag_and_prior_match_torch() -> None:
    g = _gen(3)
    z, mu, logvar = (torch.randn(6, 5, generator=g) for _ in range(3))
    expected = D.Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
    assert torch.allclose(losses.log_normal_diag(z, mu, logvar), expected, atol=1e-5)
    assert torch.allclose(
        losses.log_standard_normal(z), D.Normal(0.0, 1.0).log_prob(z).sum(-1), atol=1e-5
    )


def test_reparameterized_gradient_matches_the_analytic_one() -> None:
    # E_q[z^2] = mu^2 + sigma^2: d/dmu = 2 mu, d/dlogvar = sigma^2
    mu = torch.tensor([0.7, -1.2], requires_grad=True)
    logvar = torch.tensor([-0.5, 0.3], requires_grad=True)
    z = losses.reparameterize(mu, logvar, _gen(4), samples=200_000)  # (K, D)
    z.pow(2).mean(0).sum().backward()
    assert torch.allclose(mu.grad, 2 * mu.detach(), atol=0.02)
    assert torch.allclose(logvar.grad, logvar.detach().exp(), atol=0.02)


def test_reparameterize_is_seeded() -> None:
    mu, logvar = torch.zeros(2, 3), torch.zeros(2, 3)
    a = losses.reparameterize(mu, logvar, _gen(5))
    b = losses.reparameterize(mu, logvar, _gen(5))
    assert torch.equal(a, b)


def test_iw_bound_with_one_sample_is_the_elbo_and_logsumexp_otherwise() -> None:
    log_w = torch.randn(1, 9)
    assert torch.allclose(losses.iw_bound(log_w), log_w[0])
    log_w = torch.tensor([[-1000.0], [-1001.0]])  # exp underflows; logsumexp does not
    expected = -1000.0 + math.log((1 + math.exp(-1)) / 2)
    assert losses.iw_bound(log_w).item() == pytest.approx(expected, abs=1e-4)


def test_beta_warmup_and_free_bits() -> None:
    assert losses.beta_at(0, 1.0, 10) == pytest.approx(0.1)
    assert losses.beta_at(9, 1.0, 10) == pytest.approx(1.0)
    assert losses.beta_at(100, 0.5, 10) == 0.5
    assert losses.beta_at(0, 0.5, 0) == 0.5
    kl = torch.tensor([[0.1, 2.0], [0.3, 4.0]])
    assert losses.free_bits_kl(kl, 0.0).item() == pytest.approx(0.2 + 3.0)
    assert losses.free_bits_kl(kl, 0.5).item() == pytest.approx(0.5 + 3.0)


def test_huge_logvar_stays_finite() -> None:
    mu, logvar = torch.zeros(2, 3), torch.full((2, 3), 100.0)
    assert torch.isfinite(losses.kl_standard_normal(mu, logvar)).all()
    assert torch.isfinite(losses.reparameterize(mu, logvar, _gen())).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        kl = losses.kl_standard_normal(mu.bfloat16(), logvar.bfloat16())
    assert kl.dtype == torch.float32 and torch.isfinite(kl).all()
