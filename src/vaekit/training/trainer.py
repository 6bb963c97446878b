"""The Trainer: the one training loop of the package, read top to bottom in `fit`.

    result = vaekit.Trainer(model, config, data=data, callbacks=[...]).fit()
    result.model, result.history, result.run_dir

`model` is any `vaekit.VAE` (None: the built-in one the config describes). The loop calls
named parts, each in a module of its own: the step and its optimizer, schedule and weight
average (step.py, optim.py), the step records (steplog.py), resume state (state.py), the
run directory (rundir.py), precision and the distributed setup. Setting a run up and
tearing it down (device, DDP, run directory, data, model, step, tracker, saving its
state) is the run session's, `with open_run(...) as run:` (session.py); this module is
the loop. The work at an epoch's end (evaluation, saving, images, callbacks) is
`_end_epoch` here. SIGINT and SIGTERM save the state at the next step boundary and raise
`TrainingInterrupted`.

With `train.accumulate` N, the loop hands the step N batches per optimizer step (an
epoch's last N' < N batches make a step of their own); the state's step counts and every
save, stop and callback fall between optimizer steps, never inside one, so a resumed run
continues bit-identically. `data.augment` crops and flips each batch (data/core/augment.py).
"""

from __future__ import annotations

import shlex
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..data import Dataset, as_dataset, batch_indices, epoch_permutation
from ..data.core import augment
from ..data.core.dataset import gather, num_batches
from ..errors import TrainingInterrupted
from ..models import VAE
from ..viz.figures import write_images
from ..wording import on_command_line
from . import selection
from .callbacks import Callback, as_callbacks, call
from .finetune import eval_encoder
from .interrupt import StopFlag
from .preflight import checked_arguments
from .session import Run, open_run
from .state import TrainState
from .step import accumulation_part
from .steplog import StepLog


@dataclass
class TrainResult:
    """What `Trainer.fit` returns."""

    model: VAE  # the trained model (the weight average with optim.ema), in eval mode;
    # with train.keep best, the best validation epoch's (model.safetensors)
    history: list[dict[str, Any]]  # one record per epoch of this fit: metrics.jsonl's lines
    run_dir: Path  # config.yaml, metrics.jsonl, config.json + model.safetensors, state.pt
    stopped_early: bool = False  # patience, a callback or Trainer.stop() ended it early
    best_epoch: int = 0  # the epoch of the best validation -ELBO (0: no validation set)


