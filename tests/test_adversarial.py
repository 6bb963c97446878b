"""The adversarial term (loss.adversarial_*): off by default, on from its start step, a
discriminator that learns, the adaptive weight's formula, bit-identical resume, and the
combinations it refuses."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import vaekit
from conftest import tiny_config
from vaekit.config import Config, LossConfig, ModelConfig, load_config
from vaekit.errors import ConfigError
from vaekit.io import checkpoint
from vaekit.models import VAE
from vaekit.models.discriminator import PatchDiscriminator, build_discriminator, patch_side
from vaekit.training import objective
from vaekit.training.adversary import Adversary, check_fits

ON = {"loss.adversarial_weight": 0.5, "loss.adversarial_channels": 8}
STEPS_PER_EPOCH = 4  # the tiny noise run: 230 training rows in batches of 64


def _records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


class _Watch(vaekit.Callback):
    """The model's weights after every step; stops the run after `stop_at` steps."""

    def __init__(self, stop_at: int = 0) -> None:
        self.weights: list[torch.Tensor] = []
        self.stop_at = stop_at

    def on_step_end(self, trainer: Any) -> None:
        self.weights.append(_weights(trainer.model))
        if len(self.weights) == self.stop_at:
            trainer.stop()


# -- off by default ---------------------------------------------------------------------------
def test_off_by_default_changes_nothing(tmp_path: Path) -> None:
    assert Config().loss.adversarial_weight == 0.0
    plain = vaekit.train(tiny_config(tmp_path / "plain", **{"train.epochs": 2}))
    other = {  # every setting of the term but its weight: still off
        "loss.adversarial_start": 1,
        "loss.adversarial_layers": 1,
        "loss.adversarial_channels": 4,
        "loss.adversarial_lr": 0.5,
        "train.epochs": 2,
    }
    off = vaekit.train(tiny_config(tmp_path / "off", **other))
    assert (off / "model.safetensors").read_bytes() == (plain / "model.safetensors").read_bytes()
    state = checkpoint.load_state(off / checkpoint.STATE_FILE)
    assert "adversary" not in state
    assert not any("adv" in k or "disc" in k for k in _records(off)[-1])


# -- on from its start step -------------------------------------------------------------------
def test_the_term_changes_training_from_its_start_step_on_not_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = 5
    losses: dict[str, list[float]] = {"off": [], "on": []}
    original = objective.compute
    seen = losses["off"]

    def spy(*args: Any, **kwargs: Any) -> objective.StepTerms:
        terms = original(*args, **kwargs)
        seen.append(float(terms.loss.detach()))
        return terms

    monkeypatch.setattr(objective, "compute", spy)
    watches = {}
    for name, options in (("off", {}), ("on", {**ON, "loss.adversarial_start": start})):
        seen = losses[name]
        watches[name] = _Watch()
        cfg = tiny_config(tmp_path / name, **{"train.epochs": 2, **options})
        vaekit.Trainer(None, cfg, callbacks=[watches[name]]).fit()
    off, on = losses["off"], losses["on"]
    assert len(off) == len(on) == 2 * STEPS_PER_EPOCH
    assert on[:start] == off[:start]  # steps 0..start-1: the same loss, bit for bit
    assert all(a != b for a, b in zip(on[start:], off[start:], strict=True))
    w_off, w_on = watches["off"].weights, watches["on"].weights
    assert all(torch.equal(a, b) for a, b in zip(w_off[:start], w_on[:start], strict=True))
    assert not torch.equal(w_off[start], w_on[start])  # the update of step `start` differs
    records = _records(tmp_path / "on")
    assert records[0]["train_disc_loss"] is None  # NaN, written as null: not on yet
    second = records[1]
    for key in ("train_adv_loss", "train_adv_weight", "train_disc_loss"):
        assert np.isfinite(second[key]), key
    assert second["train_adv_weight"] > 0 and second["disc_skipped_updates"] == 0


# -- the discriminator ------------------------------------------------------------------------
def test_the_patch_discriminator_has_the_recipes_shape() -> None:
    d = PatchDiscriminator(3, channels=64, layers=3)
    n = sum(p.numel() for p in d.parameters())
    assert n == 2_765_633  # taming's NLayerDiscriminator(3, 64, 3), biases and BN included
    assert d(torch.zeros(2, 3, 128, 128)).shape == (2, 1, 14, 14) and patch_side(128, 3) == 14
    assert d(torch.zeros(1, 3, 24, 24)).shape == (1, 1, 1, 1) and patch_side(24, 3) == 1
    before = torch.get_rng_state()
    a = build_discriminator(3, 8, 2, seed=3, device=torch.device("cpu"))
    assert torch.equal(before, torch.get_rng_state())  # the run's random streams untouched
    b = build_discriminator(3, 8, 2, seed=3, device=torch.device("cpu"))
    b_state = b.state_dict()
    assert all(torch.equal(value, b_state[k]) for k, value in a.state_dict().items())
    conv = a.main[0]
    assert abs(float(conv.weight.detach().std()) - 0.02) < 0.005 and not conv.bias.any()


