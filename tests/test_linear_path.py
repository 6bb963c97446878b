"""model.linear_path: the conv VAE's linear encoder and decoder, started at PCA of the
training images, so that a run starts at PCA's reconstruction (issue 14)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import vaekit
from conftest import assert_clean_error, run_cli
from vaekit.config import load_config
from vaekit.data import from_arrays
from vaekit.errors import ConfigError
from vaekit.models import linear_path
from vaekit.training.preflight import build_model, pca_images

CONV = {
    "model.arch": "conv",
    "model.channels": [8, 8],
    "model.blocks_per_level": 0,
    "model.likelihood": "laplace",
    "model.obs_scale": 0.1,
    "model.linear_path": True,
    "train.batch_size": 32,
    "train.progress": False,
}


def smooth_images(n: int = 96, side: int = 16, seed: int = 0) -> torch.Tensor:
    """uint8 (n, 3, side, side): a few smooth colour blobs each, so PCA has structure."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    fine = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear")
    return (fine.clamp(0, 1) * 255).round().to(torch.uint8)


def initial_model(tmp_path: Path, **overrides: object) -> tuple[vaekit.VAE, torch.Tensor]:
    """The model a fresh run builds (its linear path at PCA), and the training images."""
    x = smooth_images()
    data = from_arrays(x, x[:16], name="blobs")
    config = load_config(None, {**CONV, "train.out": str(tmp_path / "run"), **overrides})
    model = build_model(None, config, data, torch.device("cpu"), None)
    return model.eval(), data.x_train


def pca_reconstruction(rows: torch.Tensor, k: int) -> torch.Tensor:
    rows = rows.double()
    mean = rows.mean(0)
    _, _, vt = torch.linalg.svd(rows - mean, full_matrices=False)
    return (rows - mean) @ vt[:k].T @ vt[:k] + mean


def test_a_fresh_run_starts_at_the_pca_reconstruction_of_a_latent_vector(tmp_path: Path) -> None:
    model, x_train = initial_model(tmp_path, **{"model.latent_dim": 6})
    images = x_train.float() / 255
    expected = pca_reconstruction(images.flatten(1), 6).view_as(images).clamp(0, 1)
    with torch.no_grad():
        got = model.reconstruct(images)
    torch.testing.assert_close(got, expected.float(), atol=2e-4, rtol=0)
    # the code is whitened: unit variance per component on the training images, as N(0, I)
    mu, logvar = model.encode(images)
    torch.testing.assert_close(mu.var(0), torch.ones(6), atol=0.05, rtol=0)
    assert float(logvar.detach().mean()) < -4  # the posterior starts narrow: z is close to the code


def test_a_spatial_latent_starts_at_the_pca_of_its_patches(tmp_path: Path) -> None:
    """Two levels: a 2 x 4 x 4 latent, each cell from its 4 x 4 patch (48 values). The
    images carry a fixed stripe in every patch, so the mean patch has structure of its own
    that one bias per channel cannot paste: PCA is taken about each channel's mean, and the
    start is exactly that PCA (a first component carries the stripe)."""
    x = smooth_images().float()
    x[:, :, ::4, :] = 255.0  # one bright row at the top of every 4 x 4 patch
    x = x.to(torch.uint8)
    data = from_arrays(x, x[:16], name="striped")
    overrides = {**CONV, "model.latent_channels": 2, "train.out": str(tmp_path / "run")}
    model = build_model(None, load_config(None, overrides), data, torch.device("cpu"), None)
    assert model.latent_shape == (2, 4, 4)
    images = data.x_train.float() / 255
    n = len(images)
    patches = images.reshape(n, 3, 4, 4, 4, 4).permute(0, 2, 4, 1, 3, 5).reshape(-1, 48)
    rows = patches.double()
    centre = rows.view(-1, 3, 16).mean((0, 2)).repeat_interleave(16)
    values, vectors = torch.linalg.eigh((rows - centre).T @ (rows - centre))
    top = vectors[:, -2:]
    recon = (rows - centre) @ top @ top.T + centre
    expected = recon.view(n, 4, 4, 3, 4, 4).permute(0, 3, 1, 4, 2, 5).reshape(images.shape)
    with torch.no_grad():
        got = model.eval().reconstruct(images)
    torch.testing.assert_close(got, expected.clamp(0, 1).float(), atol=2e-4, rtol=0)
    # the stripe is kept: PCA about the mean patch, pasted back with one bias per channel
    # (what the path started at before), loses it and errs several times more
    mean = rows.mean(0)
    _, _, vt = torch.linalg.svd(rows - mean, full_matrices=False)
    flat = (rows - mean) @ vt[:2].T @ vt[:2] + mean.view(3, 16).mean(1).repeat_interleave(16)
    before = flat.view(n, 4, 4, 3, 4, 4).permute(0, 3, 1, 4, 2, 5).reshape(images.shape)
    err, err_before = (float(((r.clamp(0, 1) - images) ** 2).mean()) for r in (got, before))
    assert err < 0.5 * err_before


