"""The resumable training state: where a run stands (TrainState), what state.pt holds
(`snapshot`), the random number generators, and which config changes a resume allows."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..arguments import is_whole
from ..config import Config
from ..errors import CheckpointError, ConfigError, TrainingDiverged, first_line
from ..io.checkpoint import STATE_FILE, check_state_dict, non_finite
from ..models import VAE
from ..models.described import DERIVED
from ..wording import option

if TYPE_CHECKING:
    from .step import Step

FORMAT = 1  # state.pt's format; vaekit 0.1 wrote 1 too (it lacked "architecture")


@dataclass
class TrainState:
    """Where a run stands; saved in state.pt with the weights and the optimizer."""

    epoch: int = 0  # epochs finished
    step_in_epoch: int = 0  # steps done in the current epoch (a resume continues there)
    global_step: int = 0  # steps taken, applied or skipped
    skipped_updates: int = 0  # updates never applied (non-finite loss or gradient)
    consecutive_skips: int = 0  # the current run of skipped updates (not saved)
    # the best validation -ELBO so far and its epoch (0: none yet), for train.keep best and
    # train.patience; the epochs without improvement are epoch - best_epoch. state.pt
    # files written before validation sets existed have neither: a resume starts afresh
    best_nelbo: float | None = None
    best_epoch: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "skipped_updates": self.skipped_updates,
            "best_val_nelbo": self.best_nelbo,
            "best_epoch": self.best_epoch,
        }

    @classmethod
    def from_dict(cls, saved: dict[str, Any], source: str) -> TrainState:
        """The position a state.pt records: whole numbers >= 0, or a CheckpointError."""
        values = [_whole(saved, key, source) for key in COUNTERS]
        state = cls(*values)
        if "best_epoch" in saved:
            state.best_epoch = _whole(saved, "best_epoch", source)
            best = saved.get("best_val_nelbo")
            if isinstance(best, torch.Tensor) and best.numel() == 1:
                best = best.item()
            ok = best is None or (isinstance(best, float) and math.isfinite(best))
            if (
                not ok
                or state.best_epoch > state.epoch
                or (best is None) != (state.best_epoch == 0)
            ):
                raise CheckpointError(
                    f"checkpoint {source} is incomplete or corrupt (best validation -ELBO "
                    f"{best!r} at epoch {state.best_epoch} of {state.epoch})"
                )
            state.best_nelbo = best
        return state

    def improved(self, nelbo: float) -> bool:
        """Record a validation -ELBO of the epoch just finished; True when it is the best
        (a non-finite one never is)."""
        if not math.isfinite(nelbo) or (self.best_nelbo is not None and nelbo >= self.best_nelbo):
            return False
        self.best_nelbo, self.best_epoch = nelbo, self.epoch
        return True


COUNTERS = ("epoch", "step_in_epoch", "global_step", "skipped_updates")


def _whole(saved: dict[str, Any], key: str, source: str) -> int:
    value = saved.get(key)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if not is_whole(value, 0):
        raise CheckpointError(
            f"checkpoint {source} is incomplete or corrupt ({key!r} is {value!r}, "
            "not a whole number >= 0)"
        )
    return value


def snapshot(
    state: TrainState,
    config: Config,
    model: torch.nn.Module,
    parts: dict[str, Any],
    generator: torch.Generator,
    architecture: dict[str, Any],
    data: str,
    validation: Any = None,
) -> dict[str, Any]:
    """What state.pt holds: the run's position (with the best validation epoch), config,
    architecture and data fingerprint, the validation split's record (Dataset.info), the
    weights, the optimizer's parts (`Step.state_dict`) and every generator."""
    return {
        "format": FORMAT,
        "config": config.to_dict(),
        "architecture": architecture,
        "data": data,
        "validation": validation,
        "model": model.state_dict(),
        **parts,
        "rng": rng_state(generator),
        **state.to_dict(),
    }


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    state: dict[str, Any] = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(generator: torch.Generator, state: dict[str, Any]) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


RESUME_FREE = (
    "train.epochs",
    "train.out",
    "train.progress",
    "train.tracker",
    "train.checkpoint_every",
    "train.eval_every",
    "train.run_name",
    "train.log_images_every",
    "train.max_skipped",
    "train.threads",
    "train.patience",  # how long to wait for a better validation -ELBO: may grow on resume
    "model.init_output_bias",  # acts before the first step only; a resumed run loads weights
    "data.stream",  # where the rows are read from, never which rows or in what order
)


# options whose effect before they existed differs from their default: a run saved
# without them resumes as it was trained (0.1 runs held out no validation set)
# options added since a run may have been saved, and the effect they had then: no
# validation split, and the GroupNorm decoder (model.decoder_norm: auto is now the channel
# norm; the weights have the same names and shapes, so only this keeps them exact)
LEGACY = {"data.val_fraction": 0.0, "model.decoder_norm": "group"}


def _missing(saved: dict[str, Any], dotted: str) -> bool:
    section, key = dotted.split(".")
    return isinstance(saved.get(section), dict) and key not in saved[section]


