"""The sd-vae-finetune preset through the CLI, from a tiny AutoencoderKL that diffusers
saved: it trains, keeps and exports the weight average, a frozen encoder leaves the
starting model's latents exact, and a model.init run above the recipe's rate warns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

import vaekit
from conftest import TINY_AUTOENCODERKL, assert_one_line_error, tiny_config
from vaekit import cli
from vaekit.io import checkpoint

diffusers = pytest.importorskip("diffusers", reason="needs vaekit[diffusers]")
OFFLINE_LPIPS = [  # random LPIPS networks: the same code path, no 530 MB download
    *("--loss.perceptual_backbone_weights", "random"),
    *("--loss.perceptual_lin_weights", "random"),
]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("kl") / "base-vae"
    diffusers.AutoencoderKL(**TINY_AUTOENCODERKL, sample_size=16).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images") / "photos"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def _train(base: Path, folder: Path, out: Path, *extra: str) -> list[str]:
    args = ["train", "--config", "sd-vae-finetune", "--model.init", f"diffusers:{base}"]
    args += ["--data", str(folder), "--data.image_size", "16", "--out", str(out)]
    args += ["--epochs", "1", "--train.progress", "false", *OFFLINE_LPIPS, *extra]
    return args


def test_the_preset_fine_tunes_and_exports_the_weight_average(
    base: Path, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert cli.main(_train(base, folder, run)) == 0
    assert "warning" not in capsys.readouterr().err  # the preset's rate is the recipe's
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["optim"]["lr"] == 1e-5 and config["optim"]["ema"] > 0
    assert config["loss"]["beta"] == 1e-6 and config["loss"]["perceptual"] == "lpips-vgg"
    assert config["data"]["augment"] == ["crop", "flip"] and config["train"]["accumulate"] == 2
    out = tmp_path / "exported"
    assert cli.main(["export", str(run), "--format", "diffusers", str(out)]) == 0
    exported = diffusers.AutoencoderKL.from_pretrained(out).state_dict()
    saved = checkpoint.load_state(run / checkpoint.STATE_FILE)
    average, weights = saved["ema"]["model"], saved["model"]
    key = "decoder.conv_out.weight"  # diffusers' name; vaekit's is decoder.decoder.conv_out
    assert torch.equal(exported[key], average[f"decoder.{key}"])
    assert not torch.equal(exported[key], weights[f"decoder.{key}"])  # not the raw weights
    assert torch.equal(load_file(run / "model.safetensors")[f"decoder.{key}"], exported[key])


def test_decoder_only_keeps_the_base_models_latents_exactly(
    base: Path, folder: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    assert cli.main(_train(base, folder, run, "--train.freeze_encoder", "true")) == 0
    out = tmp_path / "exported"
    assert cli.main(["export", str(run), "--format", "diffusers", str(out)]) == 0
    before = diffusers.AutoencoderKL.from_pretrained(base).eval()
    after = diffusers.AutoencoderKL.from_pretrained(out).eval()
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        a, b = (m.encode(x).latent_dist for m in (before, after))
        assert torch.equal(a.mean, b.mean) and torch.equal(a.logvar, b.logvar)
        assert not torch.equal(before.decode(a.mean).sample, after.decode(a.mean).sample)


@pytest.mark.parametrize(
    "extra, warns",
    [((), True), (("--lr", "1e-4"), False), (("--config", "sd-vae-finetune"), False)],
)
def test_model_init_above_the_recipes_rate_warns_in_one_line(
    base: Path,
    folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: tuple[str, ...],
    warns: bool,
) -> None:
    args = ["train", "--model.init", f"diffusers:{base}", "--data", str(folder), *extra]
    args += ["--data.image_size", "16", "--epochs", "1", "--train.progress", "false"]
    args += [*OFFLINE_LPIPS, "--batch-size", "8", "--out", str(tmp_path / "run")]
    assert cli.main(args) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    if not warns:
        assert not lines
        return
    assert len(lines) == 1
    assert all(s in lines[0] for s in ("optim.lr 0.001", "1e-4", "sd-vae-finetune"))


def test_freezing_the_encoder_of_a_model_built_from_scratch_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--data", "noise", "--data.noise_examples", "64", "--epochs", "1"]
    args += ["--train.freeze_encoder", "true", "--out", str(tmp_path / "run")]
    assert_one_line_error(cli.main(args), capsys.readouterr().err, "freeze_encoder", "model.init")
    assert not (tmp_path / "run" / "model.safetensors").exists()
    # a model passed in is the user's own starting point (pretrained, or a deliberate
    # random-feature experiment): its encoder is frozen as asked
    config = tiny_config(tmp_path / "given", **{"train.freeze_encoder": True})
    model = vaekit.Trainer(None, tiny_config(tmp_path / "first")).fit().model
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    after = vaekit.Trainer(model, config).fit().model.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
