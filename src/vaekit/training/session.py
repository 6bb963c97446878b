"""A run's session: what `Trainer.fit` sets up before its first step and tears down after
its last. `TrainerSession`, the Trainer's base class, holds the setting up: `_session`
(threads, device, DDP and the run directory with its lock; afterwards the tracker closes
and DDP tears down, whatever happened) and `_prepare` (data, model, the step, the resumed
state, the tracker), which leave everything in one `_Run` for the loop in trainer.py.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..data import Dataset, batch_indices, provenance
from ..data.augment import training_rows
from ..data.dataset import resident
from ..errors import ConfigError
from ..io import checkpoint, fileio
from ..models import VAE, diffusers_init
from ..tracking import Tracker
from . import objective, selection
from .adversary import build_adversary
from .distributed import Dist
from .finetune import freeze_encoder, warn_fine_tune_lr
from .precision import resolve_precision
from .preflight import (
    build_model,
    check_data,
    is_out_of_memory,
    out_of_memory,
    perceptual_term,
    resolve_device,
    resolved,
    training_data,
)
from .rundir import config_yaml, owned_run_dir
from .state import TrainState, legacy_config, restore
from .step import Step, optimizer_steps


@dataclass
class _Run:
    """Everything `fit` sets up, in one place instead of local variables."""

    device: torch.device
    dist: Dist
    run_dir: Path
    data: Dataset
    show: bool
    step: Step
    generator: torch.Generator
    tracker: Tracker
    x_train: torch.Tensor  # on the device when it fits
    y_train: torch.Tensor | None
    fingerprint: str  # of the training data, in state.pt: a resume must see the same
    history: list[dict[str, Any]] = field(default_factory=list)


class TrainerSession:
    """The Trainer's base class: how a run is set up and torn down, apart from the loop
    (trainer.py) that runs in between. The attributes are the Trainer's."""

    config: Config
    model: VAE | None
    data: Dataset | None
    resume: bool
    overwrite: bool
    state: TrainState
    _run: _Run | None

    # -- setting up -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _session(self) -> Iterator[_Run]:
        """Threads, device, DDP and the run directory, then data, model and the step;
        afterwards the tracker closes and DDP tears down, whatever happened."""
        t = self.config.train
        dist = Dist()
        if t.threads:
            torch.set_num_threads(t.threads)
        if t.batch_size % dist.world:
            raise ConfigError(
                f"train.batch_size {t.batch_size} must be divisible by the {dist.world} processes"
            )
        device = dist.setup(resolve_device(t.device))
        try:
            if device.type == "cpu":
                torch.set_flush_denormal(True)  # denormals cost ~100x on x86 (benchmarks/)
            if t.precision == "fp16" and device.type != "cuda":
                raise ConfigError("train.precision fp16 needs CUDA; use bf16 on the CPU")
            with contextlib.ExitStack() as owned:  # rank 0 holds the run directory's lock
                # rank 0 names and prepares the run directory (its default name has a time)
                run_dir = dist.share(
                    lambda: owned.enter_context(
                        owned_run_dir(self.config, self.resume, self.overwrite)
                    )
                )
                self._run = self._prepare(device, dist, run_dir)
                try:
                    yield self._run
                finally:
                    self._run.tracker.close()
                dist.teardown(finished=True)
        except RuntimeError as e:  # torch.OutOfMemoryError is a RuntimeError too
            if not is_out_of_memory(e):
                raise
            raise out_of_memory(device, t.batch_size) from None
        finally:
            dist.teardown()

    def _prepare(self, device: torch.device, dist: Dist, run_dir: Path) -> _Run:
        saved = checkpoint.load_state(run_dir / checkpoint.STATE_FILE) if self.resume else None
        self.config = legacy_config(saved, self.config)  # a 0.1 run resumes without validation
        t = self.config.train
        show = t.progress and dist.main
        if self.model is None and saved is None:  # model.init's folder, before the data
            diffusers_init.check_before_data(self.config.model)
        data = training_data(self.data, self.config, show)
        model = self.model = build_model(self.model, self.config, data, device, saved)
        if dist.main:  # after model.init loaded: a failed load is its one line alone
            warn_fine_tune_lr(self.config)
        columns = data.info.get("columns")  # a table's: what the model writes back has them
        if isinstance(columns, list) and len(columns) == model.input_shape[0]:
            model.column_names = [str(c) for c in columns]
        self.config = resolved(self.config, model)
        check_data(data, model)
        fingerprint = data.fingerprint()
        # Trainer(data=...) is data no command can reload, unless load_data(config.data) made it
        passed = self.data is not None and data.info.get("loaded_as") != self.config.data.name
        model.data_source = provenance.record(self.config.data, passed, fingerprint, data.name)
        batches = len(batch_indices(torch.arange(data.x_train.shape[0]), t.batch_size))
        precision = resolve_precision(t.precision, device)
        adversary = build_adversary(self.config, model, device, precision, dist.enabled)
        if t.freeze_encoder:  # before the optimizer: the encoder gets no state there
            freeze_encoder(model)
        steps = optimizer_steps(batches, t.accumulate) * t.epochs
        step = Step(model, self.config, device, precision, steps, dist, adversary)
        generator = torch.Generator(device=device).manual_seed(t.seed)
        perceptual = perceptual_term(self.config, device)
        if saved is not None:  # after everything that draws from the global RNG at set-up
            self.state = restore(
                saved, self.config, run_dir, model, step, generator, fingerprint, batches
            )
            selection.check_patience_left(self.state, t, run_dir)
            if show:
                print(
                    f"resuming {run_dir} at epoch {self.state.epoch + 1}, "
                    f"step {self.state.step_in_epoch}",
                    file=sys.stderr,
                )
        # the objective is a module so that DDP wraps the whole forward pass (and its hooks)
        discriminator = adversary.discriminator if adversary is not None else None
        rank, world = (dist.rank, dist.world) if dist.enabled else (0, 1)
        noise = objective.Noise(generator, rank, world)
        step.attach(objective.Objective(model, self.config.loss, noise, perceptual, discriminator))
        if dist.main:
            fileio.write_text(run_dir / "config.yaml", config_yaml(self.config, model))
        tracker = Tracker(run_dir, self.config, enabled=dist.main, resume=self.resume)
        # moved once when it fits; gathered there (data.augment crop: the uncropped images)
        x_train = resident(training_rows(data, self.config.data.augment), device)
        y_train = data.y_train.to(x_train.device) if data.y_train is not None else None
        parts = (step, generator, tracker, x_train, y_train, fingerprint)
        return _Run(device, dist, run_dir, data, show, *parts)

    def _require_run(self) -> _Run:
        if self._run is None:
            raise RuntimeError("the trainer has not started: call fit()")
        return self._run

    def _require_model(self) -> VAE:
        if self.model is None:
            raise RuntimeError("the trainer has not started: call fit()")
        return self.model
