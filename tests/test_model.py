"""The VAE: shapes, the two heads, the likelihood parameters, sampling and interpolation."""

from __future__ import annotations

import pytest
import torch

from vaekit.config import ModelConfig
from vaekit.errors import VaekitError
from vaekit.models import VAE, slerp
from vaekit.training.preflight import init_output_bias


def tiny_model(**kw: object) -> VAE:
    cfg = ModelConfig(hidden=[16], latent_dim=3, **kw)  # type: ignore[arg-type]
    return VAE.from_config(cfg, (1, 6, 6), num_classes=4 if cfg.conditional else 0)


def test_encode_returns_mean_and_log_variance() -> None:
    model = tiny_model()
    x = torch.rand(5, 1, 6, 6)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 3)
    with torch.no_grad():  # a log-variance may be negative: it is not a variance
        model.logvar_head.bias.fill_(-3.0)
        model.logvar_head.weight.zero_()
    assert (model.encode(x)[1] == -3.0).all()


@pytest.mark.parametrize(
    "likelihood, learn, channels",
    [("bernoulli", False, 1), ("gaussian", False, 1), ("gaussian", True, 2), ("laplace", True, 2)],
)
def test_decode_returns_the_likelihood_parameters(
    likelihood: str, learn: bool, channels: int
) -> None:
    model = tiny_model(likelihood=likelihood, learn_scale=learn)
    params = model.decode(torch.randn(4, 3))
    assert params.shape == (4, channels, 6, 6)
    x = torch.rand(4, 1, 6, 6)
    assert model.log_likelihood(x, params).shape == (4,)
    mean = model.mean(params)
    assert mean.shape == (4, 1, 6, 6) and mean.min() >= 0 and mean.max() <= 1


def test_bernoulli_decode_gives_logits() -> None:
    model = tiny_model()
    z = torch.randn(2, 3)
    assert torch.allclose(model.mean(model.decode(z)), torch.sigmoid(model.decode(z)))


@pytest.mark.parametrize("likelihood, learn", [("bernoulli", False), ("gaussian", True)])
def test_output_bias_starts_the_decoder_at_the_mean_image(likelihood: str, learn: bool) -> None:
    model = tiny_model(likelihood=likelihood, learn_scale=learn)
    mean_image = torch.rand(1, 6, 6) * 0.8 + 0.1
    scale_bias = model.decoder.head.bias[36:].clone()
    init_output_bias(model, mean_image)
    with torch.no_grad():  # with the last hidden layer silent, the decoder says the mean
        model.decoder.head.weight.zero_()
    assert torch.allclose(
        model.mean(model.decode(torch.randn(3, 3))), mean_image.expand(3, 1, 6, 6)
    )
    assert torch.equal(model.decoder.head.bias[36:], scale_bias)  # log-scales untouched


def test_output_bias_of_an_mlp_decoder_keeps_each_channels_pixels_in_place() -> None:
    model = VAE.from_config(ModelConfig(hidden=[8], latent_dim=2, likelihood="laplace"), (3, 4, 5))
    mean_image = torch.rand(3, 4, 5)
    init_output_bias(model, mean_image)
    with torch.no_grad():
        model.decoder.head.weight.zero_()
    torch.testing.assert_close(model.mean(model.decode(torch.randn(2, 2)))[1], mean_image)


def test_output_bias_of_a_conv_decoder_is_per_channel_and_survives_black_pixels() -> None:
    cfg = ModelConfig(arch="conv", channels=[4, 8], latent_dim=3)
    model = VAE.from_config(cfg, (3, 8, 8))
    mean_image = torch.zeros(3, 8, 8)
    mean_image[1] = 0.5
    mean_image[2, :4] = 1.0  # channel mean 0.5 with pure-white and pure-black pixels
    init_output_bias(model, mean_image)
    bias = model.decoder.head.bias.detach()
    assert bias[0] == pytest.approx(torch.logit(torch.tensor(1e-3)).item(), rel=1e-5)
    assert bias[1] == pytest.approx(0.0, abs=1e-6) and bias[2] == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(bias).all()


def test_sample_reconstruct_interpolate_shapes_and_seeding() -> None:
    model = tiny_model()
    a = model.sample(7, generator=torch.Generator().manual_seed(1))
    b = model.sample(7, generator=torch.Generator().manual_seed(1))
    assert a.shape == (7, 1, 6, 6) and torch.equal(a, b)
    x = torch.rand(3, 1, 6, 6)
    assert model.reconstruct(x).shape == (3, 1, 6, 6)
    path = model.interpolate(x[:2], x[1:], steps=5)
    assert path.shape == (2, 5, 1, 6, 6)
    assert torch.allclose(path[:, 0], model.reconstruct(x[:2]), atol=1e-6)
    assert torch.allclose(path[:, -1], model.reconstruct(x[1:]), atol=1e-6)
    assert model.interpolate(x[0], x[1], steps=4, method="slerp").shape == (1, 4, 1, 6, 6)


def test_slerp_keeps_the_radius_and_hits_the_ends() -> None:
    a, b = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    t = torch.linspace(0, 1, 5).view(5, 1)
    path = slerp(a, b, t)
    assert torch.allclose(path.norm(dim=-1), torch.full((5,), 3.0), atol=1e-5)
    assert torch.allclose(path[0], a[0]) and torch.allclose(path[-1], b[0], atol=1e-6)


def test_conditional_model_uses_labels() -> None:
    model = tiny_model(conditional=True)
    z = torch.randn(1, 3).expand(2, 3)
    out = model.decode(z, torch.tensor([0, 1]))
    assert not torch.allclose(out[0], out[1])
    with pytest.raises(VaekitError, match="pass labels"):
        model.decode(z)
    assert model.sample(4, y=2).shape == (4, 1, 6, 6)


def test_importance_weights_with_one_sample_average_to_the_elbo() -> None:
    model = tiny_model().requires_grad_(False)
    x = torch.rand(64, 1, 6, 6)
    log_w = model.log_importance_weights(x, 2000, generator=torch.Generator().manual_seed(0))
    terms, _ = model.elbo_terms(x, generator=torch.Generator().manual_seed(1))
    # E_q[log w] is the ELBO; the single-sample ELBO estimate is noisy, so compare means
    # over many samples: the two agree to within Monte Carlo error
    elbo_mc = log_w.mean()
    assert abs(float(elbo_mc) + float(terms.nelbo.mean())) < 0.05 * abs(float(elbo_mc))
