"""Gradient accumulation (train.accumulate): N batches of B take the update one batch of
N x B takes, with clipping, the weight average, the schedule and the KL warm-up counted
per optimizer step; skipped steps, remainders, the adversarial term and bit-identical
resumes; and decoder-only training (train.freeze_encoder)."""

from __future__ import annotations

import copy
import os
import signal
from pathlib import Path

import pytest
import torch

import vaekit
from conftest import assert_one_line_error, tiny_config
from vaekit import cli
from vaekit.data import batch_indices
from vaekit.data.core.dataset import num_batches
from vaekit.errors import TrainingInterrupted
from vaekit.io import checkpoint
from vaekit.training import objective, session
from vaekit.training.finetune import encoder_side
from vaekit.training.step import accumulation_part, optimizer_steps

# 256 noise examples, no validation set: 8 batches of 32, or 32 of 8 in the same order
EVEN = {"data.val_fraction": 0.0, "data.noise_examples": 256, "train.epochs": 2}


def _train(out: Path, **options: object) -> vaekit.TrainResult:
    return vaekit.Trainer(None, tiny_config(out, **{**EVEN, **options})).fit()


def test_the_premise_one_generator_draws_the_same_noise_in_batches() -> None:
    # the model draws eps (B, D) from the run's generator: on the CPU, 4 draws of (8, 4)
    # are one draw of (32, 4) (whole blocks of 16 values), so both runs below see the same
    # noise for each example and only the order of the sums differs
    one = torch.randn((32, 4), generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    assert torch.equal(one, torch.cat([torch.randn((8, 4), generator=g) for _ in range(4)]))


@pytest.mark.parametrize(
    "options",
    [
        {"optim.name": "adam"},
        # clipping acts on the accumulated gradient (norms are ~10 here); the average, the
        # cosine schedule with warm-up and the KL warm-up count optimizer steps
        {
            "optim.name": "sgd",
            "optim.grad_clip": 1.0,
            "optim.ema": 0.9,
            "optim.schedule": "cosine",
            "optim.warmup_steps": 3,
            "loss.kl_warmup_steps": 5,
        },
    ],
)
def test_four_batches_of_8_update_as_one_batch_of_32(tmp_path: Path, options: dict) -> None:
    whole = _train(tmp_path / "whole", **{**options, "train.batch_size": 32})
    parts = _train(tmp_path / "parts", **{**options, "train.batch_size": 8, "train.accumulate": 4})
    small = _train(tmp_path / "small", **{**options, "train.batch_size": 8})
    a, b, c = (r.model.state_dict() for r in (whole, parts, small))
    # measured: at most 1.1e-7 apart after 16 updates (float32 sums in another order),
    # where batches of 8 without accumulation end 0.03 away
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6)
    assert max((a[k] - c[k]).abs().max().item() for k in a) > 1e-3
    for first, second in zip(whole.history, parts.history, strict=True):
        assert second["step"] == first["step"] == 8 * first["epoch"]  # optimizer steps
        assert second["lr"] == first["lr"]
        for key in ("train_nelbo", "train_recon", "train_kl", "train_grad_norm"):
            assert second[key] == pytest.approx(first[key], rel=1e-6), key


def test_an_epochs_last_batches_make_one_step_of_their_own() -> None:
    assert [accumulation_part(i, 7, 3) for i in range(7)] == [
        (0, 3),
        (1, 3),
        (2, 3),
        (0, 3),
        (1, 3),
        (2, 3),
        (0, 1),
    ]
    assert optimizer_steps(7, 3) == 3 and optimizer_steps(6, 3) == 2 and optimizer_steps(2, 4) == 1


def test_an_epochs_batches_are_counted_without_building_them() -> None:
    for n in (0, 1, 7, 8, 9, 31, 64):
        for batch_size in (1, 8, 32):
            batches = batch_indices(torch.arange(n), batch_size)
            assert num_batches(n, batch_size) == len(batches), (n, batch_size)


