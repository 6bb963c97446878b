"""The loop that trains a code prior (models/code_prior.py) for `train_prior`
(training/prior.py), built from the Trainer's own parts: its update rule (step.py's `Step`:
the optimizer, the gradient norm and the guard that skips non-finite updates), its step
records and progress bar (steplog.py's `StepLog`: skipped updates counted, divergence
stopped), where a run stands (state.py's `TrainState`), SIGINT and SIGTERM (interrupt.py:
the state saved at the next step boundary, then `TrainingInterrupted`), and the epoch order
(`epoch_permutation`, a pure function of seed and epoch, so a resumed run continues
bit-identically). Its data are integer code maps; its objective is the prior's NLL
(`PriorNLL`, the `StepTerms` every objective returns); each epoch is chosen by the NLL of
the validation codes.

Not `Trainer.fit` itself: its run session trains a `vaekit.VAE` on images and owns the
run directory's files (session.py: `checked_arguments` refuses any other model,
`_model_and_data` loads images for `model.input_shape`, `Run.save` writes config.yaml,
config.json, model.safetensors and state.pt, `selection.evaluate` takes a validation
-ELBO, `_write_images` draws samples.png), while the prior is a second model inside a
finished VQ-VAE run whose files it must leave as they are. The loop below is what is left
once those parts are shared: the epochs, the batches, and the prior's own epoch end.
"""

from __future__ import annotations

import copy
import math
import shlex
import signal
import sys
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import Config
from ..data import batch_indices, epoch_permutation
from ..data.core.dataset import num_batches
from ..errors import TrainingInterrupted
from ..evaluation.prior import code_nll
from ..models.code_prior import CodePrior, bits
from ..wording import on_command_line
from . import prior_state
from .distributed import Dist
from .interrupt import StopFlag
from .objective import StepTerms
from .state import TrainState, check_finite
from .step import Step
from .steplog import StepLog


class PriorNLL(nn.Module):
    """The prior's objective, as `Step` calls one: the batch-mean -log p(codes) in nats per
    code map. The prior has no latent term: its NLL is the whole loss (the record's nelbo
    and recon columns), and the KL column is 0."""

    def __init__(self, prior: CodePrior) -> None:
        super().__init__()
        self.prior = prior

    def forward(self, codes: torch.Tensor, y: torch.Tensor | None, step: int) -> StepTerms:
        nll = self.prior.nll(codes).mean()
        return StepTerms(nll, nll.detach(), nll.detach(), torch.zeros((), device=nll.device))


@dataclass
class Saving:
    """Where an interrupted or finished epoch's state goes (a run folder's
    code_prior_state.pt), what it must match on a resume, and the state to resume."""

    folder: Path
    options: dict[str, Any]  # epochs, batch_size, lr, channels, layers, kernel, seed, data
    fingerprints: dict[str, str]  # prior_state.fingerprints: the VQ-VAE's and the codes'
    saved: dict[str, Any] | None = None  # prior_state.load's, to resume


@dataclass
class _Loop:
    prior: CodePrior
    step: Step
    saving: Saving | None
    lr: float
    state: TrainState = field(default_factory=TrainState)
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(
        default_factory=lambda: {"epoch": 0, "val_nll": math.inf, "weights": None}
    )

    def save(self) -> None:
        if self.saving is None:
            return
        folder = self.saving.folder
        check_finite((self.prior,), self.state.global_step, folder)
        snap = prior_state.snapshot(self.state, self.prior, self.step, self.history, self.best,
                                    self.saving.options, self.saving.fingerprints)  # fmt: skip
        prior_state.save(folder, snap)


