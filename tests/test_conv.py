"""The convolutional encoder/decoder, its GroupNorm, the conv presets and conditional sampling."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import vaekit
from conftest import assert_clean_error, run_cli, tiny_config
from vaekit.config import ModelConfig, load_config, resolve_config_path
from vaekit.data import Dataset
from vaekit.errors import ConfigError
from vaekit.models import VAE
from vaekit.models.conv import ConvDecoder, ConvEncoder, level_sizes


def _conv(channels: list[int], **kw: object) -> ModelConfig:
    return ModelConfig(
        arch="conv",
        channels=channels,
        latent_dim=kw.pop("latent_dim", 6),  # type: ignore[arg-type]
        **kw,
    )  # type: ignore[arg-type]


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    ("shape", "channels"),
    [
        ((1, 28, 28), [8, 16, 16, 16]),  # MNIST-like: 28 -> 14 -> 7 -> 4 -> 2, no padding
        ((3, 32, 32), [8, 16]),
        ((3, 48, 40), [8, 8, 16]),  # non-square, not a power of two
        ((1, 100, 100), [4, 8, 8]),
        ((3, 256, 256), [4, 4, 4, 4, 8]),
    ],
)
@pytest.mark.parametrize("params_per_pixel", [1, 2])
def test_decoder_returns_the_input_size_for_any_size(
    shape: tuple[int, int, int], channels: list[int], params_per_pixel: int
) -> None:
    enc = ConvEncoder(shape, channels, blocks_per_level=1, cond_dim=0)
    dec = ConvDecoder(shape, channels, 1, in_features=5, params_per_pixel=params_per_pixel)
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0))
    h = enc(x)
    assert h.shape == (2, enc.out_features)
    out = dec(torch.randn(2, 5))
    assert out.shape == (2, shape[0] * params_per_pixel, shape[1], shape[2])
    assert torch.isfinite(out).all()


def test_level_sizes_halve_rounding_up() -> None:
    assert level_sizes(28, 28, 4) == [(28, 28), (14, 14), (7, 7), (4, 4), (2, 2)]
    assert level_sizes(48, 40, 3) == [(48, 40), (24, 20), (12, 10), (6, 5)]


def test_too_many_levels_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"6 levels, too many for 28x28 images.*at most 5"):
        VAE.from_config(_conv([4] * 6), (1, 28, 28))
    VAE.from_config(
        _conv([4] * 5), (1, 28, 28)
    )  # 28 -> ... -> 1 still has a last level worth having


def test_blocks_per_level_adds_residual_blocks() -> None:
    shape = (3, 32, 32)
    plain, deep = (
        VAE.from_config(_conv([8, 16], blocks_per_level=0), shape),
        VAE.from_config(_conv([8, 16], blocks_per_level=2), shape),
    )
    blocks = sum(type(m).__name__ == "ResBlock" for m in deep.modules())
    assert blocks == 2 * 2 * 2  # two per level, in the encoder and in the decoder
    assert _n_params(deep) > _n_params(plain)
    assert not any(type(m).__name__ == "ResBlock" for m in plain.modules())


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_decoder_is_the_interpolate_then_conv_decoder(layout: torch.memory_format) -> None:
    """28 -> 14 -> 7 -> 4 -> 2: a tiny-map level (fold), an odd level (explicit) and
    transposed-conv levels, against the decoder written out with F.interpolate + conv."""
    torch.manual_seed(4)
    decoder = ConvDecoder((1, 28, 28), [8, 16, 16, 16], 1, in_features=6).double()
    decoder.to(memory_format=layout)  # type: ignore[call-overload]
    z = torch.randn(3, 6, dtype=torch.float64)

    def written_out() -> torch.Tensor:
        x = decoder.fc(z).view(-1, *decoder.bottom).contiguous(memory_format=layout)
        for level, size in zip(decoder.levels, reversed(decoder.sizes[:-1]), strict=True):
            x = level["blocks"](x)
            conv, norm = level["up"]
            x = norm(F.conv2d(F.interpolate(x, size=size, mode="nearest"), conv.weight, padding=1))
        return F.conv2d(x, decoder.head.weight, decoder.head.bias, padding=1)

    torch.testing.assert_close(decoder(z), written_out())


def test_tiny_maps_take_the_matmul_paths_and_larger_ones_the_conv_kernels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = VAE.from_config(_conv([4, 8, 8, 8], blocks_per_level=1), (1, 28, 28))  # 28-14-7-4-2
    calls: dict[str, list[tuple[int, ...]]] = {"unfold": [], "fold": [], "conv_transpose2d": []}
    for name in calls:
        original = getattr(F, name)

        def spy(x: torch.Tensor, *a: object, _name: str = name, _f=original, **k: object):
            calls[_name].append(tuple(x.shape[-2:]))
            return _f(x, *a, **k)

        monkeypatch.setattr(F, name, spy)
    model.decode(model.encode(torch.rand(2, 1, 28, 28))[0])
    # at 2x2: the stride-2 conv from 4x4 and the residual blocks' convs (2 down, 2 up)
    assert calls["unfold"] == [(4, 4), (2, 2), (2, 2), (2, 2), (2, 2)]
    assert len(calls["fold"]) == 1  # upsampling the 2x2 map
    assert calls["conv_transpose2d"] == [(7, 7), (14, 14)]  # 4 -> 7 is odd: explicit


def test_channels_last_gives_the_same_model() -> None:
    torch.manual_seed(0)
    model = VAE.from_config(_conv([8, 16], blocks_per_level=1), (3, 30, 30)).eval()
    x = torch.rand(3, 3, 30, 30)
    mu, logvar = model.encode(x)
    params = model.decode(mu)
    model.to(memory_format=torch.channels_last)
    mu2, logvar2 = model.encode(x)
    torch.testing.assert_close(mu2, mu, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(logvar2, logvar, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model.decode(mu), params, atol=1e-5, rtol=1e-4)


def test_conditional_conv_encoder_and_decoder_see_the_label() -> None:
    torch.manual_seed(0)
    model = VAE.from_config(
        _conv([8, 16], conditional=True, label_dim=4), (1, 28, 28), num_classes=3
    )
    assert model.encoder.out_features == model.encoder.flat_features + 4
    x = torch.rand(2, 1, 28, 28)
    mu0, _ = model.encode(x, torch.tensor([0, 0]))
    mu1, _ = model.encode(x, torch.tensor([1, 1]))
    assert not torch.allclose(mu0, mu1)
    z = torch.randn(2, 6)
    assert not torch.allclose(
        model.decode(z, torch.tensor([0, 0])), model.decode(z, torch.tensor([2, 2]))
    )
    with pytest.raises(ConfigError, match="conditional"):
        model.encode(x)


def test_bf16_autocast_keeps_the_posterior_and_kl_in_float32() -> None:
    torch.manual_seed(0)
    model = VAE.from_config(
        _conv([8, 16], blocks_per_level=1, likelihood="gaussian", learn_scale=True), (3, 32, 32)
    ).to(memory_format=torch.channels_last)
    x = torch.rand(4, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, generator=torch.Generator().manual_seed(0))
        terms, kl_per_dim = model.elbo_terms(x, out=out)
    assert out.params.dtype == torch.bfloat16  # the network itself runs in bf16
    assert out.mu.dtype == out.logvar.dtype == kl_per_dim.dtype == torch.float32
    assert terms.recon.dtype == torch.float32
    loss = (terms.recon + terms.kl).mean()
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_conv_vae_trains_in_bf16_and_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    cfg = tiny_config(
        tmp_path / "run",
        **{
            "model.arch": "conv",
            "model.channels": [8, 16],
            "model.blocks_per_level": 1,
            "model.latent_dim": 4,
            "train.epochs": 3,
            "train.precision": "bf16",
            "optim.lr": 0.003,
        },
    )
    run = vaekit.train(cfg)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records[-1]["train_nelbo"] < records[0]["train_nelbo"]  # it learns
    model = vaekit.load(run)
    x = torch.rand(2, 1, 28, 28)
    again = vaekit.load(run)
    torch.testing.assert_close(model.reconstruct(x), again.reconstruct(x))
    assert model.architecture()["encoder"]["name"] == "conv-encoder"


# -- presets ----------------------------------------------------------------------------------
FACES128_PARAMS = 12_122_947


def test_faces128_preset_is_the_stated_system() -> None:
    cfg = load_config("faces128")
    model = VAE.from_config(cfg.model, (3, cfg.data.image_size, cfg.data.image_size))
    assert _n_params(model) == FACES128_PARAMS
    text = resolve_config_path("faces128").read_text()
    assert f"{FACES128_PARAMS:,}" in text  # the comment states the exact count
    assert (cfg.data.image_size, cfg.data.channels) == (128, 3)
    assert cfg.model.likelihood == "laplace" and cfg.loss.beta == 0.02
    assert cfg.loss.perceptual == "lpips-vgg"
    assert cfg.loss.perceptual_weight == 128 * 128 * 3


def _write_folder(root: Path, n: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        label = ("a", "b")[i % 2]
        (root / label).mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
        image = np.kron(coarse, np.ones((16, 16, 1), dtype=np.uint8))
        Image.fromarray(image).save(root / label / f"{i:03d}.png")
    return root


def test_faces128_runs_end_to_end_on_a_folder(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / "faces", 6, 128)
    out = tmp_path / "run"
    result = run_cli(
        "train",
        "--config",
        "faces128",
        "--data",
        str(folder),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--data.test_fraction",
        "0.34",
        "--train.progress",
        "false",
        "--train.eval_batch_size",
        "4",
        "--loss.perceptual_backbone_weights",
        "random",
        "--loss.perceptual_lin_weights",
        "random",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 1 and math.isfinite(record["val_nelbo"])
    model = vaekit.load(out)
    assert model.input_shape == (3, 128, 128) and _n_params(model) == FACES128_PARAMS
    assert model.class_names == ["a", "b"]


def test_shapes64_preset_is_the_stated_small_conv_model() -> None:
    cfg = load_config("shapes64")
    assert cfg.model.arch == "conv" and cfg.data.image_size == 64
    n = _n_params(VAE.from_config(cfg.model, (3, 64, 64)))
    assert f"({n:,} parameters)" in resolve_config_path("shapes64").read_text()


# -- class-conditional sampling from the CLI ---------------------------------------------------
@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny conditional conv VAE on the noise images, its 10 labels renamed."""
    from vaekit.data.sources import make_noise

    cfg = tiny_config(
        tmp_path_factory.mktemp("cond") / "run",
        **{
            "model.arch": "conv",
            "model.channels": [8, 16],
            "model.conditional": True,
            "model.label_dim": 4,
            "train.epochs": 2,
        },
    )
    noise = make_noise(cfg.data, seed=0)
    names = [f"class-{chr(ord('a') + i)}" for i in range(10)]
    data = Dataset("noise", noise.x_train, noise.x_test, noise.y_train, noise.y_test, names)
    return vaekit.train(cfg, data=data)


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`vaekit ARGS` in this process: (exit status, stderr)."""
    from vaekit.cli import main

    code = main(list(args))
    return code, capsys.readouterr().err


def test_sample_a_class_by_name_or_by_index(
    conditional_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = {}
    for key, label in (("name", "class-d"), ("index", "3"), ("other", "class-h")):
        paths[key] = tmp_path / f"{key}.png"
        code, err = _cli(
            capsys,
            "sample",
            str(conditional_run),
            "--label",
            label,
            "--n",
            "8",
            "--seed",
            "1",
            "--out",
            str(paths[key]),
        )
        assert code == 0, err
    images = {k: np.asarray(Image.open(p)) for k, p in paths.items()}
    assert np.array_equal(images["name"], images["index"])  # class-d is class 3
    assert not np.array_equal(images["name"], images["other"])  # the label steers the decoder


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("--label", "class-z"), ("--label 'class-z' is not a class", "class-a, class-b")),
        (("--label", "10"), ("--label '10' is not a class",)),
        ((), ("class-conditional: pass --label",)),
    ],
)
def test_sample_a_label_the_model_lacks_is_one_clear_line(
    conditional_run: Path,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    needles: tuple[str, ...],
) -> None:
    code, err = _cli(capsys, "sample", str(conditional_run), *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert all(n in lines[0] for n in needles), lines[0]


def test_sample_cli_error_in_a_fresh_process(conditional_run: Path) -> None:
    assert_clean_error(run_cli("sample", str(conditional_run), "--label", "class-z"), "class-z")
