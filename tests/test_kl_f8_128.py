"""The kl-f8-128 preset is diffusers' AutoencoderKL (Stable Diffusion's VAE architecture,
scaled to 128 px): it builds the model its file describes, trains with the latent-diffusion
recipe's terms, and a run of it exports to a folder diffusers loads and computes exactly
as vaekit does. `vaekit presets` prints each preset's true latent."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vaekit
from conftest import SHRUNK_GAN_RECIPE
from vaekit import cli
from vaekit.config import load_config, resolve_config_path
from vaekit.diffusers import autoencoderkl
from vaekit.models import VAE

diffusers = pytest.importorskip("diffusers", reason="needs vaekit[diffusers]")


def test_the_preset_is_the_autoencoderkl_its_file_describes() -> None:
    cfg = load_config("kl-f8-128")
    assert cfg.model.arch == "autoencoderkl" and cfg.data.image_size == 128
    assert cfg.loss.beta == 1e-6 and cfg.loss.perceptual == "lpips-vgg"
    assert cfg.loss.adversarial_weight > 0 and cfg.loss.adversarial_start > 0
    model = VAE.from_config(cfg.model, (3, 128, 128))
    assert autoencoderkl.is_autoencoderkl(model)
    assert model.latent_shape == (4, 16, 16) and model.likelihood == "laplace"
    n = sum(p.numel() for p in model.parameters())
    text = resolve_config_path("kl-f8-128").read_text()
    assert f"{n:,} parameters" in text
    config, _ = autoencoderkl.diffusers_model(model)
    # Stable Diffusion's VAE, narrower: 4 levels of 2 blocks, 32 groups, a 4-channel latent
    assert config["layers_per_block"] == 2 and config["norm_num_groups"] == 32
    assert len(config["block_out_channels"]) == 4 and config["latent_channels"] == 4
    reference = diffusers.AutoencoderKL(**{k: v for k, v in config.items() if k != "sample_size"})
    assert sum(p.numel() for p in reference.parameters()) == n


def _folder(root: Path, n: int, size: int) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        coarse = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        Image.fromarray(np.kron(coarse, np.ones((8, 8, 1), dtype=np.uint8))).save(
            root / f"{i:02d}.png"
        )
    return root


def test_a_shrunk_run_of_the_preset_exports_to_diffusers(tmp_path: Path) -> None:
    """The preset through the CLI, its architecture shrunk by flags (8 channels a level,
    32 px), LPIPS with random weights (offline), the PatchGAN term started at step 1 so that
    its two steps run the whole recipe; then `vaekit export --format diffusers`, and
    diffusers' AutoencoderKL.from_pretrained computes what vaekit computes."""
    folder = _folder(tmp_path / "photos", 8, 32)
    run, out = tmp_path / "run", tmp_path / "exported"
    args = ["train", "--config", "kl-f8-128", "--data", str(folder), "--out", str(run)]
    args += ["--data.image_size", "32", "--model.channels", "8,8,8,8", "--batch-size", "2"]
    args += ["--epochs", "1", "--data.test_fraction", "0.25", "--data.val_fraction", "0"]
    args += SHRUNK_GAN_RECIPE
    assert cli.main(args) == 0
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 3 and math.isfinite(last["train_nelbo"])
    assert math.isfinite(last["train_disc_loss"]) and last["train_adv_weight"] > 0
    assert cli.main(["export", str(run), "--format", "diffusers", str(out)]) == 0
    model = vaekit.load(run)
    exported = diffusers.AutoencoderKL.from_pretrained(out).eval()
    assert list(exported.config.block_out_channels) == [8, 8, 8, 8]
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mu, _ = model.encode(x)
        mean = exported.encode(2 * x - 1).latent_dist.mean
        assert mean.shape == (2, 4, 4, 4)
        torch.testing.assert_close(mu.view(mean.shape), mean)
        decoded = (exported.decode(mean).sample + 1) / 2
        torch.testing.assert_close(model.reconstruct(x), decoded.clamp(0, 1))


def test_presets_prints_each_latent_as_the_model_has_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A spatial latent as C x h x w (kl-f8-128's 4x16x16, not latent_dim's default 20),
    a vector as its size; each the shape of the model the preset builds."""
    assert cli.main(["presets"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    for name in ("kl-f8-128", "faces128", "mnist-mlp", "vq-f8-128"):
        cfg = load_config(name)
        shape = (1, 28, 28) if cfg.data.name == "mnist" else (3, 128, 128)
        model = VAE.from_config(cfg.model, shape)
        want = "x".join(map(str, model.latent_shape or (model.latent_dim,)))
        assert re.search(rf" latent={want} ", lines[name]), lines[name]
    assert " latent=4x16x16 " in lines["kl-f8-128"] and " latent=256 " in lines["faces128"]
    assert " arch=autoencoderkl posterior=vq latent=4x16x16 " in lines["vq-f8-128"]
