"""One units contract for every public model method: encode, decode_images, reconstruct,
sample, interpolate and vaekit.evaluate take and give the user's units (uint8 or float
images, a normalised run's raw values, a table's rows), whatever the model: a vector
MLP, a conv VAE with a spatial latent, a table model with data.normalize standardize, a
class-conditional one. The model's own scaling stays inside (`prepare`, `posterior`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import vaekit
from vaekit.config import ModelConfig
from vaekit.errors import DataError
from vaekit.normalize import fit

N = 6
TABLE_MEAN = torch.tensor([164.0, 208.0, -274.0, 3.0, 0.5])  # far from a model's units
TABLE_STD = torch.tensor([30.0, 5.0, 80.0, 1.0, 0.1])


def _images(channels: int = 1, side: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (N, channels, side, side), generator=g, dtype=torch.uint8)


def _rows() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(64, 5, generator=g) * TABLE_STD + TABLE_MEAN


def make(kind: str) -> tuple[vaekit.VAE, torch.Tensor, torch.Tensor | None]:
    """A tiny model of `kind`, examples in the user's units and their labels (or None)."""
    torch.manual_seed(0)
    if kind == "mlp-image":
        model = vaekit.VAE.from_config(ModelConfig(hidden=[16], latent_dim=3), (1, 8, 8))
        return model.eval(), _images(), None
    if kind == "conv-spatial":
        cfg = ModelConfig(arch="conv", channels=[4, 4], latent_channels=2)
        return vaekit.VAE.from_config(cfg, (3, 8, 8)).eval(), _images(3), None
    if kind == "table-standardize":
        rows = _rows()
        record = fit(rows.view(*rows.shape, 1, 1), "standardize").record()
        cfg = ModelConfig(hidden=[16], latent_dim=3)
        model = vaekit.VAE.from_config(cfg, (5, 1, 1), normalization=record)
        return model.eval(), rows[:N], None
    assert kind == "conditional"
    cfg = ModelConfig(hidden=[16], latent_dim=3, conditional=True, label_dim=4)
    model = vaekit.VAE.from_config(cfg, (1, 8, 8), num_classes=3)
    return model.eval(), _images(), torch.tensor([0, 1, 2, 0, 1, 2])


KINDS = ["mlp-image", "conv-spatial", "table-standardize", "conditional"]


def _float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255 if x.dtype == torch.uint8 else x


def _forms(x: torch.Tensor) -> list[Any]:
    """The same examples as a user may hold them: as given, as numpy, and (uint8) as
    float / 255 or (table rows) as (N, F, 1, 1)."""
    forms: list[Any] = [x, x.numpy()]
    if x.dtype == torch.uint8:
        forms.append(x.float() / 255)
    else:
        forms.append(x.view(*x.shape, 1, 1))
    return forms


@pytest.mark.parametrize("kind", KINDS)
def test_encode_is_the_posterior_of_the_users_data(kind: str) -> None:
    model, x, y = make(kind)
    mu, logvar = model.encode(x, y)
    # what encode means: the model's own scaling applied once, inside
    inside = model.normalization.to_model(_float(x).reshape(N, *model.input_shape))
    expected_mu, expected_logvar = model.posterior(inside, y)
    shape = (N, *model.latent_shape) if model.latent_shape else (N, model.latent_dim)
    assert mu.shape == logvar.shape == shape
    torch.testing.assert_close(mu.flatten(1), expected_mu)
    torch.testing.assert_close(logvar.flatten(1), expected_logvar)
    for other in _forms(x)[1:]:  # numpy, float / 255 (uint8), rows as (N, F, 1, 1)
        torch.testing.assert_close(model.encode(other, y)[0], mu, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_decode_images_of_encode_is_reconstruct(kind: str) -> None:
    model, x, y = make(kind)
    for form in _forms(x):
        recon = model.reconstruct(form, y)
        again = model.decode_images(model.encode(form, y)[0], y)
        torch.testing.assert_close(again.reshape(recon.shape), recon)
        expected = (N, 5) if model.is_table else (N, *model.input_shape)
        assert tuple(again.shape) == expected  # a table in, a table out
    recon = model.reconstruct(x, y)
    if model.is_table:  # rows in, rows out, in the table's own units
        assert recon.shape == x.shape
        assert (recon.mean(0) - TABLE_MEAN).abs().max() < 10 * TABLE_STD.max()
    else:
        assert 0 <= float(recon.min()) <= float(recon.max()) <= 1


@pytest.mark.parametrize("kind", KINDS)
def test_sample_is_decode_images_of_prior_draws(kind: str) -> None:
    model, _, y = make(kind)
    label = None if y is None else 2
    samples = model.sample(4, label, generator=torch.Generator().manual_seed(3))
    z = torch.randn(4, model.latent_dim, generator=torch.Generator().manual_seed(3))
    if model.latent_shape:  # decode_images takes encode's maps as well as flat codes
        z = z.view(4, *model.latent_shape)
    torch.testing.assert_close(samples, model.decode_images(z, None if y is None else [2] * 4))
    assert samples.shape == ((4, 5) if model.is_table else (4, *model.input_shape))


@pytest.mark.parametrize("kind", KINDS)
def test_interpolate_ends_at_the_reconstructions(kind: str) -> None:
    model, x, y = make(kind)
    # a conditional path is decoded with y1's labels: x[3:5] has the labels of x[:2]
    y1, y2 = (None, None) if y is None else (y[:2], y[3:5])
    for form in _forms(x):
        path = model.interpolate(form[:2], form[3:5], steps=3, y1=y1, y2=y2)
        first, last = model.reconstruct(form[:2], y1), model.reconstruct(form[3:5], y2)
        assert path.shape == (2, 3, *first.shape[1:])
        torch.testing.assert_close(path[:, 0], first)
        torch.testing.assert_close(path[:, -1], last)


@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_takes_every_form_of_the_same_data(kind: str) -> None:
    model, x, y = make(kind)
    results = [
        vaekit.evaluate(model, form, y, latent_metrics=False, image_metrics=False)
        for form in _forms(x)
    ]
    for other in results[1:]:
        assert other["nelbo"] == pytest.approx(results[0]["nelbo"], rel=1e-5)


def test_decode_images_refuses_codes_of_another_shape() -> None:
    model, _, _ = make("conv-spatial")
    accepted = r"which decodes float \(N, 8\) or \(N, 2, 2, 2\)"
    with pytest.raises(DataError, match=accepted):
        model.decode_images(torch.zeros(2, 7))
    with pytest.raises(DataError, match="as encode returns them"):
        model.decode_images(np.zeros((2, 8), dtype=np.int64))
