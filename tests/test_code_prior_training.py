"""`vaekit train-prior` on the Trainer's parts (training/prior_loop.py): an interrupted
training resumes to the weights, optimizer state and records of an uninterrupted one; the
run's lock refuses a second train-prior (and a `vaekit train`) while one trains; the step
guard skips a non-finite update and the step log counts it, and stops a run of them in
one line; a resume that would continue another training is refused in one line."""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import vaekit
from conftest import assert_one_line_error, tiny_config
from test_code_prior import CONV_VQ
from vaekit import cli
from vaekit.io.checkpoint import load_state
from vaekit.models.code_prior import STATE_FILE
from vaekit.training.objective import StepTerms
from vaekit.training.prior_loop import PriorNLL

# kernel 5, not the default: the printed resume command must carry every option
OPTIONS = "--epochs 3 --channels 8 --layers 2 --kernel 5 --batch-size 16".split()


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny conv VQ-VAE run (7x7 codes of 16) without a prior."""
    return vaekit.train(tiny_config(tmp_path_factory.mktemp("vq") / "run", **CONV_VQ))


def copied(vq_run: Path, tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(vq_run, tmp_path / name))


def main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def at_call(monkeypatch: pytest.MonkeyPatch, n: int, action: Callable[[], Any]) -> None:
    """Run `action` during the n-th forward pass of the prior's objective (1-based)."""
    forward, calls = PriorNLL.forward, [0]

    def counting(self: PriorNLL, codes: torch.Tensor, y: Any, step: int) -> StepTerms:
        calls[0] += 1
        if calls[0] == n:
            action()
        return forward(self, codes, y, step)

    monkeypatch.setattr(PriorNLL, "forward", counting)