def _adversary(**loss: Any) -> tuple[Adversary, VAE]:
    config = load_config(None, {"loss.adversarial_weight": 1.0, **loss})
    torch.manual_seed(0)
    model = VAE.from_config(ModelConfig(hidden=[16], latent_dim=2), (1, 28, 28))
    return Adversary(config, model, torch.device("cpu"), "fp32", distributed=False), model


def test_the_discriminator_learns_to_tell_real_from_reconstructed() -> None:
    options = {"loss.adversarial_channels": 8, "loss.adversarial_layers": 2, "optim.lr": 2e-3}
    adversary, _ = _adversary(**options)
    g = torch.Generator().manual_seed(0)
    real = (torch.rand(16, 1, 28, 28, generator=g) > 0.5).float()  # sharp binary images
    fake = torch.full_like(real, 0.5) + 0.05 * torch.randn(real.shape, generator=g)  # blurry
    first = float(adversary.update(real, fake)[0])
    for _ in range(10):
        loss, bad = adversary.update(real, fake)
        assert not bad
    assert first == pytest.approx(1.0, abs=0.1)  # the hinge loss of an untrained critic
    assert float(loss) < 0.2 * first


def test_a_non_finite_discriminator_loss_updates_nothing() -> None:
    adversary, _ = _adversary(**{"loss.adversarial_channels": 4})
    before = {k: v.clone() for k, v in adversary.discriminator.state_dict().items()}
    real = torch.rand(4, 1, 28, 28)
    _, bad = adversary.update(real, torch.full_like(real, float("nan")))
    assert bool(bad)
    after = adversary.discriminator.state_dict()
    params = dict(adversary.discriminator.named_parameters())
    assert all(torch.equal(before[k], after[k]) for k in params)
    assert not adversary.optimizer.state  # Adam never stepped
    loss, bad = adversary.update(real, real * 0.5)  # nothing of the NaN batch stayed behind
    assert not bad and torch.isfinite(loss)
    assert all(torch.isfinite(v).all() for v in adversary.discriminator.state_dict().values())


