"""diffusers' VQModel both ways: `model.arch autoencoderkl` with `model.posterior vq` is
diffusers' layout, `model.init diffusers:PATH` and `vaekit.load` read a VQModel that
diffusers saved, and `vaekit export --format diffusers` writes one that
`VQModel.from_pretrained` reads; the round trip keeps the codes exactly and the decoded
images to 1e-5, on tiny VQModels saved here by diffusers itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vaekit
from conftest import TINY_AUTOENCODERKL, assert_one_line_error
from vaekit import cli
from vaekit.config import load_config
from vaekit.models import VAE, VQVAE

diffusers = pytest.importorskip("diffusers", reason="needs vaekit[diffusers]")
TINY_VQ = {**TINY_AUTOENCODERKL, "num_vq_embeddings": 16}


def save_vqmodel(folder: Path, channels: int, seed: int = 0, **config: object) -> Path:
    """A tiny VQModel saved by diffusers, its codebook spread out (diffusers starts it in
    [-1/K, 1/K], where every latent would take one code)."""
    torch.manual_seed(seed)
    model = diffusers.VQModel(
        **{**TINY_VQ, **config}, in_channels=channels, out_channels=channels, sample_size=16
    )
    with torch.no_grad():
        model.quantize.embedding.weight.normal_(0.0, 0.5)
    model.save_pretrained(folder)
    return folder


def diffusers_codes_and_images(folder: Path, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """diffusers' own codes (B, h, w) and decoded images in [0, 1] for images x in [0, 1]."""
    model = diffusers.VQModel.from_pretrained(folder).eval()
    with torch.no_grad():
        h = model.encode(2 * x - 1).latents
        _, _, (_, _, codes) = model.quantize(h)
        images = (model.decode(h).sample + 1) / 2
    return codes.view(h.shape[0], *h.shape[2:]), images.clamp(0, 1)


def assert_same_model(ours: VQVAE, folder: Path, x: torch.Tensor) -> None:
    """Codes identical, decoded images within 1e-5 of diffusers' on images x."""
    codes, images = diffusers_codes_and_images(folder, x)
    ours_codes = ours.encode_codes(x)
    assert torch.equal(ours_codes, codes)
    assert (ours.decode_images(ours_codes) - images).abs().max().item() <= 1e-5
    assert (ours.reconstruct(x) - images).abs().max().item() <= 1e-5


