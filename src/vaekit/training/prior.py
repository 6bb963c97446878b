"""`vaekit train-prior RUN` as a function: a prior over a VQ-VAE's codes (the gated PixelCNN
of models/code_prior.py), trained on the codes of the rows the run trained on, selected on
the codes of its validation rows, and saved beside the run (code_prior.safetensors and
code_prior.json), where `vaekit.load(RUN)` finds it.

The training holds the run's lock (runlock.py) for as long as it reads and writes the
run, and runs on the Trainer's parts (training/prior_loop.py), saving its resumable state
beside the run (training/prior_state.py) so that `resume` continues it. What it shares
with `vaekit train` besides: the data the run trained on (`loading.data_of`), its
training and validation rows and the codes of them (`evaluation.encode`), and the atomic
writes. It leaves the run's own files (config.yaml, config.json, model.safetensors,
state.pt, metrics.jsonl) as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import Dataset
from ..data.core.validation import validation_rows
from ..diffusers.model import reference_of
from ..errors import ConfigError, TrainingDiverged
from ..evaluation.encode import encode
from ..loading import data_of, load
from ..models import VAE, VQVAE, code_prior
from ..models.code_prior import CodePrior, code_map
from ..models.pretrained import resolve
from . import prior_state, runlock
from .prior_loop import Saving, fit

VAL_FRACTION = 0.1  # of the training codes, held out where the run has no validation rows


@dataclass
class PriorResult:
    """What `train_prior` returns."""

    model: VQVAE  # the VQ-VAE with the trained prior attached (`model.code_prior`)
    history: list[dict[str, Any]]  # per epoch: train_nll, val_nll (nats per example), ...
    saved_in: Path | None  # the run folder the prior was saved in (None: a model was given)


def train_prior(
    run: str | Path | VAE,
    *,
    data: str | None = None,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    channels: int = 64,
    layers: int = 5,
    kernel: int = 3,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
    resume: bool = False,
) -> PriorResult:
    """Train a gated PixelCNN prior over the codes of the VQ-VAE `run` (a run folder, or a
    VQVAE in memory) and attach it; a run folder gets its files. `data`: anything --data
    takes (default: the data the run trained on); its training rows train the prior, its
    validation rows (else VAL_FRACTION of the training codes) choose the epoch kept.

    In a run folder the training holds the run's lock (a second train-prior, or a `vaekit
    train` into it, is refused in one line), saves its state at each epoch's end and on
    SIGINT/SIGTERM (code_prior_state.pt), and `resume` continues it."""
    checks = {"epochs": (epochs, 1), "batch_size": (batch_size, 1), "seed": (seed, 0)}
    for name, (value, low) in checks.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{name} must be a whole number >= {low}; got {value!r}")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not 0 < lr <= 10:
        raise ConfigError(f"lr must be a number above 0 and at most 10; got {lr!r}")
    if not isinstance(resume, bool):
        raise ConfigError(f"resume must be True or False; got {type(resume).__name__}")
    options = {"epochs": epochs, "batch_size": batch_size, "lr": float(lr), "channels": channels,
               "layers": layers, "kernel": kernel, "seed": seed, "data": data}  # fmt: skip
    if isinstance(run, VAE):
        if resume:
            raise ConfigError(
                "resume=True continues a train-prior saved in a run folder; a model in memory "
                "has none: pass the run folder"
            )
        return _train(run, None, options, device, progress, False)
    folder = _local_run(run)
    with runlock.held(folder, "the VQ-VAE run"):  # read and written by this process alone
        return _train(load(folder, device), folder, options, device, progress, resume)


def _train(
    model: VAE,
    folder: Path | None,
    options: dict[str, Any],
    device: str,
    progress: bool,
    resume: bool,
) -> PriorResult:
    """The prior of `model` trained on its codes, attached, and written into `folder`."""
    source = "the model" if folder is None else str(folder)
    if not isinstance(model, VQVAE):
        raise ConfigError(
            f"{source} is a Gaussian VAE, whose prior is N(0, I); a prior over codes is "
            "trained for a VQ-VAE (model.posterior vq)"
        )
    o = options
    with torch.random.fork_rng(devices=[]):  # the prior's start: seeded, the caller's RNG kept
        torch.manual_seed(o["seed"])
        shape = model.code_map_shape()
        prior = CodePrior(model.codebook_size, shape, o["channels"], o["layers"], o["kernel"])
    whose = code_prior.fingerprint(model.state_dict())  # the codes' model
    saved = _resumable(folder, options, whose) if resume and folder is not None else None
    dataset = data_of(model, o["data"], source=source, progress=progress)
    train, val = (c.to(model.device) for c in _codes(model, dataset, o["seed"]))
    prior.to(model.device)
    saving = None
    if folder is not None:
        saving = Saving(folder, options, prior_state.fingerprints(whose, train, val), saved)
    split = _split_line(dataset, len(train), len(val))
    history, best = fit(prior, train, val, o["epochs"], o["batch_size"], o["lr"], o["seed"],
                        progress, saving, split)  # fmt: skip
    if best["weights"] is None:
        raise TrainingDiverged(
            f"the code prior's validation NLL was never finite: lower "
            f"{prior_state.flag('lr')} (now {o['lr']:g})"
        )
    prior.load_state_dict(best["weights"])
    prior.training_record = {
        "epochs": o["epochs"], "batch_size": o["batch_size"], "lr": o["lr"], "seed": o["seed"],
        "train_codes": len(train), "val_codes": len(val), "best_epoch": best["epoch"],
        "val_nll": best["val_nll"], "history": history,
    }  # fmt: skip
    prior.model_fingerprint = whose
    model.attach_prior(prior.eval())
    if folder is not None:
        code_prior.write(folder, prior)
    return PriorResult(model, history, folder)


def _local_run(run: Any) -> Path:
    """The run folder the prior is saved in: a local folder (a Hub model or a diffusers one
    has none to write to)."""
    if not isinstance(run, (str, Path)):
        raise ConfigError(f"run must be a run folder or a vaekit.VQVAE, not {type(run).__name__}")
    if str(run).startswith("hf://") or reference_of(run) is not None:
        raise ConfigError(
            f"{run} is no vaekit run folder to save a prior in (a Hub or diffusers model): "
            "train the prior from Python on the loaded model (vaekit.train_prior(model, "
            "data=...)) and save it with model.save_pretrained(DIR)"
        )
    return resolve(run)


def _codes(model: VQVAE, dataset: Dataset, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The code maps (N, h, w) of the training rows and of the validation rows, or, for
    data without validation rows, of VAL_FRACTION of the training rows held out by `seed`."""
    train = _code_map(encode(model, dataset, split="train"))
    if dataset.x_val is not None or isinstance(dataset.info.get("carve"), dict):
        return train, _code_map(encode(model, dataset, split="val"))
    if len(train) < 2:
        raise ConfigError(
            f"{dataset.name} has {len(train)} training example and no validation rows: the "
            "prior needs two at least, one to hold out"
        )
    kept, held = validation_rows(len(train), VAL_FRACTION, seed)
    return train[torch.from_numpy(kept)], train[torch.from_numpy(held)]


def _resumable(folder: Path, options: dict[str, Any], whose: str) -> dict[str, Any]:
    """The saved state to resume, its options, epochs and VQ-VAE checked before the codes
    are encoded (minutes on a large dataset), not after; the codes' own fingerprint is
    checked once they exist."""
    saved = prior_state.load(folder)
    was = saved.get("fingerprints")
    if isinstance(was, dict):
        prior_state.check(saved, folder, options, {**was, "model": whose})
    return saved


def _split_line(dataset: Dataset, train: int, val: int) -> str:
    """What the prior trains and chooses on, as `vaekit train` says its split."""
    own = dataset.x_val is not None or isinstance(dataset.info.get("carve"), dict)
    held = "the data's validation rows" if own else f"{VAL_FRACTION:.0%} held out by seed"
    return f"code prior: {train:,} training code maps, {val:,} validation code maps ({held})"


def _code_map(arrays: Any) -> torch.Tensor:
    assert isinstance(arrays, dict)
    return code_map(torch.from_numpy(np.ascontiguousarray(arrays["codes"])))