class Trainer:
    """Trains a VAE as a config says: `Trainer(model, config, data=...).fit()`.

    `model`: a `vaekit.VAE` (None builds the config's built-in MLP or conv VAE); a model
    of your own must have registered halves (`@vaekit.register`) to be saved. `data`: a
    `vaekit.data.Dataset`, or a torch Dataset / DataLoader or Hugging Face dataset read
    with the config's data.* options (`vaekit.data.from_torch`; None loads `config.data`);
    without a validation set of its own (x_val), `data.val_fraction` of its training rows
    are held out as one. The test set (x_test) is never read: training evaluates and
    selects on validation. `callbacks`: `Callback` objects (hooks on_train_start,
    on_step_end, on_validation_end, on_epoch_end, on_train_end, each returning None or a
    bool, True to stop), or functions of the epoch record that return True to stop.
    `resume` continues the run in `config.train.out`; `overwrite` replaces it.
    """

    def __init__(
        self,
        model: VAE | None = None,
        config: Config | None = None,
        *,
        data: Any = None,
        callbacks: Sequence[Callback | Callable[[dict[str, Any]], Any]] = (),
        resume: bool = False,
        overwrite: bool = False,
    ) -> None:
        self.config = checked_arguments(model, config)
        if data is not None:  # a torch or Hugging Face dataset: read as data.* says
            data = as_dataset(data, self.config.data)
        self.model = model  # the model being trained (built in fit() when None)
        self.data: Dataset | None = data
        self.callbacks = as_callbacks(callbacks)
        self.resume, self.overwrite = resume, overwrite
        self.state = TrainState()  # the run's, once fit() has set it up
        self._stopping = False
        self._run: Run | None = None

    def stop(self) -> None:
        """Ask the loop to stop after the current step (from a callback, say)."""
        self._stopping = True

    @property
    def shown(self) -> VAE:
        """What a run evaluates, draws and saves: the weight average, or the model."""
        if self._run is None:
            raise RuntimeError("the trainer has not started: call fit()")
        return self._run.shown

    # -- the loop -------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train until `train.epochs` (from where a resumed run stopped) or a stop."""
        given = (self.config, self.model, self.data, self.resume, self.overwrite)
        with open_run(*given) as run, StopFlag().installed() as signals:
            self._run, self.model, self.state = run, run.model, run.state
            self._hook_everywhere(run, "on_train_start")
            epochs = run.config.train.epochs
            last = self.state.epoch if self._stopping else epochs  # a stop before any step
            for epoch in range(self.state.epoch, last):
                log = self._start_epoch(run, epoch)
                batches = self._batches(run, epoch)
                for i in range(self.state.step_in_epoch, len(batches)):
                    part = accumulation_part(i, len(batches), run.config.train.accumulate)
                    # stops and saves happen between optimizer steps, never inside one
                    if part[0] == 0 and run.dist.any(signals.signum != 0, run.device):
                        self._interrupt(run, log, epoch, signals.signum)
                    x, y = _batch(run, batches[i], part[0])
                    record = run.step(x, y, self.state.global_step, part)
                    if record is None:  # more batches to accumulate
                        continue
                    self.state.global_step += 1
                    self.state.step_in_epoch = i + 1
                    log.add(record, batches=part[1])
                    self._after_step(run, log, record)
                    if self._stopping:
                        break
                means = log.close()
                if self.state.step_in_epoch < len(batches):  # stopped mid-epoch: resumable
                    run.save(model=run.config.train.keep == "last")
                    break
                self._end_epoch(run, epoch, means)
                if self._stopping:
                    break
            call(self.callbacks, "on_train_end", self)
        return _result(run)

    def _start_epoch(self, run: Run, epoch: int) -> StepLog:
        t = run.config.train
        _train_mode(run)
        return StepLog(
            self.state,
            run.dist,
            max_skipped=t.max_skipped,
            run_dir=run.run_dir,
            batch_size=min(t.batch_size, run.x_train.shape[0]),  # fewer rows: one short batch
            take_back=run.step.take_back,
            description=f"epoch {epoch + 1}/{t.epochs}",
            total=num_batches(run.x_train.shape[0], t.batch_size),
            show=run.show,
            adversarial=run.step.adversary.columns if run.step.adversary is not None else (),
            names=run.model.term_names,
            extra=run.step.extra,
        )

    def _batches(self, run: Run, epoch: int) -> list[torch.Tensor]:
        """This epoch's minibatches of row indices: a pure function of (seed, epoch)."""
        order = epoch_permutation(run.x_train.shape[0], run.config.train.seed, epoch)
        return batch_indices(order.to(run.x_train.device), run.config.train.batch_size)

    def _after_step(self, run: Run, log: StepLog, record: torch.Tensor) -> None:
        """Checkpoints every N steps, tracker images every N steps, step callbacks."""
        t, step = run.config.train, self.state.global_step
        if t.checkpoint_every and step % t.checkpoint_every == 0:
            log.flush()
            run.save()
        if t.log_images_every and step % t.log_images_every == 0 and run.tracker.active:
            values = dict(zip(log.columns, record.tolist(), strict=True))
            names = ("loss", "nelbo", "recon", "kl")  # trackers only: metrics.jsonl is per epoch
            run.tracker.log_scalars({name: values[name] for name in names}, step)
            # with keep: best the files hold the best epoch's pictures: these go to trackers only
            run.tracker.log_images(_write_images(run, to_disk=t.keep == "last"), step)
            _train_mode(run)
        self._hook_everywhere(run, "on_step_end")

    def _hook_everywhere(self, run: Run, hook: str) -> None:
        """A hook every rank runs; a stop asked for in one process stops them all."""
        if self.callbacks:
            self._stopping = call(self.callbacks, hook, self) or self._stopping
            self._stopping = run.dist.any(self._stopping, run.device)

    def _end_epoch(self, run: Run, epoch: int, means: dict[str, float]) -> None:
        """The epoch's record, validation, save, report line, images, callbacks."""
        if run.step.average is not None:  # at every epoch's end: resumes stay bit-identical
            run.step.average.sync()
        record: dict[str, Any] = {"epoch": epoch + 1, "step": self.state.global_step}
        record.update(means)
        record["skipped_updates"] = self.state.skipped_updates
        record["lr"] = run.step.schedule.get_last_lr()[0]
        self.state.epoch, self.state.step_in_epoch = epoch + 1, 0
        if run.dist.main:
            self._evaluate_and_save(run, record)
        self._stopping = run.dist.any(self._stopping, run.device)  # a callback stops all ranks

    def _evaluate_and_save(self, run: Run, record: dict[str, Any]) -> None:
        """Rank 0's end of an epoch: validation numbers (never the test set's), metrics.jsonl,
        the state and the model (with keep: best, only when it is the best so far), the
        report line, the images, early stopping, the callbacks."""
        t = run.config.train
        best = selection.evaluate(run.shown, run.data, self.state, t, record)
        if run.data.x_val is not None and call(self.callbacks, "on_validation_end", self, record):
            self._stopping = True
        run.tracker.log_epoch(record)
        saved = t.keep == "last" or best
        run.save(model=saved)
        stop = run.data.x_val is not None and selection.out_of_patience(self.state, t)
        if run.show:
            print(selection.epoch_line(record, t.epochs, best), file=sys.stderr)
            if stop:
                print(selection.stop_line(self.state), file=sys.stderr)
        if saved:  # the pictures show the model the run directory holds
            run.tracker.log_images(_write_images(run), self.state.global_step)
        run.history.append(record)
        self._stopping = self._stopping or stop
        if call(self.callbacks, "on_epoch_end", self, record):
            self._stopping = True

    def _interrupt(self, run: Run, log: StepLog, epoch: int, signum: int) -> None:
        """Count the pending steps (skips, the schedule's correction), save, and stop."""
        log.close()
        run.save()
        code = 128 + (signum or signal.SIGINT)
        config, out = shlex.quote(str(run.run_dir / "config.yaml")), shlex.quote(str(run.run_dir))
        command = f"vaekit train --config {config} --out {out} --resume"
        how = (
            command
            if on_command_line()
            else "Trainer(model, config, resume=True).fit() with the same config.train.out, "
            f"or from a shell: {command}"
        )
        raise TrainingInterrupted(
            f"interrupted at epoch {epoch + 1}, step {self.state.step_in_epoch}; state saved in "
            f"{run.run_dir}. Resume with: {how}",
            code,
        )