def test_a_remainder_step_is_the_mean_over_its_own_batches(tmp_path: Path) -> None:
    # 48 rows in batches of 8, 4 at a time: a step of 4 batches, then one of 2 (its loss
    # the mean over those 2 batches)
    rows = {"data.noise_examples": 48, "train.epochs": 1}
    parts = _train(tmp_path / "parts", **rows, **{"train.batch_size": 8, "train.accumulate": 4})
    assert parts.history[-1]["step"] == 2
    saved = checkpoint.load_state(parts.run_dir / checkpoint.STATE_FILE)
    assert saved["schedule"]["last_epoch"] == 2  # the schedule counted two updates
    norms = []

    class Norms(vaekit.Callback):
        def on_step_end(self, trainer) -> None:
            norms.append(1)

    cfg = tiny_config(tmp_path / "counted", **{**EVEN, **rows, "train.batch_size": 8})
    cfg.train.accumulate = 4
    vaekit.Trainer(None, cfg, callbacks=[Norms()]).fit()
    assert len(norms) == 2  # step callbacks run once per optimizer step


def test_a_remainder_step_updates_as_one_batch_of_its_examples(tmp_path: Path) -> None:
    # 16 rows in batches of 8, 4 at a time: the epoch's only step is a remainder of 2
    # batches, which must update as one batch of 16 does (SGD: the scale matters)
    rows = {"data.noise_examples": 16, "train.epochs": 3, "optim.name": "sgd"}
    parts = _train(tmp_path / "parts", **rows, **{"train.batch_size": 8, "train.accumulate": 4})
    whole = _train(tmp_path / "whole", **rows, **{"train.batch_size": 16})
    a, b = whole.model.state_dict(), parts.model.state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6)


def test_a_non_finite_batch_skips_the_whole_accumulated_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = objective.compute
    calls = []

    def nan_in_the_second_batch(*args, **kwargs):
        terms = original(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            terms.loss = terms.loss * float("nan")
        return terms

    monkeypatch.setattr(objective, "compute", nan_in_the_second_batch)
    # 32 rows, batches of 8, 4 at a time: one optimizer step in the epoch
    result = _train(
        tmp_path / "run",
        **{"data.noise_examples": 32, "train.epochs": 1, "train.batch_size": 8},
        **{"train.accumulate": 4},
    )
    assert len(calls) == 4  # the batches after the NaN were still accumulated
    assert result.history[-1]["skipped_updates"] == 1
    saved = checkpoint.load_state(result.run_dir / checkpoint.STATE_FILE)
    assert saved["optimizer"]["state"] == {}  # Adam never stepped: no update was applied
    assert saved["schedule"]["last_epoch"] == 0


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_an_accumulating_run_resumed_mid_epoch_is_bit_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ema: float
) -> None:
    options = {"train.batch_size": 8, "train.accumulate": 4, "optim.ema": ema}
    full = _train(tmp_path / "full", **options)
    original = objective.compute
    calls = []

    def interrupt_in_the_second_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:  # the second batch of the second optimizer step
            os.kill(os.getpid(), signal.SIGINT)  # the handler only sets a flag
        return original(*args, **kwargs)

    monkeypatch.setattr(objective, "compute", interrupt_in_the_second_step)
    cfg = tiny_config(tmp_path / "cut", **{**EVEN, **options})
    with pytest.raises(TrainingInterrupted):
        vaekit.train(cfg)
    saved = checkpoint.load_state(Path(cfg.train.out) / checkpoint.STATE_FILE)
    # the step in progress finished first: saves fall between optimizer steps
    assert (saved["epoch"], saved["step_in_epoch"], saved["global_step"]) == (0, 8, 2)
    monkeypatch.setattr(objective, "compute", original)
    vaekit.train(cfg, resume=True)
    a = (full.run_dir / "model.safetensors").read_bytes()
    assert (Path(cfg.train.out) / "model.safetensors").read_bytes() == a


def test_the_discriminator_steps_once_per_optimizer_step(tmp_path: Path) -> None:
    on = {"loss.adversarial_weight": 0.5, "loss.adversarial_channels": 8}
    options = {**on, "train.batch_size": 8, "train.accumulate": 4, "train.epochs": 1}
    result = _train(tmp_path / "run", **options)
    saved = checkpoint.load_state(result.run_dir / checkpoint.STATE_FILE)
    steps = {int(s["step"]) for s in saved["adversary"]["optimizer"]["state"].values()}
    assert saved["global_step"] == 8 and steps == {8}  # 32 batches, 8 updates of each