@pytest.mark.parametrize(
    "channels, size, config",
    [
        (1, (16, 16), {}),
        (3, (8, 16), {}),  # non-square
        (3, (16, 24), {"vq_embed_dim": 3}),  # codes wider than the encoder's latent
        (3, (16, 16), {"norm_type": "spatial", "block_out_channels": (32, 32)}),  # MoVQ
    ],
)
def test_a_vqmodel_starts_a_vq_vae_that_computes_what_diffusers_does(
    tmp_path: Path, channels: int, size: tuple[int, int], config: dict[str, object]
) -> None:
    folder = save_vqmodel(tmp_path / "vq", channels, **config)
    cfg = load_config(None, {"model.init": f"diffusers:{folder}", "model.posterior": "vq"})
    model = VAE.from_config(cfg.model, (channels, *size)).eval()
    assert isinstance(model, VQVAE) and model.codebook_size == 16
    assert model.latent_shape == (config.get("vq_embed_dim", 2), size[0] // 2, size[1] // 2)
    x = torch.rand(3, channels, *size, generator=torch.Generator().manual_seed(1))
    assert_same_model(model, folder, x)
    # and a diffusers folder is a model vaekit loads, with or without the prefix
    if size[0] == size[1] == 16:  # its sample_size
        assert_same_model(vaekit.load(folder), folder, x)  # type: ignore[arg-type]
        assert_same_model(vaekit.load(f"diffusers:{folder}"), folder, x)  # type: ignore[arg-type]


def test_the_ema_codebook_starts_from_the_vqmodels_codebook(tmp_path: Path) -> None:
    folder = save_vqmodel(tmp_path / "vq", 1)
    options = {"model.init": f"diffusers:{folder}", "model.posterior": "vq"}
    cfg = load_config(None, {**options, "model.ema_decay": 0.99, "model.restart_dead": 1.0})
    model = VAE.from_config(cfg.model, (1, 16, 16))
    codebook = diffusers.VQModel.from_pretrained(folder).quantize.embedding.weight
    assert torch.equal(model.quantize.embedding.weight, codebook)
    assert torch.equal(model.quantize.embed_sum, codebook)  # sums / counts of 1: the codebook
    assert torch.equal(model.quantize.cluster_size, torch.ones(16))


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 RGB images of 16x16: gradients with noise."""
    root = tmp_path_factory.mktemp("images") / "pictures"
    root.mkdir()
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 16)
    for i in range(20):
        pixels = np.stack([ramp[None, :].repeat(16, 0), ramp[:, None].repeat(16, 1)] * 2)[:3]
        pixels = np.clip(pixels + rng.normal(0, 30, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels.transpose(1, 2, 0)).save(root / f"{i:02d}.png")
    return root


def train(out: Path, data: Path, *options: str) -> Path:
    args = ["train", "--data", str(data), "--data.image_size", "16", "--batch-size", "10"]
    args += ["--epochs", "1", "--train.progress", "false", "--out", str(out), *options]
    assert cli.main(args) == 0
    return out


def export(run: Path, out: Path) -> Path:
    assert cli.main(["export", str(run), "--format", "diffusers", str(out)]) == 0
    return out


def test_a_run_from_scratch_exports_a_vqmodel_diffusers_reads(
    pictures: Path, tmp_path: Path
) -> None:
    options = ["--model.arch", "autoencoderkl", "--model.posterior", "vq", "--model.channels"]
    options += ["8,16", "--model.latent_channels", "2", "--model.codebook_size", "16"]
    options += ["--model.ema_decay", "0.9", "--model.code_dim", "3"]
    run = train(tmp_path / "run", pictures, *options)
    model = vaekit.load(run)
    assert isinstance(model, VQVAE) and model.latent_shape == (3, 8, 8)
    section = load_config(run / "config.yaml").model  # the model as it is
    assert (section.arch, section.posterior, section.code_dim) == ("autoencoderkl", "vq", 3)
    assert section.latent_channels == 2
    out = export(run, tmp_path / "out")
    config = json.loads((out / "config.json").read_text())
    assert config["_class_name"] == "VQModel" and config["num_vq_embeddings"] == 16
    assert config["vq_embed_dim"] == 3 and config["latent_channels"] == 2
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    assert_same_model(model, out, x)
    # an earlier VQModel export is replaced with --overwrite, as an AutoencoderKL's is
    args = ["export", str(run), "--format", "diffusers", str(out), "--scaling-factor", "0.5"]
    assert cli.main([*args, "--overwrite"]) == 0
    assert json.loads((out / "config.json").read_text())["scaling_factor"] == 0.5


def test_the_round_trip_through_a_run_is_exact(pictures: Path, tmp_path: Path) -> None:
    """diffusers -> model.init -> a run -> export -> diffusers: the exported weights are
    the run's, exactly, and the codes of the run and of the export are the same."""
    base = save_vqmodel(tmp_path / "base", 3)
    run = train(tmp_path / "run", pictures, "--model.init", f"diffusers:{base}",
                "--model.posterior", "vq", "--lr", "1e-3")  # fmt: skip
    out = export(run, tmp_path / "out")
    model = vaekit.load(run)
    assert isinstance(model, VQVAE)
    exported = diffusers.VQModel.from_pretrained(out).state_dict()
    ours = model.state_dict()
    started = diffusers.VQModel.from_pretrained(base).state_dict()
    assert not torch.equal(exported["decoder.conv_out.weight"], started["decoder.conv_out.weight"])
    assert torch.equal(exported["quant_conv.weight"], ours["encoder.quant_conv.weight"])
    assert torch.equal(exported["post_quant_conv.bias"], ours["decoder.post_quant_conv.bias"])
    assert torch.equal(exported["quantize.embedding.weight"], ours["quantize.embedding.weight"])
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    assert_same_model(model, out, x)
    # and back again: a run started from the export computes what the run does
    cfg = load_config(None, {"model.init": f"diffusers:{out}", "model.posterior": "vq"})
    again = VAE.from_config(cfg.model, (3, 16, 16))
    assert isinstance(again, VQVAE)
    assert torch.equal(again.eval().encode_codes(x), model.encode_codes(x))


def test_model_posterior_must_match_the_starting_models_class(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused from config.json alone, before the (missing) data are read."""
    vq = save_vqmodel(tmp_path / "vq", 3)
    kl = tmp_path / "kl"
    diffusers.AutoencoderKL(**TINY_AUTOENCODERKL).save_pretrained(kl)
    args = ["train", "--data", str(tmp_path / "no-such-data"), "--out", str(tmp_path / "run")]
    code = cli.main([*args, "--model.init", f"diffusers:{vq}"])
    assert_one_line_error(code, capsys.readouterr().err, "holds a diffusers VQModel",
                          "--model.posterior vq")  # fmt: skip
    code = cli.main([*args, "--model.init", f"diffusers:{kl}", "--model.posterior", "vq"])
    assert_one_line_error(code, capsys.readouterr().err, "holds a diffusers AutoencoderKL",
                          "--model.posterior gaussian")  # fmt: skip
    code = cli.main([*args, "--model.init", f"diffusers:{vq}", "--model.posterior", "vq",
                     "--model.codebook_size", "32"])  # fmt: skip
    assert_one_line_error(code, capsys.readouterr().err, "model.codebook_size is 32",
                          "num_vq_embeddings 16")  # fmt: skip


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_compare_and_sample_take_a_vqmodel_folder(
    pictures: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = save_vqmodel(tmp_path / "vq", 3)
    code, out, err = run(capsys, "evaluate", folder, "--data", pictures, "--json")
    assert code == 0, err
    stats = json.loads(out)
    assert stats["n"] == 2 and np.isfinite(stats["psnr"])  # the test split: 10% of 20
    assert stats["codebook_size"] == 16 and stats["perplexity"] >= 1.0
    code, out, err = run(capsys, "compare", f"diffusers:{folder}", folder, "--data", pictures,
                         "--json")  # fmt: skip
    assert code == 0, err
    rows = json.loads(out)
    assert [row["psnr"] for row in rows] == [stats["psnr"]] * 2
    assert rows[0]["latent_shape"] == [2, 8, 8]
    code, _, err = run(capsys, "sample", folder, "--n", "2", "--out", tmp_path / "s.png")
    assert_one_line_error(code, err, "samples through a prior over its codes")
    npy = tmp_path / "codes.npy"
    code, _, err = run(capsys, "encode", folder, "--data", pictures, "--out", npy)
    assert code == 0, err
    codes = np.load(npy)  # every image's, in the folder's order: diffusers' own codes
    x = torch.from_numpy(np.stack([np.asarray(Image.open(pictures / f"{i:02d}.png")) for i in
                                   range(20)])).permute(0, 3, 1, 2).float() / 255  # fmt: skip
    assert codes.dtype == np.int64
    assert np.array_equal(codes, diffusers_codes_and_images(folder, x)[0].numpy())


def test_a_skipped_step_leaves_the_ema_codebook_where_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every step's loss is NaN, so no update may happen: the EMA codebook and its moving
    averages (moved in the training forward pass) must be put back with the step."""
    from vaekit.training import objective

    original = objective.compute

    def always_nan(*args: object, **kwargs: object) -> objective.StepTerms:
        terms = original(*args, **kwargs)
        terms.loss = terms.loss * float("nan")
        return terms

    monkeypatch.setattr(objective, "compute", always_nan)
    options = {"model.posterior": "vq", "model.codebook_size": 8, "model.code_dim": 2}
    options |= {"model.ema_decay": 0.5, "model.restart_dead": 2.0, "model.hidden": [16]}
    options |= {"model.latent_dim": 4, "data.name": "noise", "data.noise_examples": 64}
    options |= {"train.batch_size": 16, "train.epochs": 1, "train.max_skipped": 100}
    config = load_config(None, {**options, "train.out": str(tmp_path / "run")})
    config.train.progress = False
    torch.manual_seed(config.train.seed)  # the run's start: the same seed
    start = VQVAE.from_config(config.model, (1, 28, 28)).quantize.state_dict()
    assert len(start) == 3  # the codebook, the counts and the sums
    run = vaekit.train(config)
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["skipped_updates"] == 4  # 48 training examples in batches of 16: all
    after = vaekit.load(run).quantize.state_dict()
    for key, tensor in start.items():
        assert torch.equal(after[key], tensor), key
