"""Training end to end through the Python API: run directory, metrics, save/load, resume."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import pytest
import torch
import yaml

import vaekit
from vaekit.data import load_data, to_float
from vaekit.errors import CheckpointError, ConfigError


def test_train_writes_a_complete_run_directory(trained_run: Path) -> None:
    for name in (
        "config.yaml",
        "config.json",
        "model.safetensors",
        "state.pt",
        "metrics.jsonl",
        "samples.png",
        "reconstructions.png",
    ):
        assert (trained_run / name).is_file(), name
    assert not list(trained_run.glob(".tmp-*"))
    records = [
        json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["epoch"] for r in records] == [1, 2]
    for key in (
        "train_nelbo",
        "train_recon",
        "train_kl",
        "val_nelbo",
        "val_recon",
        "val_kl",
        "seconds",
        "samples_per_s",
        "skipped_updates",
    ):
        assert key in records[-1], key
    r = records[-1]
    assert r["val_nelbo"] == pytest.approx(r["val_recon"] + r["val_kl"], rel=1e-6)
    assert not any(k.startswith("test_") for k in r)  # training never evaluates the test set
    saved = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 2 and saved["data"]["name"] == "noise"


def test_training_lowers_the_loss(tiny) -> None:
    run = vaekit.train(tiny("learn", **{"train.epochs": 4, "data.noise_examples": 1024}))
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["val_nelbo"] < records[0]["val_nelbo"] - 1.0


def test_training_starts_the_decoder_at_the_training_mean(tiny, monkeypatch) -> None:
    from vaekit.training import preflight as setup

    seen: list[torch.Tensor] = []
    original = setup.init_output_bias
    monkeypatch.setattr(
        setup, "init_output_bias", lambda model, mean: seen.append(mean) or original(model, mean)
    )
    cfg = tiny("bias")
    run = vaekit.train(cfg)
    data = load_data(cfg.data, seed=cfg.train.seed, progress=False)
    assert len(seen) == 1
    assert torch.allclose(seen[0], to_float(data.x_train).double().mean(0), atol=1e-9)
    cfg.train.epochs = 2
    vaekit.train(cfg, resume=True)  # a resumed run keeps its weights
    vaekit.train(tiny("plain", **{"model.init_output_bias": False}))
    assert len(seen) == 1
    assert run.is_dir()


def test_trained_decoder_starts_at_the_logit_of_the_mean(tiny) -> None:
    cfg = tiny("bias-value", **{"optim.lr": 1e-12})  # Adam moves each weight by ~lr
    run = vaekit.train(cfg)
    data = load_data(cfg.data, seed=cfg.train.seed, progress=False)
    mean = to_float(data.x_train).double().mean(0).clamp(1e-3, 1 - 1e-3)
    bias = vaekit.load(run).decoder.head.bias.detach().double()
    torch.testing.assert_close(bias, torch.logit(mean).flatten(), atol=1e-6, rtol=0)


def test_resuming_a_run_saved_before_an_option_existed(tiny) -> None:
    from vaekit.training.state import check_resume_config

    cfg = tiny("old")
    saved = cfg.to_dict()
    del saved["model"]["init_output_bias"]  # a state.pt from before the option
    check_resume_config(saved, cfg, Path("old"))  # missing: as the default, not None
    del saved["loss"]["free_bits"]
    cfg.loss.free_bits = 0.5  # ...and a real change is still caught
    with pytest.raises(ConfigError, match=r"loss.free_bits: 0.0 -> 0.5"):
        check_resume_config(saved, cfg, Path("old"))


def test_mean_image_averages_evenly_spaced_rows_in_unit_range(monkeypatch) -> None:
    from vaekit.data.core import dataset
    from vaekit.data.core.dataset import mean_image

    monkeypatch.setattr(dataset, "CHUNK_ROWS", 3)  # 10 rows: four chunks

    x = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2) * 25
    assert torch.allclose(mean_image(x), torch.full((1, 2, 2), 112.5 / 255, dtype=torch.float64))
    # 3 of 10 rows: 0, 4.5 -> 4 (round half to even) and 9
    assert torch.allclose(
        mean_image(x, max_images=3), torch.full((1, 2, 2), 325 / 3 / 255, dtype=torch.float64)
    )


def test_load_round_trip_gives_the_same_model(trained_run: Path) -> None:
    a, b = vaekit.load(trained_run), vaekit.load(trained_run)
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(a.encode(x)[0], b.encode(x)[0])
    state = torch.load(trained_run / "state.pt", weights_only=True)
    for k, v in a.state_dict().items():
        assert torch.equal(v, state["model"][k]), k


def test_api_evaluate_of_the_validation_set_matches_the_training_log(trained_run: Path) -> None:
    model = vaekit.load(trained_run)
    data = load_data(model.run_config.data, seed=model.run_config.train.seed)
    assert data.x_val is not None
    stats = vaekit.evaluate(model, to_float(data.x_val))
    last = json.loads((trained_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert stats["nelbo"] == pytest.approx(last["val_nelbo"], rel=1e-5)
    assert stats["n"] == data.x_val.shape[0]


def test_evaluate_refuses_out_of_range_input(trained_run: Path) -> None:
    model = vaekit.load(trained_run)
    with pytest.raises(vaekit.VaekitError, match=r"\[0, 1\]"):
        vaekit.evaluate(model, torch.full((2, 1, 28, 28), 255.0))
    with pytest.raises(vaekit.VaekitError, match="expects"):
        vaekit.evaluate(model, torch.rand(2, 3, 28, 28))


def test_load_is_strict_about_config_and_weights(trained_run: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    meta = json.loads((copy / "config.json").read_text())
    meta["architecture"]["encoder"]["args"]["hidden"] = [16]  # both halves built, other sizes
    meta["architecture"]["decoder"]["args"]["hidden"] = [16]
    (copy / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"mu_head.weight: \(4, 32\) in file, \(4, 16\)"):
        vaekit.load(copy)
    # a latent size the recorded decoder cannot take: one line, before any weight is read
    meta["architecture"]["latent_dim"] = 5
    (copy / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="the decoder MLPDecoder failed on a latent of 5"):
        vaekit.load(copy)


def test_resume_continues_to_more_epochs(tiny) -> None:
    cfg = tiny("resume")
    run = vaekit.train(cfg)
    cfg.train.epochs = 2
    vaekit.train(cfg, resume=True)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    with pytest.raises(ConfigError, match="already finished 2 epochs"):
        vaekit.train(cfg, resume=True)


def test_a_fit_returns_the_resolved_config_and_leaves_the_given_one(tiny) -> None:
    config = tiny("resolved")  # model.likelihood auto: the run resolves it
    given = copy.deepcopy(config)
    trainer = vaekit.Trainer(None, config)
    result = trainer.fit()
    assert trainer.config == config == given and config.model.likelihood == "auto"
    assert result.model.run_config.model.likelihood == "bernoulli"  # noise in [0, 1]
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["model"]["likelihood"] == "bernoulli"


def test_dynamic_binarization_trains_on_binary_pixels(tiny, monkeypatch) -> None:
    from vaekit.training import objective

    seen = []
    original = objective.compute

    def spy(model, x, *args, **kwargs):
        seen.append(x.detach().clone())
        return original(model, x, *args, **kwargs)

    monkeypatch.setattr(objective, "compute", spy)
    vaekit.train(tiny("binary", **{"data.binarize": "dynamic"}))
    values = torch.cat(seen).unique()
    assert set(values.tolist()) <= {0.0, 1.0}
    assert len(seen) >= 2 and not torch.equal(seen[0], seen[1])


@pytest.mark.parametrize("likelihood", ["gaussian", "laplace"])
def test_other_likelihoods_train(tiny, likelihood: str) -> None:
    run = vaekit.train(
        tiny(likelihood, **{"model.likelihood": likelihood, "model.learn_scale": True})
    )
    model = vaekit.load(run)
    assert model.likelihood == likelihood and model.decode(torch.zeros(1, 4)).shape[1] == 2


# -- the weight average (optim.ema) ----------------------------------------------------
def test_weight_average_follows_its_ramped_decay() -> None:
    from vaekit.training.optim import WeightAverage

    torch.manual_seed(0)
    cfg = vaekit.load_config(None, {"model.hidden": [8], "model.latent_dim": 2})
    model = vaekit.VAE.from_config(cfg.model, (1, 4, 4))
    average = WeightAverage(model, decay=0.9)
    assert average.EVERY == 4
    expected = {k: v.double().clone() for k, v in model.state_dict().items()}
    for n in range(1, 31):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        average.update()
        if n % 4 == 0 or n == 30:  # 0.9 per step, ramped: (5/14)^4 at step 4, 0.9^4 from 80
            d = min(0.9, (1 + n) / (10 + n)) ** (4 if n % 4 == 0 else 2)
            for k, v in model.state_dict().items():
                expected[k] = d * expected[k] + (1 - d) * v.double()
    assert (average.steps, average.moved) == (30, 28)
    average.sync()  # steps 29 and 30, as one move by (31/40)^2
    assert average.moved == 30
    got = average.model.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(got[k].double(), v, rtol=1e-5, atol=1e-5)
    assert not any(p.requires_grad for p in average.model.parameters())


def test_an_ema_run_saves_and_evaluates_the_average(tiny) -> None:
    from vaekit.evaluation.likelihood import elbo_stats
    from vaekit.io import checkpoint
    from vaekit.training.trainer import write_images

    cfg = tiny("ema", **{"optim.ema": 0.9, "train.epochs": 2})
    run = vaekit.train(cfg)
    state = checkpoint.load_state(run / "state.pt")
    saved = vaekit.load(run).state_dict()
    assert state["ema"]["steps"] == state["ema"]["moved"] == 8  # 2 epochs of 4 steps
    assert all(torch.equal(saved[k], v) for k, v in state["ema"]["model"].items())
    assert not all(torch.equal(saved[k], v) for k, v in state["model"].items())
    # the logged validation -ELBO is the saved (averaged) model's
    data = load_data(cfg.data, seed=cfg.train.seed, progress=False)
    assert data.x_val is not None
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    val = elbo_stats(vaekit.load(run), data.x_val, None, cfg.train.eval_batch_size, seed=0)
    assert record["val_nelbo"] == pytest.approx(val["nelbo"], rel=1e-6)
    # and so are the pictures: drawn again from the saved model, byte for byte the same
    again = run.parent / "again"
    again.mkdir()
    write_images(vaekit.load(run), data.x_val, data.y_val, again, seed=cfg.train.seed)
    for name in ("samples.png", "reconstructions.png"):
        assert (again / name).read_bytes() == (run / name).read_bytes(), name


def test_the_average_takes_in_every_step_before_it_is_used(tiny) -> None:
    from vaekit.io import checkpoint

    # 3 steps an epoch, fewer than the average's 4 between moves: without the epoch's
    # sync the saved model would be the untrained start
    run = vaekit.train(tiny("short", **{"optim.ema": 0.9, "data.noise_examples": 192}))
    state = checkpoint.load_state(run / "state.pt")
    assert state["ema"]["steps"] == state["ema"]["moved"] == 3


def test_optim_ema_must_be_below_one(tiny) -> None:
    for bad in (1.0, -0.5):
        with pytest.raises(ConfigError, match="optim.ema"):
            vaekit.train(tiny("bad", **{"optim.ema": bad}))


# -- optimizers without torch._dynamo ------------------------------------------------------
@pytest.mark.parametrize("name", ["adam", "adamw", "adagrad", "sgd"])
@pytest.mark.parametrize("fused", [True, False])
def test_vaekit_optimizers_update_exactly_as_torch_does(name: str, fused: bool) -> None:
    from vaekit.training.optim import OPTIMIZERS

    torch_kinds = {
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "adagrad": torch.optim.Adagrad,
        "sgd": torch.optim.SGD,
    }
    torch.manual_seed(0)
    ours, theirs = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    theirs.load_state_dict(ours.state_dict())
    kwargs = {"lr": 0.1, "weight_decay": 0.01, "fused": fused}
    a = OPTIMIZERS[name](ours.parameters(), **kwargs)
    b = torch_kinds[name](theirs.parameters(), **kwargs)
    assert isinstance(a, torch_kinds[name])
    for _ in range(3):
        x = torch.randn(4, 5)
        for model, opt in ((ours, a), (theirs, b)):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
    assert torch.equal(ours.weight, theirs.weight) and torch.equal(ours.bias, theirs.bias)
    assert not torch.equal(ours.weight, torch.nn.Linear(5, 3).weight)
    # the state round-trips both ways, in torch's own format
    c = torch_kinds[name](torch.nn.Linear(5, 3).parameters(), **kwargs)
    c.load_state_dict(a.state_dict())
    a.load_state_dict(b.state_dict())
    assert str(a.state_dict()) == str(b.state_dict()) == str(c.state_dict())
    again = pickle.loads(pickle.dumps(a))  # importable by name, as torch's are
    assert type(again) is type(a) and str(again.state_dict()) == str(a.state_dict())


def test_training_never_imports_the_torch_compiler(tmp_path: Path) -> None:
    """torch.optim would import torch._dynamo on first use: ~1 s of every run's start."""
    import subprocess
    import sys

    code = (
        "import sys, vaekit\n"
        "from conftest import tiny_config\n"
        f"vaekit.train(tiny_config({str(tmp_path / 'run')!r}, **{{'optim.ema': 0.9}}))\n"
        "assert 'vaekit.training.trainer' in sys.modules\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"


def test_adagrad_asks_for_no_fused_kernel_on_cuda() -> None:
    """torch's fused Adagrad is CPU-only and says so only at the first step, too late."""
    from vaekit.training.optim import make_optimizer

    model = torch.nn.Linear(2, 2)
    config = vaekit.load_config(None, {"optim.name": "adagrad"})
    assert not make_optimizer(model, config, torch.device("cuda")).defaults.get("fused")
    assert make_optimizer(model, config, torch.device("cpu")).defaults.get("fused")
    adam = vaekit.load_config(None, {"optim.name": "adam"})
    assert make_optimizer(model, adam, torch.device("cuda")).defaults.get("fused")