def test_an_accumulating_run_with_the_adversarial_term_resumes_bit_identically(
    tmp_path: Path,
) -> None:
    on = {"loss.adversarial_weight": 0.5, "loss.adversarial_channels": 8}
    options = {**EVEN, **on, "loss.adversarial_start": 2}
    options.update({"train.batch_size": 16, "train.accumulate": 2})  # 8 steps an epoch
    whole = _train(tmp_path / "whole", **options).run_dir

    class StopAt(vaekit.Callback):
        def on_step_end(self, trainer) -> None:
            if trainer.state.global_step == 5:
                trainer.stop()

    cfg = tiny_config(tmp_path / "halves", **options)
    vaekit.Trainer(None, cfg, callbacks=[StopAt()]).fit()
    saved = checkpoint.load_state(tmp_path / "halves" / checkpoint.STATE_FILE)
    assert (saved["global_step"], saved["step_in_epoch"]) == (5, 10)
    halves = vaekit.train(cfg, resume=True)
    assert (halves / "model.safetensors").read_bytes() == (whole / "model.safetensors").read_bytes()
    a, b = (checkpoint.load_state(r / checkpoint.STATE_FILE)["adversary"] for r in (whole, halves))
    for key, value in a["discriminator"].items():
        assert torch.equal(value, b["discriminator"][key]), key


def test_checkpoints_and_flips_count_optimizer_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # train.checkpoint_every counts optimizer steps; flips need no folder
    saves = []
    options = {"train.batch_size": 8, "train.accumulate": 4, "train.checkpoint_every": 3}
    cfg = tiny_config(tmp_path / "run", **{**EVEN, **options, "data.augment": ["flip"]})
    original = session.Run.save

    def counted(run: session.Run, model: bool = False) -> None:
        saves.append(run.state.global_step)
        original(run, model)

    monkeypatch.setattr(session.Run, "save", counted)
    vaekit.Trainer(None, cfg).fit()
    assert saves == [3, 6, 8, 9, 12, 15, 16]  # every 3 steps, and at each epoch's end (8)


@pytest.mark.parametrize("value", ["0", "-2", "1.5", "many"])
def test_nonsensical_accumulation_is_refused_in_one_line(
    value: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = cli.main(
        ["train", "--data", "noise", "--train.accumulate", value, "--out", str(tmp_path)]
    )
    assert_one_line_error(code, capsys.readouterr().err, "train.accumulate")


# -- decoder-only training ----------------------------------------------------------------
@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_a_frozen_encoder_keeps_the_starting_latents_exactly(tmp_path: Path, arch: str) -> None:
    extra = {"model.arch": "conv", "model.channels": [8, 16]} if arch == "conv" else {}
    start = _train(tmp_path / "start", **{**extra, "train.epochs": 1}).model
    x = torch.rand(16, 1, 28, 28)
    before = start.encode(x)
    cfg = tiny_config(tmp_path / "frozen", **{**EVEN, **extra, "train.freeze_encoder": True})
    trained = vaekit.Trainer(copy.deepcopy(start), cfg).fit().model
    after = trained.encode(x)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    assert not torch.equal(start.decode(before[0]), trained.decode(before[0]))  # it trained
    saved = checkpoint.load_state(Path(cfg.train.out) / checkpoint.STATE_FILE)
    encoder = {id(p) for m in encoder_side(trained) for p in m.parameters()}
    decoder = [p for p in trained.parameters() if id(p) not in encoder]
    assert encoder and len(saved["optimizer"]["state"]) == len(decoder)  # none for the encoder


def test_two_gloo_processes_accumulating_match_one_process(tmp_path: Path) -> None:
    # DDP all-reduces once per optimizer step (no_sync on the other batches): 2 ranks x
    # 2 batches of 16 rows accumulated match one process's 2 batches of 32 accumulated
    from test_ddp import assert_same_training, one_process, torchrun

    work = tmp_path / "work"
    work.mkdir()
    ddp = tmp_path / "ddp"
    torchrun("--epochs", "1", "--train.accumulate", "2", "--out", str(ddp), cwd=work)
    single = tmp_path / "single"
    one_process(single, epochs=1, **{"train.accumulate": 2})
    assert_same_training(ddp, single)
