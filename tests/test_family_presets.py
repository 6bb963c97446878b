"""Each model family's preset (`vaekit presets`): it builds the family it names, and the
commands its comment shows (train, evaluate, sample; train-prior for the VQ-VAE, the
disentanglement scores for the factor-set presets) run on it, shrunk to a tiny network on
data the test makes (the noise dataset for the Fashion-MNIST presets, a small factor set
for the others)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

import vaekit
from vaekit import cli
from vaekit.config import load_config, preset_names, resolve_config_path

# preset: (posterior, prior, objective) it must build
FAMILY_PRESETS = {
    "fashion-vq": ("vq", "standard", "elbo"),
    "fashion-vamp": ("gaussian", "vamp", "elbo"),
    "fashion-iaf": ("iaf", "standard", "elbo"),
    "fashion-ladder": ("ladder", "standard", "elbo"),
    "fashion-infovae": ("gaussian", "standard", "infovae"),
    "factors-tcvae": ("gaussian", "standard", "tcvae"),
    "factors-factorvae": ("gaussian", "standard", "factorvae"),
}
QUIET = ["--epochs", "1", "--batch-size", "32", "--train.progress", "false"]
SHRUNK = {  # the preset's network cut down; its family settings untouched
    "mlp": ["--model.hidden", "32"],
    "conv": ["--model.channels", "4,8"],
}


def test_every_family_preset_is_shipped_and_builds_its_family() -> None:
    assert set(FAMILY_PRESETS) <= set(preset_names())
    for name, (posterior, prior, objective) in FAMILY_PRESETS.items():
        c = load_config(name)
        assert (c.model.posterior, c.model.prior, c.loss.objective) == (posterior, prior, objective)
        # each comment shows how to train it by its own name
        assert f"vaekit train --config {name}" in resolve_config_path(name).read_text()


def commands(name: str) -> list[str]:
    """The `vaekit ...` commands a preset's comment shows, minus the `train` it starts with."""
    text = resolve_config_path(name).read_text()
    shown = re.findall(r"^#\s+vaekit (\w[\w-]*)", text, flags=re.MULTILINE)
    return [c for c in shown if c != "train"]


def evaluate(run: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> dict:
    capsys.readouterr()
    assert cli.main(["evaluate", str(run), "--json", *flags]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name", [n for n in FAMILY_PRESETS if n.startswith("fashion-")])
def test_each_fashion_family_preset_trains_evaluates_and_samples(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    arch = load_config(name).model.arch
    args = ["train", "--config", name, "--data", "noise", "--data.noise_examples", "128"]
    assert cli.main([*args, *QUIET, *SHRUNK[arch], "--out", str(run)]) == 0
    model = vaekit.load(run)
    assert model.posterior_kind == FAMILY_PRESETS[name][0]
    shown = commands(name)
    if name == "fashion-vq":  # no density: reconstructions and codebook; samples via a prior
        assert shown == ["train-prior", "sample", "encode"]
        scores = evaluate(run, capsys)
        assert scores["codebook_usage"] > 0 and "nelbo" not in scores
        prior = ["--epochs", "1", "--channels", "8", "--layers", "2", "--batch-size", "32"]
        assert cli.main(["train-prior", str(run), *prior]) == 0
    else:
        assert shown[0] in ("evaluate", "sample")
        scores = evaluate(run, capsys, "--iw-samples", "8")
        assert math.isfinite(scores["nelbo"]) and math.isfinite(scores["iw_elbo"])
        if name == "fashion-ladder":  # the KL of each of its two layers
            assert math.isfinite(scores["kl_1"]) and math.isfinite(scores["kl_2"])
    assert cli.main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0


@pytest.mark.parametrize("name", [n for n in FAMILY_PRESETS if n.startswith("factors-")])
def test_each_factor_set_preset_trains_and_scores_disentanglement(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_disentanglement import load_make_shapes

    folder = tmp_path / "factors"
    load_make_shapes().make_factor_shapes(folder, n=96, size=16, seed=0)
    run = tmp_path / "run"
    args = ["train", "--config", name, "--data", str(folder), "--data.image_size", "16"]
    assert cli.main([*args, *QUIET, *SHRUNK["conv"], "--out", str(run)]) == 0
    assert commands(name) == ["evaluate"]
    scores = evaluate(run, capsys, "--data", str(folder), "--disentanglement")
    assert 0.0 <= scores["disentanglement"]["mig"] <= 1.0
    assert math.isfinite(scores["nelbo"])
