"""Any diffusers AutoencoderKL is a model vaekit can use: `evaluate`, `reconstruct`,
`sample` and `compare` read a folder diffusers saved (with or without `diffusers:`) or a
Hub repo through the Hugging Face cache, and `vaekit.load("diffusers:...")` gives a VAE
that computes what diffusers does, in vaekit's units ([0, 1] images)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vaekit
from conftest import TINY_AUTOENCODERKL, assert_one_line_error, write_hub_cache
from vaekit import cli

diffusers = pytest.importorskip("diffusers", reason="needs vaekit[diffusers]")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny AutoencoderKL, built and saved by diffusers itself (sample_size 16)."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("kl") / "base"
    diffusers.AutoencoderKL(**TINY_AUTOENCODERKL, sample_size=16).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 RGB images of 24x24 (read at each model's size)."""
    root = tmp_path_factory.mktemp("images") / "pictures"
    root.mkdir()
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 24)
    for i in range(20):
        pixels = np.stack([ramp[None, :].repeat(24, 0), ramp[:, None].repeat(24, 1)] * 2)[:3]
        pixels = np.clip(pixels + rng.normal(0, 30, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels.transpose(1, 2, 0)).save(root / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def finetuned(base: Path, pictures: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of fine-tuning the base model on the pictures at 16 px."""
    out = tmp_path_factory.mktemp("runs") / "finetuned"
    args = ["train", "--data", str(pictures), "--model.init", f"diffusers:{base}"]
    args += ["--data.image_size", "16", "--batch-size", "6", "--out", str(out), "--lr", "1e-3"]
    args += ["--epochs", "1", "--train.progress", "false"]
    assert cli.main(args) == 0
    return out


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_diffusers_folder_loads_as_a_vae_that_computes_what_diffusers_does(base: Path) -> None:
    model = vaekit.load(f"diffusers:{base}", image_size=24)
    assert model.input_shape == (3, 24, 24) and model.latent_shape == (2, 12, 12)
    assert vaekit.load(base).input_shape == (3, 16, 16)  # its sample_size; no prefix needed
    reference = diffusers.AutoencoderKL.from_pretrained(base).eval()
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))  # vaekit's units
    with torch.no_grad():
        posterior = reference.encode(2 * x - 1).latent_dist  # diffusers' units: [-1, 1]
        mu, logvar = model.encode(x)
        torch.testing.assert_close(mu.view(posterior.mean.shape), posterior.mean)
        torch.testing.assert_close(logvar.view(posterior.logvar.shape), posterior.logvar)
        decoded = (reference.decode(posterior.mean).sample + 1) / 2
        torch.testing.assert_close(model.reconstruct(x), decoded.clamp(0, 1))


def test_evaluate_reconstruct_and_sample_take_a_diffusers_folder(
    base: Path, pictures: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "evaluate", base, "--data", pictures, "--json")
    assert code == 0, err
    stats = json.loads(out)
    assert stats["n"] == 2 and np.isfinite(stats["psnr"])  # the test split: 10% of 20
    code, out, _ = run(capsys, "evaluate", f"diffusers:{base}", "--data", pictures, "--json")
    assert json.loads(out) | {"seconds": None} == stats | {"seconds": None}
    png = tmp_path / "r.png"
    assert run(capsys, "reconstruct", base, "--data", pictures, "--out", png)[0] == 0
    assert png.is_file()
    npy = tmp_path / "s.npy"
    assert run(capsys, "sample", f"diffusers:{base}", "--n", "3", "--out", npy)[0] == 0
    assert np.load(npy).shape == (3, 3, 16, 16)
    assert run(capsys, "sample", base, "--n", "2", "--image-size", "32", "--out", npy)[0] == 0
    assert np.load(npy).shape == (2, 3, 32, 32)


def test_encode_and_score_take_a_diffusers_folder(
    base: Path, pictures: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "codes.npz"
    code, _, _ = run(capsys, "encode", f"diffusers:{base}", "--data", pictures, "--out", out)
    assert code == 0
    codes = np.load(out)
    model = vaekit.load(f"diffusers:{base}")
    assert codes["mu"].shape[1:] == tuple(model.latent_shape)
    code, _, err = run(capsys, "score", f"diffusers:{base}", "--out", tmp_path / "s.npz")
    assert code == 1 and "--data" in err  # a diffusers model has no data of its own


def test_a_diffusers_model_without_data_is_one_line(
    base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "evaluate", f"diffusers:{base}")
    assert_one_line_error(code, err, "records no data", "--data")


def test_a_report_of_a_diffusers_model_is_one_line(
    base: Path, pictures: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "report", base, "--data", pictures, "--out", tmp_path / "r")
    assert_one_line_error(code, err, "not a vaekit run", "vaekit evaluate")


def test_another_diffusers_class_is_one_line(
    tmp_path: Path, pictures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unet = tmp_path / "unet"
    unet.mkdir()
    (unet / "config.json").write_text('{"_class_name": "UNet2DModel"}')
    code, _, err = run(capsys, "evaluate", unet, "--data", pictures)
    assert_one_line_error(code, err, "UNet2DModel", "AutoencoderKL")


def test_a_hub_repo_loads_from_the_cache_offline(
    base: Path, offline_cache: Path, pictures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {p.name: p.read_bytes() for p in base.iterdir()}
    write_hub_cache(offline_cache, "someone/tiny-vae", files)
    model = vaekit.load("diffusers:someone/tiny-vae")
    local = vaekit.load(base)
    for key, value in local.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    code, _, err = run(capsys, "evaluate", "diffusers:someone/absent", "--data", pictures)
    assert_one_line_error(code, err, "someone/absent", "not in the Hugging Face cache")


def test_compare_prints_one_row_per_model_with_evaluates_numbers(
    base: Path, finetuned: Path, pictures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "compare", base, finetuned, "--data", pictures, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["model"] for r in rows] == [str(base), str(finetuned)]
    for row, model in zip(rows, (base, finetuned), strict=True):
        code, out, _ = run(capsys, "evaluate", model, "--data", pictures, "--json")
        stats = json.loads(out)
        # the base model is read at the fine-tune's 16 px; evaluate reads it at its sample_size 16
        assert (row["psnr"], row["ssim"], row["n"]) == (stats["psnr"], stats["ssim"], stats["n"])
        assert row["latent_shape"] == [2, 8, 8] and row["parameters"] > 0
    code, out, _ = run(capsys, "compare", f"diffusers:{base}", finetuned, "--data", pictures)
    assert code == 0
    lines = out.splitlines()
    assert "PSNR" in lines[1] and len(lines) == 4 and "2x8x8" in lines[2]
    assert f"{rows[1]['psnr']:.2f}" in lines[3]


def test_compare_reads_the_data_at_each_models_size(
    base: Path, finetuned: Path, pictures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, "compare", base, "--data", pictures, "--image-size", "24", "--json"
    )
    assert code == 0, err
    assert json.loads(out)[0]["latent_shape"] == [2, 12, 12]
    arrays = pictures.parent / "arrays.npy"
    np.save(arrays, np.zeros((10, 3, 24, 24), dtype=np.uint8))
    code, _, err = run(capsys, "compare", base, finetuned, "--data", arrays)
    assert_one_line_error(code, err, "(3, 24, 24)", "(3, 16, 16)")


def test_compare_without_data_is_one_line(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "compare", base)
    assert_one_line_error(code, err, "--data")