def fit(
    prior: CodePrior,
    train: torch.Tensor,
    val: torch.Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: bool,
    saving: Saving | None = None,
    note: str = "",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Adam on the mean NLL of minibatches of codes (N, h, w), in each epoch's seeded order,
    through the Trainer's `Step`; a line per epoch. The epochs' records, and the epoch of
    the lowest validation NLL with its weights (weights None: none was finite). With
    `saving`, the state is saved at each epoch's end and on SIGINT/SIGTERM, and
    `saving.saved` is continued. `note`: a line shown (with `progress`) once a resumed
    state has passed its checks, before the first step."""
    size = min(batch_size, len(train))  # fewer codes than a batch: one batch of them all
    per_epoch = num_batches(len(train), size)
    dist = _one_process()
    step = Step(prior, _config(lr), train.device, "fp32", per_epoch * epochs, dist)
    step.attach(PriorNLL(prior))
    loop = _Loop(prior, step, saving, lr)
    if saving is not None and saving.saved is not None:
        loop.state, loop.history, loop.best = prior_state.restore(
            saving.saved, saving.folder, prior, step, saving.options, saving.fingerprints,
            per_epoch)  # fmt: skip
        if progress:
            at = f"epoch {loop.state.epoch + 1}, step {loop.state.step_in_epoch}"
            print(f"resuming the code prior in {saving.folder} at {at}", file=sys.stderr)
    if progress and note:
        print(note, file=sys.stderr)
    _epochs(loop, train, val, (epochs, batch_size, seed), progress)
    return loop.history, loop.best


def _epochs(
    loop: _Loop,
    train: torch.Tensor,
    val: torch.Tensor,
    schedule: tuple[int, int, int],
    progress: bool,
) -> None:
    """The epochs left, from where `loop.state` stands: `schedule` (epochs, batch size,
    seed); stops on SIGINT/SIGTERM with the state saved."""
    epochs, batch_size, seed = schedule
    state, step, prior = loop.state, loop.step, loop.prior
    size = min(batch_size, len(train))
    per_epoch, dist = num_batches(len(train), size), step.dist
    stop = StopFlag().installed() if loop.saving is not None else nullcontext(StopFlag())
    with stop as signals:
        for epoch in range(state.epoch, epochs):
            prior.train()
            log = _step_log(loop, dist, f"prior epoch {epoch + 1}/{epochs}", size, per_epoch,
                            progress)  # fmt: skip
            order = epoch_permutation(len(train), seed, epoch).to(train.device)
            batches = batch_indices(order, size)
            for i in range(state.step_in_epoch, len(batches)):
                if signals.signum:  # stops and saves happen between steps, never inside one
                    log.close()
                    loop.save()
                    raise _interrupted(loop, epoch, signals.signum)
                record = step(train[batches[i]], None, state.global_step)
                assert record is not None  # one batch per optimizer step
                state.global_step, state.step_in_epoch = state.global_step + 1, i + 1
                log.add(record)
            _end_epoch(loop, epoch, log.close(), val, batch_size, progress)


def _step_log(
    loop: _Loop, dist: Dist, description: str, size: int, total: int, progress: bool
) -> StepLog:
    """An epoch's step records and progress bar, as the Trainer keeps them."""
    saving = loop.saving
    where = saving.folder / prior_state.STATE_FILE if saving else Path("(no folder)")
    return StepLog(
        loop.state,
        dist,
        max_skipped=Config().train.max_skipped,
        run_dir=where,  # the last good state, named when the updates diverge
        batch_size=size,
        take_back=loop.step.take_back,
        description=description,
        total=total,
        show=progress,
        diverged=lambda skips, step: (  # the prior's own option, not the Trainer's
            f"the code prior's training diverged: {skips} consecutive non-finite updates up "
            f"to step {step}; lower {prior_state.flag('lr')} (now {loop.lr:g})"
        ),
    )


def _end_epoch(
    loop: _Loop,
    epoch: int,
    means: dict[str, float],
    val: torch.Tensor,
    batch_size: int,
    progress: bool,
) -> None:
    """The epoch's record (its validation NLL), the best epoch's weights, the saved state,
    the line."""
    state, prior = loop.state, loop.prior
    state.epoch, state.step_in_epoch = epoch + 1, 0
    record: dict[str, Any] = {"epoch": epoch + 1, "step": state.global_step}
    record["train_nll"] = means["train_nelbo"]  # the NLL: the objective's whole loss
    record["skipped_updates"] = state.skipped_updates
    record["seconds"], record["samples_per_s"] = means["seconds"], means["samples_per_s"]
    record["val_nll"] = float(code_nll(prior, val, batch_size).mean())
    record["val_bits_per_code"] = bits(record["val_nll"], math.prod(prior.code_shape))
    loop.history.append(record)
    best = state.improved(record["val_nll"])
    if best:
        weights = copy.deepcopy(prior.state_dict())
        loop.best = {"epoch": epoch + 1, "val_nll": record["val_nll"], "weights": weights}
    loop.save()
    if progress:
        print(
            f"prior epoch {epoch + 1}: train {record['train_nll']:.3f}, val "
            f"{record['val_nll']:.3f} nats per example ({record['val_bits_per_code']:.4f} "
            "bits per code)" + (" *" if best else ""),
            file=sys.stderr,
        )


def _interrupted(loop: _Loop, epoch: int, signum: int) -> TrainingInterrupted:
    """The one line an interrupted train-prior ends with: where its state is, how to resume."""
    assert loop.saving is not None
    folder, o = loop.saving.folder, loop.saving.options
    names = ("epochs", "batch_size", "lr", "channels", "layers", "kernel", "seed")
    flags = [f"--{k.replace('_', '-')} {o[k]}" for k in names]
    flags += [f"--data {shlex.quote(str(o['data']))}"] if o.get("data") is not None else []
    command = f"vaekit train-prior {shlex.quote(str(folder))} {' '.join(flags)} --resume"
    how = command if on_command_line() else "vaekit.train_prior(RUN, ...) with the same "
    how += "" if on_command_line() else f"options and resume=True, or from a shell: {command}"
    return TrainingInterrupted(
        f"interrupted at prior epoch {epoch + 1}, step {loop.state.step_in_epoch}; state saved "
        f"in {folder / prior_state.STATE_FILE}. Resume with: {how}",
        128 + (signum or signal.SIGINT),
    )


def _config(lr: float) -> Config:
    """The options `Step` reads, as the prior trains: Adam at `lr`, constant, unclipped."""
    config = Config()
    config.optim = replace(config.optim, name="adam", lr=float(lr))
    return config


def _one_process() -> Dist:
    """The prior trains in one process, under torchrun too."""
    dist = Dist()
    dist.world, dist.rank, dist.enabled = 1, 0, False
    return dist