def test_an_interrupted_train_prior_resumes_to_the_uninterrupted_result(
    vq_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    whole, cut = copied(vq_run, tmp_path, "whole"), copied(vq_run, tmp_path, "cut")
    code, _, err = main(capsys, "train-prior", str(whole), *OPTIONS)
    assert code == 0, err
    assert [line.split(":")[0] for line in err.splitlines() if line.startswith("prior epoch")] == [
        "prior epoch 1", "prior epoch 2", "prior epoch 3"]  # fmt: skip
    # Ctrl-C during epoch 2's second step (6 steps an epoch): saved after it, exit 130
    at_call(monkeypatch, 8, lambda: os.kill(os.getpid(), signal.SIGINT))
    code, _, err = main(capsys, "train-prior", str(cut), *OPTIONS)
    last = err.strip().splitlines()[-1]
    assert code == 128 + signal.SIGINT and last.startswith(
        "vaekit: interrupted at prior epoch 2, step 2"
    )
    assert "Traceback" not in err and not (cut / "code_prior.json").exists()
    assert not (cut / ".vaekit.lock").exists()  # released however the training ends
    monkeypatch.undo()
    command = shlex.split(last.partition("Resume with: ")[2])
    assert command[:3] == ["vaekit", "train-prior", str(cut)] and command[-1] == "--resume"
    code, _, err = main(capsys, *command[1:])
    assert code == 0, err
    assert f"resuming the code prior in {cut} at epoch 2, step 2" in err
    best = "code_prior.safetensors"  # the best epoch's weights, byte for byte
    assert (cut / best).read_bytes() == (whole / best).read_bytes()
    a, b = load_state(whole / STATE_FILE), load_state(cut / STATE_FILE)  # the last epoch's
    assert a["global_step"] == b["global_step"] == 18 and a["epoch"] == b["epoch"] == 3
    for key in a["prior"]:
        assert torch.equal(a["prior"][key], b["prior"][key]), key
    adam = [s["optimizer"]["state"] for s in (a, b)]
    assert all(torch.equal(adam[0][i][k], adam[1][i][k]) for i in adam[0] for k in adam[0][i])
    records = [
        json.loads((run / "code_prior.json").read_text())["training"] for run in (whole, cut)
    ]
    for key in ("best_epoch", "val_nll", "val_codes", "train_codes"):
        assert records[0][key] == records[1][key], key
    for one, other in zip(*(r["history"] for r in records), strict=True):
        assert one["val_nll"] == other["val_nll"] and one["step"] == other["step"]

    # the state continues only this training: other options, or one that is finished,
    # refused before the data's codes are encoded (minutes on a large dataset)
    def encoded(*_: Any) -> Any:
        raise AssertionError("the codes were encoded before the resume was refused")

    monkeypatch.setattr("vaekit.training.prior._codes", encoded)
    code, _, err = main(capsys, *command[1:-1], "--layers", "3", "--resume")
    assert_one_line_error(code, err, "--resume: the options differ", "--layers 2 -> 3")
    code, _, err = main(capsys, *command[1:])
    assert_one_line_error(code, err, "already finished 3 epochs", "raise --epochs")


def test_a_second_train_prior_on_the_run_is_refused_while_one_trains(
    vq_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    run = copied(vq_run, tmp_path, "run")
    answers: list[tuple[int, str]] = []

    def second() -> None:  # while the first holds the run: a second train-prior, a train
        for args in (["train-prior", str(run), "--epochs", "1"],
                     ["train", "--config", str(run / "config.yaml"), "--out", str(run),
                      "--resume", "--epochs", "5"]):  # fmt: skip
            capsys.readouterr()
            answers.append((cli.main(args), capsys.readouterr().err))

    at_call(monkeypatch, 2, second)
    assert cli.main(["train-prior", str(run), *OPTIONS[2:], "--epochs", "1"]) == 0
    assert len(answers) == 2
    for code, err in answers:
        assert_one_line_error(code, err, f"{run} is in use by process {os.getpid()}")
    assert "the VQ-VAE run" in answers[0][1] and "--out" not in answers[0][1]
    assert not (run / ".vaekit.lock").exists() and (run / "code_prior.json").exists()


def test_a_non_finite_step_is_skipped_and_counted_not_applied(
    vq_run: Path, tmp_path: Path, monkeypatch
) -> None:
    run = copied(vq_run, tmp_path, "run")
    forward = PriorNLL.forward
    calls = [0]

    def poisoned(self: PriorNLL, codes: torch.Tensor, y: Any, step: int) -> StepTerms:
        terms = forward(self, codes, y, step)
        calls[0] += 1
        if calls[0] == 3:  # the guard must keep this NaN out of the weights
            terms.loss = terms.loss * float("nan")
        return terms

    monkeypatch.setattr(PriorNLL, "forward", poisoned)
    result = vaekit.train_prior(str(run), epochs=2, channels=8, layers=2, batch_size=16)
    first, second = result.history
    assert (first["skipped_updates"], second["skipped_updates"]) == (1, 1)  # a running count
    assert first["step"] == 6 and second["step"] == 12
    assert all(torch.isfinite(p).all() for p in result.model.code_prior.parameters())
    assert all(math.isfinite(r["train_nll"]) for r in result.history)


def test_a_prior_whose_updates_stay_non_finite_stops_in_one_line(
    vq_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    run = copied(vq_run, tmp_path, "run")
    forward = PriorNLL.forward

    def poisoned(self: PriorNLL, codes: torch.Tensor, y: Any, step: int) -> StepTerms:
        terms = forward(self, codes, y, step)
        terms.loss = terms.loss * float("nan")
        return terms

    monkeypatch.setattr(PriorNLL, "forward", poisoned)  # 24 steps an epoch: 20 skips stop it
    code, _, err = main(capsys, "train-prior", str(run), *OPTIONS[2:], "--batch-size", "4")
    split, _, err = err.partition("\n")  # what it trains on, then the one line
    assert split.startswith("code prior: 96 training code maps, 10 validation code maps")
    assert_one_line_error(code, err, "the code prior's training diverged: 20 consecutive",
                          "lower --lr (now 0.001)")  # fmt: skip
    assert not (run / "code_prior.json").exists() and not (run / ".vaekit.lock").exists()
