"""diffusers interop, both ways: `--model.init diffusers:DIR` fine-tunes an AutoencoderKL
that diffusers built and saved, and `vaekit export RUN --format diffusers OUT` writes a
folder that `AutoencoderKL.from_pretrained` loads and that computes what vaekit does."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vaekit
from conftest import TINY_AUTOENCODERKL, assert_one_line_error
from vaekit import cli
from vaekit.config import load_config
from vaekit.diffusers import autoencoderkl
from vaekit.errors import ConfigError
from vaekit.models import VAE

diffusers = pytest.importorskip("diffusers", reason="needs vaekit[diffusers]")
TINY = {**TINY_AUTOENCODERKL, "sample_size": 16}
# config fields the model does not use but diffusion pipelines read: an export keeps them
CARRIED = {"latents_mean": [0.1, 0.2], "latents_std": [1.5, 2.5], "force_upcast": False}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny AutoencoderKL, built and saved by diffusers itself."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("kl") / "tiny-autoencoderkl"
    diffusers.AutoencoderKL(**TINY, **CARRIED).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 16x16 RGB images: smooth gradients with noise, as PNG files."""
    root = tmp_path_factory.mktemp("images") / "pictures"
    root.mkdir()
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 16)
    for i in range(24):
        base = np.stack([ramp[None, :] * np.ones((16, 1)), ramp[:, None] * np.ones((1, 16))])
        pixels = np.concatenate([base, np.full((1, 16, 16), 10.0 * i)]).transpose(1, 2, 0)
        pixels = np.clip(pixels + rng.normal(0, 20, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def finetuned(pretrained: Path, folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two steps of fine-tuning from the diffusers model, from the CLI."""
    out = tmp_path_factory.mktemp("runs") / "finetuned"
    args = ["train", "--data", str(folder), "--model.init", f"diffusers:{pretrained}"]
    args += ["--data.image_size", "16", "--batch-size", "8", "--out", str(out)]
    args += ["--epochs", "1", "--train.progress", "false", "--data.test_fraction", "0.25"]
    assert cli.main(args) == 0
    return out


def test_the_pair_computes_exactly_what_autoencoderkl_computes() -> None:
    torch.manual_seed(1)
    reference = diffusers.AutoencoderKL(**TINY).eval()
    encoder_args, decoder_args = autoencoderkl.split_config(dict(reference.config))
    encoder, decoder = autoencoderkl.halves(encoder_args, decoder_args)
    pair = torch.nn.ModuleDict({"encoder": encoder, "decoder": decoder}).eval()
    pair.load_state_dict(autoencoderkl.from_diffusers_keys(reference.state_dict()), strict=True)
    assert set(autoencoderkl.to_diffusers_keys(pair.state_dict())) == set(reference.state_dict())
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():  # to float32 rounding: fast_ops' kernels sum in another order
        mean, logvar = encoder(x)
        posterior = reference.encode(2 * x - 1).latent_dist  # diffusers' units: [-1, 1]
        torch.testing.assert_close(mean, posterior.mean)
        torch.testing.assert_close(logvar.clamp(-30, 20), posterior.logvar)
        torch.testing.assert_close(decoder(mean), (reference.decode(mean).sample + 1) / 2)


def test_model_init_fine_tunes_the_diffusers_model(pretrained: Path, finetuned: Path) -> None:
    records = [json.loads(x) for x in (finetuned / "metrics.jsonl").read_text().splitlines()]
    assert records and all(np.isfinite(r["train_nelbo"]) for r in records if "train_nelbo" in r)
    model = vaekit.load(finetuned)
    assert autoencoderkl.is_autoencoderkl(model)
    assert model.likelihood == "laplace" and model.latent_dim == 2 * 8 * 8
    start = diffusers.AutoencoderKL.from_pretrained(pretrained).state_dict()
    mapped = autoencoderkl.to_diffusers_keys(model.state_dict())
    assert set(mapped) == set(start)
    moved = [k for k in start if not torch.equal(start[k], mapped[k])]
    assert moved, "two steps of training changed no weight"


def test_model_init_starts_from_the_exact_weights(pretrained: Path) -> None:
    cfg = load_config(None, {"model.init": f"diffusers:{pretrained}"}).model
    model = VAE.from_config(cfg, (3, 16, 16)).eval()
    reference = diffusers.AutoencoderKL.from_pretrained(pretrained).eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        mu, _ = model.encode(x)
        expected = reference.encode(2 * x - 1).latent_dist.mean
        torch.testing.assert_close(mu.view(expected.shape), expected)


def test_the_export_loads_in_diffusers_and_computes_what_vaekit_does(
    finetuned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "exported"
    assert cli.main(["export", str(finetuned), "--format", "diffusers", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]
    exported = diffusers.AutoencoderKL.from_pretrained(out).eval()
    model = vaekit.load(finetuned).eval()
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mu, logvar = model.encode(x)
        posterior = exported.encode(2 * x - 1).latent_dist
        torch.testing.assert_close(mu.view(posterior.mean.shape), posterior.mean)
        torch.testing.assert_close(logvar.view(posterior.logvar.shape), posterior.logvar)
        decoded = (exported.decode(posterior.mean).sample + 1) / 2
        torch.testing.assert_close(model.reconstruct(x), decoded.clamp(0, 1))
    assert exported.config.scaling_factor == pytest.approx(0.18215)
    # a second export into the same folder is refused unless asked; then replaced whole
    capsys.readouterr()
    assert cli.main(["export", str(finetuned), "--format", "diffusers", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    args = ["export", str(finetuned), "--format", "diffusers", str(out), "--overwrite"]
    assert cli.main([*args, "--scaling-factor", "0.5"]) == 0
    assert diffusers.AutoencoderKL.load_config(out)["scaling_factor"] == 0.5
    assert [p.name for p in tmp_path.iterdir()] == ["exported"]  # no temporary folder left


def test_a_failed_export_leaves_no_folder(
    finetuned: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def full_disk(self: object, directory: object, **kwargs: object) -> None:
        (Path(str(directory)) / "config.json").write_text("{}")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(diffusers.AutoencoderKL, "save_pretrained", full_disk)
    args = ["export", str(finetuned), "--format", "diffusers", str(tmp_path / "out")]
    assert cli.main(args) == 1
    assert "No space left on device); nothing was written" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_exporting_another_architecture_is_one_line(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "exported"
    assert cli.main(["export", str(trained_run), "--format", "diffusers", str(out)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "MLPEncoder/MLPDecoder" in err and "model.arch autoencoderkl" in err
    assert not out.exists()


def test_without_diffusers_building_the_pair_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [m for m in sys.modules if m == "diffusers" or m.startswith("diffusers.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "diffusers", None)
    cfg = load_config(None, {"model.arch": "autoencoderkl", "model.channels": [8, 16]}).model
    with pytest.raises(ConfigError) as e:
        VAE.from_config(cfg, (3, 16, 16))
    assert "pip install 'vaekit[diffusers]'" in str(e.value) and "\n" not in str(e.value)


def test_model_init_of_a_folder_that_is_no_diffusers_model_is_one_line(
    trained_run: Path, tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for target in (empty, trained_run, tmp_path / "missing"):
        args = ["train", "--data", str(folder), "--model.init", f"diffusers:{target}"]
        args += ["--data.image_size", "16", "--out", str(tmp_path / "run"), "--epochs", "1"]
        assert cli.main(args) == 1
        errors = [x for x in capsys.readouterr().err.splitlines() if "error" in x.lower()]
        assert len(errors) == 1 and "AutoencoderKL" in errors[0], errors
        assert errors[0].startswith("vaekit train: error: model.init diffusers:"), errors
    assert cli.main(["train", "--model.init", "vae.safetensors", "--out", str(tmp_path)]) == 1
    assert "diffusers:PATH_OR_REPO" in capsys.readouterr().err
    # a missing folder is refused before the data are read: here there are none to read
    missing = ["--model.init", f"diffusers:{tmp_path / 'gone'}", "--out", str(tmp_path / "r2")]
    assert cli.main(["train", "--data", str(tmp_path / "no-such-data"), *missing]) == 1
    assert "model.init diffusers:" in capsys.readouterr().err


def test_the_architecture_trains_from_scratch_with_a_fixed_scale_only(tmp_path: Path) -> None:
    settings = {"model.arch": "autoencoderkl", "model.channels": [8, 16], "data.image_size": 16}
    cfg = load_config(None, settings).model
    model = VAE.from_config(cfg, (3, 16, 16))
    assert model.likelihood == "laplace" and not model.learn_scale
    assert model.encoder.encoder.conv_in.in_channels == 3
    for bad, match in (
        ({"model.learn_scale": True, "model.likelihood": "gaussian"}, "learn_scale"),
        ({"model.likelihood": "bernoulli"}, "Bernoulli"),
    ):
        with pytest.raises(ConfigError, match=match):
            VAE.from_config(load_config(None, {**settings, **bad}).model, (3, 16, 16))
    with pytest.raises(ConfigError, match="divide by 2"):
        VAE.from_config(cfg, (3, 15, 16))


def test_the_adversarial_term_fine_tunes_an_autoencoderkl_at_its_output_conv(
    pretrained: Path, folder: Path, tmp_path: Path
) -> None:
    """latent diffusion's recipe in full: L1 + KL + the PatchGAN term, whose adaptive weight
    compares gradients at the decoder's conv_out (not post_quant_conv, registered later)."""
    from vaekit.training import objective

    cfg = load_config(None, {"model.arch": "autoencoderkl", "model.channels": [8, 16]}).model
    model = VAE.from_config(cfg, (3, 16, 16))
    assert objective.last_layer(model.decoder) is model.decoder.decoder.conv_out.weight
    out = tmp_path / "adv"
    args = ["train", "--data", str(folder), "--model.init", f"diffusers:{pretrained}"]
    args += ["--data.image_size", "16", "--batch-size", "8", "--out", str(out), "--epochs", "2"]
    args += ["--loss.adversarial_weight", "0.5", "--loss.adversarial_start", "1"]
    args += ["--loss.adversarial_layers", "1", "--train.progress", "false"]
    assert cli.main(args) == 0
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["train_adv_weight"] > 0 and np.isfinite(last["train_disc_loss"])


def export(run: Path, out: Path, *more: str) -> int:
    return cli.main(["export", str(run), "--format", "diffusers", str(out), *more])


def test_an_export_through_a_symlink_writes_where_it_points(
    finetuned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Renaming the new folder over a link to a folder failed (EISDIR) and left a
    temporary folder behind; the export now goes to the folder the link names."""
    target = tmp_path / "real"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    for _ in range(2):  # new, then replaced with --overwrite
        assert export(finetuned, link, "--overwrite") == 0, capsys.readouterr().err
        assert link.is_symlink() and (target / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_overwrite_replaces_an_earlier_export_only_never_the_run(
    finetuned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = sorted(p.name for p in finetuned.iterdir())
    for out, why in (
        (finetuned, "is the run directory itself"),
        (finetuned / "exported", "is inside the run directory"),
        (finetuned.parent, "holds the run directory"),
    ):
        code = export(finetuned, out, "--overwrite")
        assert_one_line_error(code, capsys.readouterr().err, why)
        assert sorted(p.name for p in finetuned.iterdir()) == files
    other = tmp_path / "other"  # an AutoencoderKL's config.json, and a file of the user's
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    (other / "notes.txt").write_text("mine")
    code, err = export(finetuned, other, "--overwrite"), capsys.readouterr().err
    assert_one_line_error(code, err, "also holds notes.txt", "not an earlier export")
    shutil.copy(finetuned / "config.json", other / "config.json")  # a vaekit model's
    (other / "notes.txt").unlink()
    code, err = export(finetuned, other, "--overwrite"), capsys.readouterr().err
    assert_one_line_error(code, err, "not an AutoencoderKL's")
    assert (other / "config.json").read_bytes() == (finetuned / "config.json").read_bytes()


def test_an_export_where_no_folder_can_be_made_is_one_line(
    finetuned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile" / "sub", tmp_path / "afile" / "sub" / "deeper"):
        code, err = export(finetuned, out), capsys.readouterr().err
        assert_one_line_error(code, err, "afile is not a folder, so", "cannot be made")
    if os.path.isdir("/proc"):  # a folder no one can make anything in
        code, err = export(finetuned, Path("/proc/vaekit-export")), capsys.readouterr().err
        assert_one_line_error(code, err, "cannot write", "nothing was written")


def test_the_exported_folder_has_the_mode_of_a_new_folder(finetuned: Path, tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()  # what mkdir, and diffusers' save_pretrained, give
    assert export(finetuned, tmp_path / "exported") == 0
    mode = (tmp_path / "exported").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain").stat().st_mode & 0o777


def test_the_export_keeps_the_starting_models_latent_statistics(
    finetuned: Path, tmp_path: Path
) -> None:
    assert export(finetuned, tmp_path / "exported") == 0
    config = diffusers.AutoencoderKL.load_config(tmp_path / "exported")
    assert {k: config[k] for k in CARRIED} == CARRIED
    # a run saved before these rode along records none of them: it loads, and exports
    # AutoencoderKL's defaults
    architecture = vaekit.load(finetuned).architecture()
    for key in CARRIED:
        del architecture["encoder"]["args"][key]
    config, _ = autoencoderkl.diffusers_model(VAE.from_architecture(architecture))
    assert [config[k] for k in CARRIED] == [None, None, True]


def with_weights(
    source: Path, target: Path, edit: Callable[[dict[str, torch.Tensor]], object]
) -> Path:
    """A copy of the diffusers folder `source` whose weights `edit` changed in place."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, target)
    weights = target / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    edit(state)
    save_file(state, weights)
    return target


def test_model_init_refuses_weights_that_do_not_fit_its_config(
    pretrained: Path, tmp_path: Path
) -> None:
    cases = {
        "missing: decoder.conv_out.weight": lambda s: s.pop("decoder.conv_out.weight"),
        "unexpected: extra.weight": lambda s: s.update({"extra.weight": torch.zeros(1)}),
        "wrong shape: decoder.conv_out.bias (5 in the file, 3 in the model)": lambda s: s.update(
            {"decoder.conv_out.bias": torch.zeros(5)}
        ),
    }
    for i, (needle, edit) in enumerate(cases.items()):
        folder = with_weights(pretrained, tmp_path / str(i), edit)
        cfg = load_config(None, {"model.init": f"diffusers:{folder}"}).model
        with pytest.raises(ConfigError, match="its weights do not fit its config.json") as e:
            VAE.from_config(cfg, (3, 16, 16))
        assert needle in str(e.value) and "\n" not in str(e.value)


def test_model_init_of_a_damaged_config_is_one_line(pretrained: Path, tmp_path: Path) -> None:
    for i, damage in enumerate(
        ({"norm_num_groups": 0}, {"block_out_channels": []}, {"block_out_channels": "abc"})
    ):
        folder = tmp_path / str(i)
        shutil.copytree(pretrained, folder)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **damage}))
        cfg = load_config(None, {"model.init": f"diffusers:{folder}"}).model
        with pytest.raises(ConfigError, match="no diffusers AutoencoderKL could be read there"):
            VAE.from_config(cfg, (3, 16, 16))


def test_model_init_refuses_model_options_it_replaces(pretrained: Path) -> None:
    init = {"model.init": f"diffusers:{pretrained}"}
    for option, value, base in (
        ("latent_channels", 8, "2"),
        ("blocks_per_level", 3, "1"),
        ("channels", [4, 8], r"\[8, 16\]"),
    ):
        cfg = load_config(None, {**init, f"model.{option}": value}).model
        with pytest.raises(ConfigError, match=f"pass {{'model.{option}': {base}}}$"):
            VAE.from_config(cfg, (3, 16, 16))  # from Python: the override, not the flag
    # the starting model's own values, and model.arch, are no conflict
    same = {"model.latent_channels": 2, "model.channels": [8, 16], "model.arch": "conv"}
    model = VAE.from_config(load_config(None, {**init, **same}).model, (3, 16, 16))
    assert model.latent_shape == (2, 8, 8)


def test_model_init_loads_without_a_warning_from_diffusers(pretrained: Path) -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("diffusers")
    logger.addHandler(handler)
    try:
        VAE.from_config(
            load_config(None, {"model.init": f"diffusers:{pretrained}"}).model, (3, 16, 16)
        )
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == []
