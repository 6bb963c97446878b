"""model.init's failures are vaekit's one line: diffusers' and transformers' loggers are
silent during the load, non-finite starting weights are refused as such, and the options
model.init replaces are checked from its config.json before data or weights are read."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from conftest import TINY_AUTOENCODERKL, assert_clean_error, assert_one_line_error, run_cli
from vaekit import cli
from vaekit.config import load_config
from vaekit.errors import ConfigError
from vaekit.models import VAE

diffusers = pytest.importorskip("diffusers", reason="needs vaekit[diffusers]")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny AutoencoderKL, built and saved by diffusers itself."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("kl") / "base"
    diffusers.AutoencoderKL(**TINY_AUTOENCODERKL, sample_size=16).save_pretrained(out)
    return out


def edited(base: Path, target: Path, **config: object) -> Path:
    """A copy of `base` whose config.json has `config`'s fields replaced."""
    shutil.copytree(base, target)
    record = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**record, **config}))
    return target


class Records(logging.Handler):
    """Every record diffusers' and transformers' loggers emit, at any level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logged() -> Iterator[list[logging.LogRecord]]:
    handler = Records()
    loggers = [logging.getLogger(name) for name in ("diffusers", "transformers")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler.records
    for logger in loggers:
        logger.removeHandler(handler)


def test_a_failed_load_logs_nothing_before_the_one_line(
    base: Path, tmp_path: Path, logged: list[logging.LogRecord]
) -> None:
    """A folder without weights made diffusers log 3 lines (an error and two warnings), and
    one whose config reads other channels than its weights hold the "Some weights ... newly
    initialized" warning, before vaekit's refusal."""
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    shutil.copy(base / "config.json", no_weights)
    one_channel = edited(base, tmp_path / "one-channel", in_channels=1, out_channels=1)
    for folder, needle in (
        (no_weights, r"holds a config.json but no weights \(diffusion_pytorch_model"),
        (one_channel, "wrong shape: decoder.conv_out.bias"),
    ):
        cfg = load_config(None, {"model.init": f"diffusers:{folder}"}).model
        with pytest.raises(ConfigError, match=needle):
            VAE.from_config(cfg, (1, 16, 16))
    assert [r.getMessage()[:80] for r in logged] == []


def test_a_folder_without_weights_is_one_line_on_stderr(base: Path, tmp_path: Path) -> None:
    """The whole of stderr, in a fresh process as a user runs it."""
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    shutil.copy(base / "config.json", no_weights)
    result = run_cli(
        "train", "--data", "noise", "--data.noise_examples", "32", "--data.image_size", "16",
        "--model.init", f"diffusers:{no_weights}", "--out", str(tmp_path / "run"),
        "--train.progress", "false",
    )  # fmt: skip
    assert_clean_error(result, f"model.init diffusers:{no_weights}: the folder holds a config")


def test_non_finite_starting_weights_are_refused_as_such(base: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    for i, bad in enumerate((float("nan"), float("inf"))):
        folder = tmp_path / str(i)
        shutil.copytree(base, folder)
        weights = folder / "diffusion_pytorch_model.safetensors"
        state = load_file(weights)
        state["decoder.conv_out.weight"][0, 0, 0, 0] = bad
        save_file(state, weights)
        cfg = load_config(None, {"model.init": f"diffusers:{folder}"}).model
        with pytest.raises(ConfigError) as e:
            VAE.from_config(cfg, (3, 16, 16))
        assert str(e.value).startswith(
            f"the starting model in {folder} has non-finite weights in decoder.conv_out.weight;"
        ), e.value
        assert "\n" not in str(e.value)


def test_replaced_options_are_refused_before_data_and_weights_are_read(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The data here do not exist, and reading the weights fails: the refusal of the option
    must come first, from config.json alone."""

    def no_weights(*args: object, **kwargs: object) -> None:
        raise AssertionError("the weights were read before the options were checked")

    monkeypatch.setattr(diffusers.AutoencoderKL, "from_pretrained", no_weights)
    for option, value, field in (
        ("channels", "4,8", "block_out_channels 8,16"),
        ("latent_channels", "8", "latent_channels 2"),
    ):
        args = ["train", "--data", str(tmp_path / "no-such-data"), f"--model.{option}", value]
        args += ["--model.init", f"diffusers:{base}", "--out", str(tmp_path / "run")]
        code, err = cli.main(args), capsys.readouterr().err
        assert_one_line_error(code, err, f"model.{option} is {value}", field)
    # a config that is no AutoencoderKL's, too
    other = edited(base, tmp_path / "unet", _class_name="UNet2DModel")
    args = ["train", "--data", str(tmp_path / "no-such-data"), "--out", str(tmp_path / "run")]
    code, err = cli.main([*args, "--model.init", f"diffusers:{other}"]), capsys.readouterr().err
    assert_one_line_error(code, err, "holds a UNet2DModel, not a diffusers AutoencoderKL")


def test_a_size_refusal_does_not_point_noise_data_at_data_image_size() -> None:
    """data.image_size resizes only folders: on the 28 px noise it changes nothing."""
    from vaekit.diffusers.init import latent_shape

    with pytest.raises(ConfigError, match="sets an image folder's size"):
        latent_shape({"in_channels": 1, "block_out_channels": [1] * 4}, (1, 28, 28), "x")