# -- the adaptive weight ----------------------------------------------------------------------
def test_the_adaptive_weight_is_the_recipes_formula() -> None:
    layer = nn.Parameter(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    a, b = torch.tensor([[3.0, 0.0], [0.0, 4.0]]), torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    nll, g = (layer * a).sum(), (layer * b).sum()  # gradients a and b at the layer
    weight = objective.adaptive_weight(nll, g, layer)
    assert float(weight) == pytest.approx(5.0 / (1.0 + 1e-4), rel=1e-6)  # ||a|| / (||b|| + 1e-4)
    assert not weight.requires_grad
    zero = objective.adaptive_weight(nll, (layer * 0).sum(), layer)
    assert float(zero) == 1e4  # 5 / 1e-4, clamped
    unused = objective.adaptive_weight(nll, torch.tensor(1.0, requires_grad=True), layer)
    assert float(unused) == 1e4  # a gradient that never reaches the layer counts as 0


def test_the_loss_adds_the_weighted_generator_term_at_the_decoders_last_layer() -> None:
    torch.manual_seed(0)
    model = VAE.from_config(ModelConfig(hidden=[16], latent_dim=3), (1, 28, 28))
    assert objective.last_layer(model.decoder) is model.decoder.head.weight
    d = build_discriminator(1, 4, 2, seed=0, device=torch.device("cpu")).requires_grad_(False)
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    cfg = LossConfig(adversarial_weight=0.5, adversarial_start=3)

    def terms(step: int) -> objective.StepTerms:
        noise = objective.Noise(torch.Generator().manual_seed(2))
        return objective.compute(model, x, None, cfg, step, noise, discriminator=d)

    before, on = terms(2), terms(3)
    assert before.fake is None and before.adversarial is None
    plain = float(before.loss.detach())
    assert on.fake is not None and on.adversarial is not None and on.adversarial_weight is not None
    # the same batch and noise: the ELBO part is the same; the rest is weight * g_loss
    fake_logits = d(on.fake)
    g_loss = -fake_logits.mean()
    assert float(on.adversarial) == pytest.approx(float(g_loss), rel=1e-6)
    out = model(x, None, torch.Generator().manual_seed(2))
    recon = -model.log_likelihood(x, out.params).mean()
    by_hand = objective.adaptive_weight(
        recon, -d(model.mean(out.params)).mean(), model.decoder.head.weight
    )
    assert float(on.adversarial_weight) == pytest.approx(0.5 * float(by_hand), rel=1e-5)
    extra = float(on.adversarial_weight) * float(on.adversarial)
    assert float(on.loss.detach()) == pytest.approx(plain + extra, rel=1e-6, abs=1e-4)


def test_a_decoder_names_its_last_layer() -> None:
    class Named(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.out = nn.Linear(3, 4)
            self.extra = nn.Linear(4, 4)  # registered later, but not the one named
            self.last_layer = self.out

    named = Named()
    assert objective.last_layer(named) is named.out.weight
    with pytest.raises(ConfigError, match="loss.adversarial_weight 0"):
        objective.last_layer(nn.Sequential(nn.ReLU()))


# -- resume -----------------------------------------------------------------------------------
def assert_resumed_adversary(whole: Path, halves: Path) -> None:
    """A run resumed half-way ends as the run trained straight through: the same VAE weights
    (bytes), discriminator and discriminator optimizer state (also FactorVAE's)."""
    assert (halves / "model.safetensors").read_bytes() == (whole / "model.safetensors").read_bytes()
    a, b = (checkpoint.load_state(r / checkpoint.STATE_FILE)["adversary"] for r in (whole, halves))
    for key, value in a["discriminator"].items():
        assert torch.equal(value, b["discriminator"][key]), key
    for i, state in a["optimizer"]["state"].items():
        assert all(torch.equal(state[k], b["optimizer"]["state"][i][k]) for k in state)


def test_resume_with_the_term_on_is_bit_identical(tmp_path: Path) -> None:
    options = {**ON, "loss.adversarial_start": 2, "train.epochs": 3}
    whole = vaekit.train(tiny_config(tmp_path / "whole", **options))
    cfg = tiny_config(tmp_path / "halves", **options)
    stop = 6  # mid-way through epoch 2, four steps after the term switched on
    vaekit.Trainer(None, cfg, callbacks=[_Watch(stop_at=stop)]).fit()
    saved = checkpoint.load_state(tmp_path / "halves" / checkpoint.STATE_FILE)
    assert saved["global_step"] == stop and saved["adversary"]["optimizer"]["state"]
    halves = vaekit.train(cfg, resume=True)
    assert_resumed_adversary(whole, halves)
    last = _records(whole)[-1], _records(halves)[-1]
    assert last[0]["train_disc_loss"] == last[1]["train_disc_loss"]
    # the saved model is the VAE alone: the discriminator lives in state.pt only
    model = vaekit.load(halves)
    assert not any("disc" in k for k in model.state_dict())
    assert "adversar" not in (halves / "config.json").read_text().replace("adversarial_", "")


def test_a_resume_may_not_switch_the_term_on(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "run")
    vaekit.train(cfg)
    on = dataclasses.replace(
        cfg,
        loss=dataclasses.replace(cfg.loss, adversarial_weight=0.5),
        train=dataclasses.replace(cfg.train, epochs=2),
    )
    with pytest.raises(ConfigError, match=r"loss.adversarial_weight: 0.0 -> 0.5"):
        vaekit.train(on, resume=True)


# -- with other parts of training -------------------------------------------------------------
def test_the_term_trains_with_the_perceptual_term_under_bf16(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "rgb.npz"
    np.savez(path, x_train=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8))
    options = {
        **ON,
        "data.name": str(path),
        "model.arch": "conv",
        "model.channels": [8, 16],
        "model.likelihood": "laplace",
        "loss.perceptual": "lpips-alex",
        "loss.perceptual_weight": 10.0,
        "loss.perceptual_backbone_weights": "random",
        "loss.perceptual_lin_weights": "random",
        "train.precision": "bf16",
        "train.batch_size": 8,
        "train.epochs": 2,
    }
    run = vaekit.train(tiny_config(tmp_path / "run", **options))
    for record in _records(run):
        for key in ("train_nelbo", "train_adv_loss", "train_adv_weight", "train_disc_loss"):
            assert np.isfinite(record[key]), key
        assert record["skipped_updates"] == 0 and record["disc_skipped_updates"] == 0


def test_what_the_term_cannot_do_is_refused_in_one_line(tmp_path: Path) -> None:
    _, model = _adversary()
    config = load_config(None, {"loss.adversarial_weight": 1.0})
    with pytest.raises(ConfigError, match="not supported with several processes"):
        check_fits(config, model, distributed=True)
    with pytest.raises(ConfigError, match="needs loss.iw_samples 1"):
        load_config(None, {"loss.adversarial_weight": 1.0, "loss.iw_samples": 2})
    path = tmp_path / "small.npz"
    np.savez(path, x_train=np.zeros((64, 12, 12), dtype=np.uint8))
    small = tiny_config(tmp_path / "small", **{**ON, "data.name": str(path)})
    with pytest.raises(ConfigError, match=r"at least 24 pixels a side.*12x12.*layers to 2"):
        vaekit.train(small)
    tiny = dataclasses.replace(small, loss=dataclasses.replace(small.loss, adversarial_layers=1))
    np.savez(path, x_train=np.zeros((64, 5, 5), dtype=np.uint8))
    out = str(tmp_path / "tiny")
    with pytest.raises(ConfigError, match="set loss.adversarial_weight 0"):
        vaekit.train(dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, out=out)))
