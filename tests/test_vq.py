"""The VQ-VAE: the quantiser against hand computations (straight-through gradient, codebook
and commitment losses, EMA update, dead-code restart, perplexity), and the model through
every path a user takes (train, evaluate, report, encode, sample, save/load, resume)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import vaekit
from conftest import SHRUNK_GAN_RECIPE, TINY_FLAGS, assert_clean_error, run_cli
from vaekit.config import ModelConfig
from vaekit.errors import ConfigError
from vaekit.io import card
from vaekit.models import VAE, VQVAE
from vaekit.models.described import model_section
from vaekit.models.quantizer import VectorQuantizer, perplexity, usage

VQ = {"model.posterior": "vq", "model.codebook_size": 8, "model.code_dim": 2}
CONV_VQ = {
    "model.arch": "conv",
    "model.channels": [4, 8],
    "model.blocks_per_level": 0,
    "model.latent_channels": 3,
    "model.posterior": "vq",
    "model.codebook_size": 16,
    "data.noise_examples": 96,
    "train.batch_size": 32,
}


def quantizer(codebook: list[list[float]], **options: float) -> VectorQuantizer:
    q = VectorQuantizer(len(codebook), len(codebook[0]), **options)  # type: ignore[arg-type]
    q.embedding.weight.data.copy_(torch.tensor(codebook))
    if "embed_sum" in dict(q.named_buffers()):
        q.embed_sum.copy_(q.embedding.weight.data)
    return q


# -- the quantiser ------------------------------------------------------------------------------
def test_nearest_code_and_straight_through_gradient() -> None:
    q = quantizer([[0.0, 0.0], [1.0, 1.0], [-2.0, 0.0]])
    z = torch.tensor([[0.9, 1.2, -1.5, 0.1], [0.1, -0.2, 5.0, 5.0]], requires_grad=True)
    out = q(z)  # (2, 4): two codes of 2 values each per example
    assert out.codes.tolist() == [[1, 2], [0, 1]]
    assert out.codes.dtype == torch.int64
    assert torch.equal(out.z_q.detach(), torch.tensor([[1.0, 1, -2, 0], [0, 0, 1, 1]]))
    weights = torch.arange(8.0).view(2, 4)
    (out.z_q * weights).sum().backward()
    assert torch.equal(z.grad, weights)  # straight through: dz_q/dz_e = identity


def test_spatial_map_is_quantised_cell_by_cell() -> None:
    q = quantizer([[0.0, 0.0], [1.0, -1.0]])
    z = torch.zeros(1, 2, 2, 3)  # (B, C, h, w)
    z[0, 0, 1, 2], z[0, 1, 1, 2] = 0.8, -0.9  # one cell near code 1
    out = q(z)
    assert out.codes.shape == (1, 2, 3)
    assert out.codes[0, 1, 2] == 1 and out.codes.sum() == 1
    assert torch.equal(out.z_q[0, :, 1, 2], torch.tensor([1.0, -1.0]))
    assert torch.equal(q.lookup(out.codes), out.z_q)


def test_codebook_and_commitment_losses_by_hand() -> None:
    q = quantizer([[0.0, 0.0], [2.0, 2.0]], commitment=0.25)
    z = torch.tensor([[0.5, -1.0], [1.5, 3.0]], requires_grad=True)  # two examples, one code
    out = q(z)
    by_hand = torch.tensor([0.5**2 + 1.0**2, 0.5**2 + 1.0**2])  # ||z - e||^2 per example
    assert torch.allclose(out.codebook, by_hand) and torch.allclose(out.commitment, by_hand)
    loss = q.loss(out)
    assert torch.allclose(loss, by_hand + 0.25 * by_hand)
    loss.sum().backward()
    # the commitment term moves z_e (beta * 2 (z - e)); the codebook term moves e (2 (e - z))
    assert torch.allclose(z.grad, 0.25 * 2 * (z.detach() - torch.tensor([[0.0, 0], [2, 2]])))
    grad_e = q.embedding.weight.grad
    assert torch.allclose(grad_e[0], 2 * (torch.zeros(2) - torch.tensor([0.5, -1.0])))
    assert torch.allclose(grad_e[1], 2 * (torch.tensor([2.0, 2.0]) - torch.tensor([1.5, 3.0])))


def test_ema_update_by_hand() -> None:
    q = quantizer([[0.0, 0.0], [4.0, 4.0], [9.0, 9.0]], ema_decay=0.8).train()
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 5.0]])  # codes 0, 0, 1; code 2 unused
    out = q(z)
    assert out.codes.flatten().tolist() == [0, 0, 1]
    assert torch.equal(out.codebook, torch.zeros(3))  # EMA: no codebook loss
    assert not q.embedding.weight.requires_grad
    size = 0.8 * torch.ones(3) + 0.2 * torch.tensor([2.0, 1.0, 0.0])
    sums = 0.8 * torch.tensor([[0.0, 0], [4, 4], [9, 9]]) + 0.2 * torch.tensor(
        [[1.0, 1.0], [3, 5], [0, 0]]
    )
    assert torch.allclose(q.cluster_size, size) and torch.allclose(q.embed_sum, sums)
    n, eps = size.sum(), 1e-5  # Laplace smoothing: (N_k + eps) / (n + K eps) * n
    smoothed = (size + eps) / (n + 3 * eps) * n
    torch.testing.assert_close(q.embedding.weight, sums / smoothed[:, None], rtol=5e-7, atol=0)
    q.eval()  # evaluation never moves the codebook
    before = q.embedding.weight.clone()
    q(z)
    assert torch.equal(q.embedding.weight, before)


def test_dead_codes_restart_on_encoder_outputs() -> None:
    # counts start at 1 and decay by 0.99: unused codes fall to 0.99, below 1.0; code 0
    # takes 4 latents: 0.99 + 0.04
    q = quantizer([[0.0, 0.0], [100.0, 100.0], [-100.0, 50.0]], restart_dead=1.0).train()
    z = torch.tensor([[0.1, 0.2], [0.3, -0.1], [-0.2, 0.0], [0.2, 0.1]])  # all near code 0
    q(z, torch.Generator().manual_seed(0))
    weight = q.embedding.weight.detach()
    assert torch.equal(weight[0], torch.zeros(2))  # a used code stays
    for dead in (1, 2):  # the unused ones now sit on encoder outputs of the batch
        assert any(torch.equal(weight[dead], row) for row in z)
    assert torch.equal(q.cluster_size[1:], torch.ones(2))
    # a code whose count stays above the threshold is not touched
    q2 = quantizer([[0.0, 0.0], [100.0, 100.0]], restart_dead=0.001).train()
    q2(z)
    assert torch.equal(q2.embedding.weight[1].detach(), torch.tensor([100.0, 100.0]))


def test_big_codebooks_search_in_chunks_with_the_same_codes(monkeypatch) -> None:
    from vaekit.models import quantizer as module

    q = VectorQuantizer(64, 3)
    z = torch.randn(1000, 3, generator=torch.Generator().manual_seed(0))
    whole = q.nearest(z)
    monkeypatch.setattr(module, "DISTANCES", 64 * 7)  # chunks of 7 rows
    assert torch.equal(q.nearest(z), whole)


def test_perplexity_and_usage_of_known_assignments() -> None:
    assert math.isclose(perplexity(torch.tensor([2, 2, 0, 0])), 2.0)
    assert math.isclose(perplexity(torch.tensor([5, 0, 0])), 1.0)
    assert math.isclose(perplexity(torch.tensor([1, 1, 1, 1])), 4.0)
    # p = (1/2, 1/4, 1/4): entropy 1.5 log 2, perplexity 2^1.5
    assert math.isclose(perplexity(torch.tensor([2, 1, 1])), 2**1.5)
    assert usage(torch.tensor([3, 0, 1, 0])) == 0.5


def test_codes_match_diffusers_vector_quantizer() -> None:
    diffusers_vae = pytest.importorskip("diffusers.models.autoencoders.vae")
    theirs = diffusers_vae.VectorQuantizer(16, 3, beta=0.25, sane_index_shape=True)
    ours = VectorQuantizer(16, 3)
    ours.embedding.weight.data.copy_(theirs.embedding.weight.data)
    z = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    z_q, _, (_, _, codes) = theirs(z)
    out = ours(z)
    assert torch.equal(out.codes, codes) and torch.allclose(out.z_q, z_q)


# -- the model ----------------------------------------------------------------------------------
def test_vq_model_trains_saves_and_loads(tiny, tmp_path: Path) -> None:
    result = vaekit.Trainer(None, tiny("vq", **VQ)).fit()
    model = result.model
    assert isinstance(model, VQVAE) and model.latent_dim == 4
    record = result.history[-1]
    assert {"train_objective", "train_vq", "val_perplexity", "val_codebook_usage"} <= set(record)
    assert "train_nelbo" not in record and "val_nelbo" not in record
    assert 1.0 <= record["val_perplexity"] <= 8.0
    loaded = vaekit.load(result.run_dir)
    assert isinstance(loaded, VQVAE) and loaded.architecture() == model.architecture()
    record = loaded.architecture()  # config.json's: the settings, and the posterior's kind
    assert record["posterior"] == "vq" and record["codebook_size"] == 8
    described, _ = model_section(loaded, ModelConfig())  # what config.yaml reports
    assert (described.posterior, described.codebook_size, described.code_dim) == ("vq", 8, 2)
    text = card.model_card("alice/vq", architecture=record, parameters=1)  # the Hub's card
    assert "a codebook of 8 codes" in text and "encode_codes" in text
    assert "model.sample" not in text and "vaekit sample" not in text
    x = torch.rand(5, 1, 28, 28)
    codes = loaded.encode_codes(x)
    assert codes.shape == (5, 2) and codes.dtype == torch.int64
    assert torch.equal(codes, model.eval().encode_codes(x))
    assert torch.allclose(loaded.decode_images(codes), loaded.reconstruct(x))
    with pytest.raises(ConfigError, match="prior over its codes"):
        loaded.sample(4)
    stats = vaekit.evaluate(loaded, x)
    assert "nelbo" not in stats and stats["codebook_size"] == 8 and "no_density" in stats
    with pytest.raises(ConfigError, match="no density"):
        vaekit.evaluate(loaded, x, iw_samples=4)


def test_gaussian_loss_options_are_refused_for_vq(tiny) -> None:
    with pytest.raises(ConfigError, match="loss.beta 0.5 acts on a Gaussian posterior"):
        vaekit.Trainer(None, tiny("vq", **VQ, **{"loss.beta": 0.5})).fit()


def test_vq_conv_resume_is_bit_identical_with_ema_and_restarts(tiny) -> None:
    options = {**CONV_VQ, "model.ema_decay": 0.9, "model.restart_dead": 1.0, "train.epochs": 2}
    whole = vaekit.Trainer(None, tiny("whole", **options)).fit()
    cfg = tiny("parts", **options)
    cfg.train.epochs = 1
    vaekit.train(cfg)
    cfg.train.epochs = 2
    parts = vaekit.Trainer(None, cfg, resume=True).fit()
    a, b = whole.model.state_dict(), parts.model.state_dict()
    assert {"quantize.cluster_size", "quantize.embed_sum"} <= set(a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["quantize.cluster_size"], torch.ones(16))  # the EMA moved


def test_vq_through_the_cli(tmp_path: Path) -> None:
    run = tmp_path / "run"
    conv = ["--model.arch", "conv", "--model.channels", "4,8", "--model.blocks_per_level", "0"]
    flags = [*conv, "--model.latent_channels", "2", "--model.posterior", "vq"]
    r = run_cli("train", "--data", "noise", *TINY_FLAGS, *flags, "--model.codebook_size", "16",
                "--out", str(run))  # fmt: skip
    assert r.returncode == 0, r.stderr
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert "train_objective" in record and "val_perplexity" in record
    assert (run / "reconstructions.png").exists() and not (run / "samples.png").exists()
    r = run_cli("evaluate", str(run), "--json")
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert stats["codebook_size"] == 16 and 1 <= stats["codes_used"] <= 16
    assert {"psnr", "ssim", "perplexity", "recon", "vq"} <= set(stats) and "nelbo" not in stats
    assert_clean_error(run_cli("evaluate", str(run), "--iw-samples", "5"), "--iw-samples")
    assert_clean_error(
        run_cli("sample", str(run), "--out", str(tmp_path / "s.png")),
        "a VQ-VAE samples through a prior over its codes, which this run does not have",
    )
    r = run_cli("encode", str(run), "--out", str(tmp_path / "codes.npy"))
    assert r.returncode == 0, r.stderr
    codes = np.load(tmp_path / "codes.npy")
    assert codes.dtype == np.int64 and codes.shape[1:] == (7, 7)  # 28 -> 14 -> 7
    assert codes.min() >= 0 and codes.max() < 16
    r = run_cli("reconstruct", str(run), "--out", str(tmp_path / "r.png"))
    assert r.returncode == 0 and (tmp_path / "r.png").exists(), r.stderr
    r = run_cli("report", str(run), "--max-test", "16")
    assert r.returncode == 0, r.stderr
    page = (run / "report.html").read_text()
    assert "codebook perplexity" in page and "no density p(x)" in page


# -- the VQGAN preset ---------------------------------------------------------------------------
def test_vq_f8_128_preset_is_the_stated_vqgan_and_trains_its_recipe(tmp_path: Path) -> None:
    from PIL import Image

    from vaekit import cli
    from vaekit.config import load_config, resolve_config_path

    cfg = load_config("vq-f8-128")
    model = VAE.from_config(cfg.model, (3, 128, 128))
    assert isinstance(model, VQVAE) and model.latent_shape == (4, 16, 16)
    n = sum(p.numel() for p in model.parameters())
    assert f"{n:,} parameters" in resolve_config_path("vq-f8-128").read_text()
    assert cfg.loss.perceptual == "lpips-vgg" and cfg.loss.adversarial_weight > 0
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(np.kron(coarse, np.ones((8, 8, 1), dtype=np.uint8))).save(
            folder / f"{i}.png"
        )
    run = tmp_path / "run"
    args = ["train", "--config", "vq-f8-128", "--data", str(folder), "--out", str(run)]
    args += ["--data.image_size", "32", "--model.channels", "8,8,8,8", "--batch-size", "2"]
    args += ["--model.blocks_per_level", "1", "--model.codebook_size", "16", "--epochs", "1"]
    args += ["--data.test_fraction", "0.25", "--data.val_fraction", "0"]
    args += SHRUNK_GAN_RECIPE
    assert cli.main(args) == 0
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 3 and math.isfinite(last["train_objective"])
    assert math.isfinite(last["train_disc_loss"]) and last["train_adv_weight"] > 0
    model = vaekit.load(run)
    assert model.encode_codes(torch.rand(1, 3, 32, 32)).shape == (1, 4, 4)
    # diffusers' VQModel layout: it exports as one (tests/test_vq_diffusers.py: exactly)
    out = tmp_path / "exported"
    assert cli.main(["export", str(run), "--format", "diffusers", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["_class_name"] == "VQModel"


def test_two_gloo_processes_move_the_ema_codebook_as_one_process(tmp_path: Path) -> None:
    """Under DDP the EMA counts and sums are the global batch's (all-reduced), and no rank
    draws the Gaussian's noise (dynamic binarization reads the same generator): two ranks
    train the model and codebook one process trains, to test_ddp's tolerance."""
    from test_ddp import ATOL, RTOL, one_process, torchrun, weights

    vq = {**VQ, "model.ema_decay": 0.9, "model.codebook_size": 16}
    flags = [part for key, value in vq.items() for part in (f"--{key}", str(value))]
    work = tmp_path / "work"
    work.mkdir()
    torchrun(*flags, "--epochs", "1", "--out", str(tmp_path / "ddp"), cwd=work)
    two, one = weights(tmp_path / "ddp"), weights(one_process(tmp_path / "one", 1, **vq))
    assert {"quantize.cluster_size", "quantize.embed_sum"} <= set(two)
    for key in two:
        torch.testing.assert_close(two[key], one[key], atol=ATOL, rtol=RTOL, msg=key)
