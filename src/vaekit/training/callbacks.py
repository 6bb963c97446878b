"""Callbacks: user code the Trainer calls after each step and each epoch.

A `Callback` overrides what it needs; a plain function of the epoch record is the short
form (a true value stops training). Callbacks see the trainer through `TrainerView`:
its config, where the run stands, the model trained and the one shown, and `stop()`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..config import Config
from ..errors import ConfigError
from ..models import VAE
from .state import TrainState


class TrainerView(Protocol):
    """What a callback may use of the Trainer."""

    config: Config
    state: TrainState  # epoch, step_in_epoch, global_step, skipped_updates
    model: VAE | None  # the model being trained (in train mode during an epoch)

    @property
    def shown(self) -> VAE:
        """The model evaluated and saved (the weight average with optim.ema)."""
        ...

    def stop(self) -> None:
        """End training after the current step."""
        ...


class Callback:
    """Hooks into `Trainer.fit`; override the ones you need. `trainer.stop()` ends training
    after the current step (mid-epoch, the state is saved there and a resume continues)."""

    def on_step_end(self, trainer: TrainerView) -> None:
        """After every step; `trainer.state` says where the run stands."""

    def on_epoch_end(self, trainer: TrainerView, record: dict[str, Any]) -> None:
        """After each epoch's evaluation and save, with its metrics.jsonl record."""


class _EpochFunction(Callback):
    """A plain function of the epoch record as a callback: returning True stops training."""

    def __init__(self, function: Callable[[dict[str, Any]], Any]) -> None:
        self.function = function

    def on_epoch_end(self, trainer: TrainerView, record: dict[str, Any]) -> None:
        if self.function(dict(record)):
            trainer.stop()


def as_callbacks(callbacks: Any) -> list[Callback]:
    """Callbacks as they are, functions of the epoch record as `_EpochFunction`s; anything
    else is one clear error, before training starts."""
    if not isinstance(callbacks, (list, tuple)):
        raise ConfigError(
            f"Trainer(callbacks=...) takes a list, not {type(callbacks).__name__}: "
            "callbacks=[my_function]"
        )
    out: list[Callback] = []
    for c in callbacks:
        if isinstance(c, Callback):
            out.append(c)
        elif callable(c) and not isinstance(c, type):
            out.append(_EpochFunction(c))
        else:
            what = f"the class {c.__name__}" if isinstance(c, type) else repr(c)[:60]
            raise ConfigError(
                f"callback {what} is neither a vaekit.Callback instance nor a function of "
                "the epoch record"
            )
    return out