def _result(run: Run) -> TrainResult:
    """What fit returns: the shown model (with train.keep best, the best epoch's), in eval
    mode, with the resolved config and the class names it trained on."""
    trained, state = run.shown, run.state
    if run.config.train.keep == "best" and state.best_epoch and run.dist.main:
        trained = selection.best_model(trained, run.run_dir)
    trained = trained.eval().requires_grad_(True)  # the average was kept frozen
    trained.run_config, trained.class_names = run.config, list(run.data.class_names)
    stopped = state.epoch < run.config.train.epochs
    return TrainResult(trained, run.history, run.run_dir, stopped, state.best_epoch)


def _train_mode(run: Run) -> None:
    """The model in train mode; a frozen encoder (train.freeze_encoder) in eval mode."""
    run.model.train()
    if run.config.train.freeze_encoder:
        eval_encoder(run.model)


def _batch(run: Run, idx: torch.Tensor, part: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images (B, C, H, W) in [0, 1] on the device (cropped and flipped as data.augment
    says, binarized when asked), labels; under DDP this rank's rows, augmented and
    binarized as one process would. `part`: the batch's place in its optimizer step."""
    if run.augment.active:  # drawn from (seed, step, part): no generator moves
        g = augment.batch_draws(run.config.train.seed, run.state.global_step, part)
        size = run.model.input_shape[1:]
        x = augment.gather_augmented(run.x_train, idx, run.device, run.augment, size, g)
    else:
        x = gather(run.x_train, idx, run.device)
    normalization = run.model.normalization
    if not normalization.identity:
        x = normalization.to_model(x)
    if run.config.data.binarize == "dynamic":
        x = torch.bernoulli(x, generator=run.generator)
    y = run.y_train[idx].to(run.device) if run.y_train is not None else None
    if run.dist.enabled:
        x = x[run.dist.rank :: run.dist.world]
        y = y[run.dist.rank :: run.dist.world] if y is not None else None
    return x, y


def _write_images(run: Run, to_disk: bool = True) -> dict[str, Any]:
    """samples.png and reconstructions.png (with `to_disk`; else the grids only) of
    held-out images: the validation set's (the training set's when there is none), never
    the test set's."""
    x, y = run.data.x_val, run.data.y_val
    if x is None:
        x, y = run.data.x_train, run.data.y_train
    out = run.run_dir if to_disk else None
    return write_images(run.shown, x, y, out, seed=run.config.train.seed)


def train(
    config: Config, *, resume: bool = False, overwrite: bool = False, data: Any = None
) -> Path:
    """Train the VAE `config` describes and return its run directory (the one-call path;
    `Trainer` returns the model and the history too)."""
    return Trainer(None, config, data=data, resume=resume, overwrite=overwrite).fit().run_dir