def legacy_config(saved: dict[str, Any] | None, config: Config) -> Config:
    """The config a resume continues: an option of LEGACY that the saved run lacks takes
    its old effect when the config leaves it at its default (the run's own config.yaml
    does, as it lacks the option); a value set on purpose is compared by
    `check_resume_config` like any other."""
    saved_config = saved.get("config") if isinstance(saved, dict) else None
    if not isinstance(saved_config, dict):
        return config
    config = copy.deepcopy(config)
    defaults = Config().to_dict()
    for dotted, old in LEGACY.items():
        section, key = dotted.split(".")
        if (
            _missing(saved_config, dotted)
            and getattr(getattr(config, section), key) == (defaults[section][key])
        ):
            setattr(getattr(config, section), key, old)
    return config


def check_resume_config(
    saved: dict[str, Any], config: Config, run_dir: Path, exempt: tuple[str, ...] = ()
) -> None:
    """The resumed config against the saved one; `exempt`: dotted keys compared elsewhere
    (the model's own settings, by its architecture record)."""
    now = config.to_dict()
    # an option added after the run was saved is missing there: it had the default's
    # effect, or the old one LEGACY names
    defaults = Config().to_dict()
    diffs = []
    for section, values in now.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            dotted = f"{section}.{key}"
            default = LEGACY.get(dotted, defaults[section][key])
            before = saved.get(section, {}).get(key, default)
            if dotted not in RESUME_FREE and dotted not in exempt and before != value:
                diffs.append(f"{dotted}: {before!r} -> {value!r}")
    if diffs:
        raise ConfigError(
            f"{option('resume')}: the config differs from the run in {run_dir} ("
            f"{'; '.join(diffs[:6])}); resume with the run's own config.yaml"
        )


def check_resume_architecture(
    saved: dict[str, Any] | None, now: dict[str, Any], run_dir: Path
) -> None:
    """A resumed run continues the model it saved: the same registered halves and settings."""
    if saved is None:  # vaekit 0.1 recorded the architecture in the config alone
        return
    diffs = [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in now if saved.get(k) != now.get(k)]
    if diffs:
        raise ConfigError(
            f"{option('resume')}: the model differs from the one the run in {run_dir} saved "
            f"({'; '.join(d[:120] for d in diffs[:4])}); resume with the same architecture"
        )


def restore(
    saved: dict[str, Any],
    config: Config,
    run_dir: Path,
    model: VAE,
    step: Step,
    generator: torch.Generator,
    data: str,
    steps_per_epoch: int,
) -> TrainState:
    """Load a snapshot into the model, the step's optimizer parts (`Step.load_state_dict`)
    and the generators, after checking it belongs to this config, architecture and data
    (`data`: Dataset.fingerprint); the run's position."""
    path = run_dir / STATE_FILE
    for key in ("config", "model", "optimizer", "schedule", "rng"):
        if not isinstance(saved.get(key), dict):
            raise CheckpointError(
                f"checkpoint {path} is incomplete or corrupt ({key!r} is missing or not a mapping)"
            )
    state = TrainState.from_dict(saved, str(path))
    if state.step_in_epoch > steps_per_epoch:  # equal: saved after an epoch's last step
        raise CheckpointError(
            f"checkpoint {path} is at step {state.step_in_epoch} of an epoch of "
            f"{steps_per_epoch} steps; it belongs to another run or data"
        )
    architecture = saved.get("architecture")
    if architecture is not None and not isinstance(architecture, dict):
        raise CheckpointError(f"checkpoint {path} is incomplete or corrupt ('architecture')")
    # the model's settings are compared through its architecture record (below): a run saved
    # before config.yaml recorded them from the model resumes too
    exempt = () if architecture is None else tuple(f"model.{k}" for k in DERIVED)
    check_resume_config(saved["config"], config, run_dir, exempt)
    check_resume_architecture(architecture, model.architecture(), run_dir)
    if saved.get("data") not in (None, data):  # vaekit 0.1 recorded no fingerprint
        raise ConfigError(
            f"{option('resume')}: the training data differ from the data the run in {run_dir} was "
            f"trained on (fingerprint {saved['data']!r}, now {data!r}); resume with the same "
            "data, or start a new run"
        )
    check_state_dict(model, saved["model"], str(path))
    model.load_state_dict(saved["model"])
    try:
        step.load_state_dict(saved)
        set_rng_state(generator, saved["rng"])
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as e:
        raise CheckpointError(
            f"checkpoint {path} does not fit this run's optimizer or generators ({first_line(e)})"
        ) from None
    if state.epoch >= config.train.epochs:
        raise ConfigError(
            f"{option('resume')}: the run in {run_dir} already finished {state.epoch} epochs; "
            f"raise {option('epochs')} to train further"
        )
    return state


def check_finite(models: tuple[torch.nn.Module, ...], step: int, run_dir: Path) -> None:
    """Before a save: finite weights, or TrainingDiverged (the guard skips non-finite
    updates, but finite steps can still overflow the weights, with a huge learning rate)."""
    tensors: dict[str, torch.Tensor] = {}
    for model in models:
        tensors.update(model.state_dict())
    bad = non_finite(tensors)
    if bad:
        raise TrainingDiverged(
            f"training diverged: the weights are no longer finite ({', '.join(bad[:3])}) "
            f"after step {step}; the last good checkpoint in {run_dir} is kept. Lower "
            f"{option('lr')} or set optim.grad_clip"
        )
