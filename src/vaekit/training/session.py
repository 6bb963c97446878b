"""A run's session: what `Trainer.fit` sets up before its first step (device, DDP, the run
directory, data, model, the step, the resumed state, the tracker), holds as one `Run`
while the loop in trainer.py runs (which saves through `Run.save`), and tears down after
its last.

    with open_run(config, model, data, resume, overwrite) as run:
        ...  # run.step(x, y, step), run.save(), run.config, run.state, ...

`open_run` sets up threads, the device, DDP and the run directory with its lock, then the
data, the model, the step, the resumed state and the tracker, all in one `Run`; afterwards
the tracker closes and DDP tears down, whatever happened. The config the run trains with
is `Run.config`: the given one resolved (a 0.1 run's old options, the `model` section of
the model trained), as config.yaml and state.pt record it; the given config is not changed.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from ..config import Config
from ..data import Dataset, provenance
from ..data.core.augment import Augment, from_options, training_rows
from ..data.core.dataset import num_batches, resident
from ..diffusers import init as diffusers_init
from ..errors import ConfigError
from ..io import checkpoint, fileio
from ..models import VAE
from ..tracking import Tracker
from . import objective, selection
from .adversary import build_adversary
from .distributed import Dist
from .finetune import check_frozen_start, freeze_encoder, warn_fine_tune_lr
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
from .state import TrainState, check_finite, legacy_config, restore, snapshot
from .step import Step, optimizer_steps


@dataclass
class Run:
    """One training run, set up: everything the loop reads, in one place."""

    config: Config  # resolved: what config.yaml and state.pt record
    model: VAE  # the model being trained, on the device
    state: TrainState  # where the run stands (restored on a resume)
    device: torch.device
    dist: Dist
    run_dir: Path
    data: Dataset
    show: bool  # this process shows progress
    step: Step  # run.step(x, y, global_step, part): one (part of an) optimizer step
    generator: torch.Generator  # the run's noise and dynamic binarization
    tracker: Tracker
    augment: Augment  # data.augment's crops and flips
    x_train: torch.Tensor  # on the device when it fits
    y_train: torch.Tensor | None
    fingerprint: str  # of the training data, in state.pt: a resume must see the same
    history: list[dict[str, Any]] = field(default_factory=list)  # the epochs' records

    @property
    def shown(self) -> VAE:
        """What a run evaluates, draws and saves: the weight average, or the model."""
        average = self.step.average
        return cast(VAE, average.model) if average is not None else self.model

    def save(self, model: bool = False) -> None:
        """state.pt at the current position (and with `model`, config.json +
        model.safetensors of the shown model); rank 0 only."""
        if not self.dist.main:
            return
        adversary = self.step.adversary
        models = (self.model, self.shown) + ((adversary.discriminator,) if adversary else ())
        check_finite(models, self.state.global_step, self.run_dir)
        if model:
            self.shown.save_pretrained(
                self.run_dir, config=self.config, class_names=self.data.class_names
            )
        state = snapshot(
            self.state,
            self.config,
            self.model,
            self.step.state_dict(),
            self.generator,
            self.model.architecture(),
            self.fingerprint,
            self.data.info.get("validation"),
        )
        checkpoint.save_state(self.run_dir / checkpoint.STATE_FILE, state)


@contextlib.contextmanager
def open_run(
    config: Config, model: VAE | None, data: Dataset | None, resume: bool, overwrite: bool
) -> Iterator[Run]:
    """Threads, device, DDP and the run directory, then data, model and the step (see
    `_prepare`); afterwards the tracker closes and DDP tears down, whatever happened."""
    t = config.train
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
                lambda: owned.enter_context(owned_run_dir(config, resume, overwrite))
            )
            run = _prepare(config, model, data, resume, device, dist, run_dir)
            try:
                yield run
            finally:
                run.tracker.close()
                run.step.release()  # DDP's reducer goes before the process group
            dist.teardown(finished=True)
    except RuntimeError as e:  # torch.OutOfMemoryError is a RuntimeError too
        if not is_out_of_memory(e):
            raise
        raise out_of_memory(device, t.batch_size) from None
    finally:
        dist.teardown()


def _prepare(
    config: Config,
    given_model: VAE | None,
    given_data: Dataset | None,
    resume: bool,
    device: torch.device,
    dist: Dist,
    run_dir: Path,
) -> Run:
    """The data, the model, the step, the resumed state and the tracker of a run."""
    saved = checkpoint.load_state(run_dir / checkpoint.STATE_FILE) if resume else None
    config = legacy_config(saved, config)  # a 0.1 run resumes without validation
    show = config.train.progress and dist.main
    config, model, data = _model_and_data(config, given_model, given_data, device, dist, saved)
    fingerprint = data.fingerprint()
    # Trainer(data=...) is data no command can reload, unless load_data(config.data) made it
    passed = given_data is not None and data.info.get("loaded_as") != config.data.name
    model.data_source = provenance.record(config.data, passed, fingerprint, data.name)
    t = config.train
    batches = num_batches(data.x_train.shape[0], t.batch_size)
    precision = resolve_precision(t.precision, device)
    adversary = build_adversary(config, model, device, precision, dist.enabled)
    if t.freeze_encoder:  # before the optimizer: the encoder gets no state there
        freeze_encoder(model)
    steps = optimizer_steps(batches, t.accumulate) * t.epochs
    step = Step(model, config, device, precision, steps, dist, adversary)
    generator = torch.Generator(device=device).manual_seed(t.seed)
    perceptual = perceptual_term(config, device)
    state = TrainState()
    if saved is not None:  # after everything that draws from the global RNG at set-up
        state = restore(saved, config, run_dir, model, step, generator, fingerprint, batches)
        selection.check_patience_left(state, t, run_dir)
        if show:
            at = f"epoch {state.epoch + 1}, step {state.step_in_epoch}"
            print(f"resuming {run_dir} at {at}", file=sys.stderr)
    # the objective is a module so that DDP wraps the whole forward pass (and its hooks)
    rank, world = (dist.rank, dist.world) if dist.enabled else (0, 1)
    noise = objective.Noise(generator, rank, world)
    discriminator = adversary.discriminator if adversary is not None else None
    n = data.x_train.shape[0]  # beta-TCVAE's N
    step.attach(objective.Objective(model, config.loss, noise, perceptual, discriminator, n))
    if dist.main:
        fileio.write_text(run_dir / "config.yaml", config_yaml(config, model))
    tracker = Tracker(run_dir, config, enabled=dist.main, resume=resume)
    # moved once when it fits; gathered there (data.augment crop: the uncropped images)
    x_train = resident(training_rows(data, config.data.augment), device)
    y_train = data.y_train.to(x_train.device) if data.y_train is not None else None
    crops = from_options(config.data.augment, config.data.image_size)
    parts = (step, generator, tracker, crops, x_train, y_train, fingerprint)
    return Run(config, model, state, device, dist, run_dir, data, show, *parts)


def _model_and_data(
    config: Config,
    given_model: VAE | None,
    given_data: Dataset | None,
    device: torch.device,
    dist: Dist,
    saved: dict[str, Any] | None,
) -> tuple[Config, VAE, Dataset]:
    """The model to train on its device, the data checked against it, and the config
    with its `model` section written from that model (`preflight.resolved`)."""
    check_frozen_start(config, given_model is not None, saved is not None)
    if given_model is None and saved is None:  # model.init's folder, before the data
        diffusers_init.check_before_data(config.model)
    data = training_data(given_data, config, config.train.progress and dist.main)
    model = build_model(given_model, config, data, device, saved)
    if dist.main:  # after model.init loaded: a failed load is its one line alone
        warn_fine_tune_lr(config)
    columns = data.info.get("columns")  # a table's: what the model writes back has them
    if isinstance(columns, list) and len(columns) == model.input_shape[0]:
        model.column_names = [str(c) for c in columns]
    config = resolved(config, model)
    check_data(data, model)
    return config, model, data
