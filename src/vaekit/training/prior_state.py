"""The resumable state of `vaekit train-prior` (training/prior.py): code_prior_state.pt
beside the VQ-VAE run's own state.pt, written at each epoch's end and when the training is
interrupted, and read by `train-prior --resume`.

It holds what the Trainer's state.pt holds for a run (state.py's `TrainState`, the
weights, `Step.state_dict`'s optimizer parts), and what only the prior has: the epochs'
records, the best validation epoch with its weights, the options it trains with, and
fingerprints of the VQ-VAE and of the codes it trains on. A resume continues only the
same training: the same options (but --epochs), the same model and the same codes.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import CheckpointError, ConfigError, first_line
from ..io import checkpoint
from ..models.code_prior import STATE_FILE, CodePrior, fingerprint
from ..wording import on_command_line, option
from .state import TrainState

if TYPE_CHECKING:
    from .step import Step

FORMAT = 1


def snapshot(
    state: TrainState,
    prior: CodePrior,
    step: Step,
    history: list[dict[str, Any]],
    best: dict[str, Any],
    options: dict[str, Any],
    fingerprints: dict[str, str],
) -> dict[str, Any]:
    """What code_prior_state.pt holds (see the module doc)."""
    return {
        "format": FORMAT,
        "options": dict(options),  # epochs, batch_size, lr, seed, channels, layers, kernel
        "fingerprints": dict(fingerprints),  # model: the VQ-VAE's; codes: train and val codes
        "prior": prior.state_dict(),
        **step.state_dict(),
        "history": copy.deepcopy(history),
        "best": dict(best),  # epoch, val_nll and weights of the best validation epoch
        **state.to_dict(),
    }


def save(folder: Path, snap: dict[str, Any]) -> None:
    checkpoint.save_state(folder / STATE_FILE, snap)


def load(folder: Path) -> dict[str, Any]:
    """The saved state of an interrupted train-prior in `folder`; one line without one."""
    path = folder / STATE_FILE
    if not path.is_file():
        raise ConfigError(
            f"{option('resume')}: {folder} holds no saved train-prior ({STATE_FILE}); "
            f"start it without {option('resume')}"
        )
    try:
        return checkpoint.load_state(path)
    except CheckpointError:  # its message names the Trainer's remedies
        raise CheckpointError(
            f"{path} is incomplete or corrupt (not a train-prior state vaekit wrote); start "
            f"the prior afresh without {option('resume')}"
        ) from None


def check(
    saved: dict[str, Any], folder: Path, options: dict[str, Any], fingerprints: dict[str, str]
) -> TrainState:
    """Where `saved` stands, after checking that it continues this training: the same
    options (but epochs, which must be more), model and codes; one line if not."""
    path, resume = folder / STATE_FILE, option("resume")
    parts = (saved.get("options"), saved.get("prior"), saved.get("fingerprints"))
    if not all(isinstance(part, dict) for part in parts):
        raise CheckpointError(f"{path} is incomplete or corrupt: start the prior afresh")
    kept: dict[str, Any] = saved["options"]
    diffs = [
        f"{flag(k)} {kept.get(k)!r} -> {v!r}"
        for k, v in options.items()
        if k != "epochs" and kept.get(k) != v
    ]
    if diffs:
        raise ConfigError(
            f"{resume}: the options differ from those of the train-prior saved in {folder} "
            f"({'; '.join(diffs[:4])}); resume with its options, or start afresh without {resume}"
        )
    was = saved["fingerprints"]
    if was != fingerprints:
        same_model = was.get("model") == fingerprints["model"]
        what = "the codes of the data" if same_model else "the VQ-VAE"
        raise ConfigError(
            f"{resume}: {what} in {folder} changed since its prior's training was saved; start "
            f"the prior afresh without {resume}"
        )
    state = TrainState.from_dict(saved, str(path))
    if state.epoch >= options["epochs"]:
        raise ConfigError(
            f"{resume}: the prior in {folder} already finished {state.epoch} epochs; raise "
            f"{flag('epochs')} to train further"
        )
    return state


def restore(
    saved: dict[str, Any],
    folder: Path,
    prior: CodePrior,
    step: Step,
    options: dict[str, Any],
    fingerprints: dict[str, str],
    steps_per_epoch: int,
) -> tuple[TrainState, list[dict[str, Any]], dict[str, Any]]:
    """Load `saved` into the prior and the step's optimizer, after checking it continues
    this training (`check`); where it stands, its epochs' records and its best epoch."""
    path = folder / STATE_FILE
    state = check(saved, folder, options, fingerprints)
    if state.step_in_epoch > steps_per_epoch:  # equal: saved after an epoch's last step
        raise CheckpointError(
            f"{path} is at step {state.step_in_epoch} of an epoch of {steps_per_epoch} steps; "
            "start the prior afresh"
        )
    try:
        checkpoint.check_state_dict(prior, saved["prior"], str(path))
        prior.load_state_dict(saved["prior"])
        step.load_state_dict(saved)
        history, best = list(saved["history"]), dict(saved["best"])
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        raise CheckpointError(
            f"{path} does not fit this prior ({first_line(e)[:160]}); start it afresh"
        ) from None
    return state, history, best


def fingerprints(model: str, train: torch.Tensor, val: torch.Tensor) -> dict[str, str]:
    """Whose codes, and which: the VQ-VAE's fingerprint (code_prior.fingerprint of its
    weights), and one of the training and validation codes."""
    return {"model": model, "codes": fingerprint({"train": train, "val": val})}


def flag(name: str) -> str:
    """An option of train-prior as the caller spells it: --batch-size, or batch_size=."""
    return f"--{name.replace('_', '-')}" if on_command_line() else f"{name}="