def test_training_improves_on_the_start_and_the_run_loads_back(tmp_path: Path) -> None:
    x = smooth_images(160)
    data = from_arrays(x[:128], x[128:], name="blobs")
    overrides = {**CONV, "model.latent_dim": 4, "train.epochs": 3, "optim.lr": 0.003}
    config = load_config(None, {**overrides, "train.out": str(tmp_path / "run")})
    result = vaekit.Trainer(None, config, data=data).fit()
    first, last = result.history[0]["train_nelbo"], result.history[-1]["train_nelbo"]
    assert math.isfinite(last) and last < first
    # still at PCA's level after training (a conv VAE this small, from a random start, is
    # far from it after 12 steps): the start held, and the steps did not undo it
    train = x[:128].float() / 255
    pca = pca_reconstruction(train.flatten(1), 4).view_as(train).clamp(0, 1).float()
    trained = result.model.cpu().reconstruct(train)
    assert float(((trained - train) ** 2).mean()) < 1.1 * float(((pca - train) ** 2).mean())
    again = vaekit.VAE.from_pretrained(result.run_dir)
    test = x[128:].float() / 255
    torch.testing.assert_close(again.reconstruct(test), result.model.cpu().reconstruct(test))
    assert again.decoder.linear is not None and again.encoder.linear is not None
    samples = again.sample(4, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (4, 3, 16, 16) and 0 <= samples.min() and samples.max() <= 1


def test_rows_of_more_than_4096_values_take_the_randomized_svd(tmp_path: Path) -> None:
    """3 x 40 x 40 = 4,800 values per image: torch.svd_lowrank. These images' spectrum is
    nearly flat (48 uniform coarse pixels), so the randomized top-5 subspace is not PCA's
    to the digit, but it reconstructs within 2% of PCA's squared error (PCA is optimal)."""
    x = smooth_images(96, side=40)
    data = from_arrays(x, x[:16], name="blobs")
    config = load_config(None, {**CONV, "model.latent_dim": 5, "train.out": str(tmp_path / "run")})
    model = build_model(None, config, data, torch.device("cpu"), None).eval()
    images = data.x_train.float() / 255
    expected = pca_reconstruction(images.flatten(1), 5).view_as(images).float()
    with torch.no_grad():
        got = model.decode(model.encode(images)[0]).float()  # unclamped, as PCA's
    best = float(((expected - images) ** 2).mean())
    assert 0.999 * best <= float(((got - images) ** 2).mean()) < 1.02 * best


def test_a_learned_scale_keeps_its_log_scale_channels(tmp_path: Path) -> None:
    """The path adds to the locations only; the log-scales keep the conv head's output."""
    model, x_train = initial_model(
        tmp_path,
        **{"model.latent_dim": 3, "model.likelihood": "gaussian", "model.learn_scale": True},
    )
    head = model.decoder.head
    assert head.weight[:3].abs().sum() == 0 and head.weight[3:].abs().sum() > 0
    z = torch.randn(2, 3)
    params = model.decode(z)
    assert params.shape == (2, 6, 16, 16)
    torch.testing.assert_close(params[:, 3:], model.decoder._conv(z)[:, 3:])


def test_the_adversarial_weight_is_still_taken_at_the_conv_head(tmp_path: Path) -> None:
    from vaekit.training import objective

    model, _ = initial_model(tmp_path, **{"model.latent_dim": 3})
    assert objective.last_layer(model.decoder) is model.decoder.head.weight


def test_a_conditional_vae_gets_a_path_from_z_only_at_the_start(tmp_path: Path) -> None:
    x = smooth_images(64)
    y = torch.arange(64) % 2
    data = from_arrays(x, x[:16], y, y[:16], name="blobs")
    over = {**CONV, "model.latent_dim": 3, "model.conditional": True, "model.label_dim": 4}
    config = load_config(None, {**over, "train.out": str(tmp_path / "run")})
    model = build_model(None, config, data, torch.device("cpu"), None)
    weight = model.decoder.linear.weight  # (C*H*W, latent + label embedding)
    assert weight[:, 3:].abs().sum() == 0 and weight[:, :3].abs().sum() > 0


def test_constant_images_give_a_zero_path_not_nans(tmp_path: Path) -> None:
    """No variance to whiten: the components are left out (zero weights), nothing blows up."""
    x = torch.full((64, 3, 16, 16), 77, dtype=torch.uint8)
    data = from_arrays(x, x[:16], name="flat")
    over = {**CONV, "model.latent_dim": 4, "train.epochs": 1}
    config = load_config(None, {**over, "train.out": str(tmp_path / "run")})
    model = build_model(None, config, data, torch.device("cpu"), None)
    assert model.encoder.linear.weight.abs().sum() == 0
    assert torch.isfinite(model.decoder.linear.bias).all()
    torch.testing.assert_close(
        model.decoder.linear.bias, torch.full((768,), 77 / 255), atol=1e-6, rtol=0
    )
    result = vaekit.Trainer(model, config, data=data).fit()
    assert math.isfinite(result.history[-1]["train_nelbo"])


def test_the_pca_reads_a_bounded_evenly_spaced_subset(monkeypatch: pytest.MonkeyPatch) -> None:
    x = smooth_images(100)
    model = vaekit.VAE.from_config(
        load_config(None, {**CONV, "model.latent_dim": 2}).model, (3, 16, 16)
    )
    assert pca_images(model, x).shape == (100, 3, 16, 16)
    assert pca_images(model, x, most=10).shape[0] == 10
    monkeypatch.setattr("vaekit.training.preflight.MAX_VALUES", 768 * 7)
    rows = pca_images(model, x)
    assert rows.shape[0] == 7 and rows.dtype == torch.float32
    torch.testing.assert_close(rows[0], x[0].float() / 255)
    torch.testing.assert_close(rows[-1], x[-1].float() / 255)


def test_more_latent_values_than_a_patch_has_leaves_the_rest_at_zero(tmp_path: Path) -> None:
    """48 values in a 4 x 4 RGB patch: of a 50-channel latent, 48 channels get components
    (largest first) and the last 2 stay at zero both ways."""
    model, _ = initial_model(tmp_path, **{"model.latent_channels": 50})
    enc, dec = model.encoder.linear.weight, model.decoder.linear.weight  # (50, 3, 4, 4) each
    assert enc[48:].abs().sum() == 0 and dec[48:].abs().sum() == 0
    assert (enc[:48].flatten(1).abs().sum(1) > 0).all()
    images = smooth_images(40).float() / 255
    _, v, sd = linear_path.principal_components(linear_path._rows(images, 4), 50)
    assert v.shape == (48, 48) and (sd[:-1] >= sd[1:]).all()
    # the 2 values with no component stay at the prior's width: they cost no KL at the start
    logvar = model.encoder.moments.bias[50:]
    assert (logvar[48:] - logvar[:48].max() > 5).all()


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"model.arch": "mlp"}, "model.linear_path needs model.arch conv"),
        ({"model.likelihood": "bernoulli"}, "gaussian or laplace"),
        (
            {"model.latent_channels": 2, "data.image_size": 18},
            "a whole multiple of the latent map's",
        ),
    ],
)
def test_what_the_path_cannot_do_is_refused_in_one_line(
    tmp_path: Path, overrides: dict[str, object], needle: str
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    from PIL import Image

    for i, image in enumerate(smooth_images(24, side=20)):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    args = ["train", "--data", str(folder), "--out", str(tmp_path / "run")]
    for key, value in {**CONV, "model.latent_dim": 4, **overrides}.items():
        args += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    result = run_cli(*args, "--epochs", "1")
    assert_clean_error(result, needle)


def test_trained_weights_to_start_from_are_refused_beside_the_path() -> None:
    for arch in ("conv", "mlp"):  # model.init sets the architecture: model.arch is moot
        settings = {**CONV, "model.arch": arch, "model.init": "diffusers:some/repo"}
        with pytest.raises(ConfigError, match="use one of them"):
            vaekit.VAE.from_config(load_config(None, settings).model, (3, 16, 16))


def test_the_check_names_the_sizes() -> None:
    with pytest.raises(ConfigError, match="18x18 images give a 5x5 map"):
        linear_path.patch_factor((18, 18), (5, 5))
