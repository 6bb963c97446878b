"""Callbacks: user code the Trainer calls when training starts, after each step, after each
validation, after each epoch and when training ends.

A `Callback` overrides the hooks it needs; a plain function of the epoch record is the
short form. Every hook returns None (go on) or a bool: True stops training after the
current step, as `trainer.stop()` does; anything else (a numpy array, a tensor, a
number) is one clear error naming the callback and the hook. Callbacks see the trainer
through `TrainerView`: its config, where the run stands, the model trained and the one
shown, and `stop()`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

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
    """Hooks into `Trainer.fit`; override the ones you need. Return None or False to go on,
    True to stop (or call `trainer.stop()`): training ends after the current step
    (mid-epoch, the state is saved there and a resume continues)."""

    def on_train_start(self, trainer: TrainerView) -> bool | None:
        """Once the run is set up (data, model, a resumed state), before the first step."""
        return None

    def on_step_end(self, trainer: TrainerView) -> bool | None:
        """After every step; `trainer.state` says where the run stands."""
        return None

    def on_validation_end(self, trainer: TrainerView, record: dict[str, Any]) -> bool | None:
        """After each epoch's validation (runs with a validation set), before the save, with
        the epoch's record so far (its val_* numbers included)."""
        return None

    def on_epoch_end(self, trainer: TrainerView, record: dict[str, Any]) -> bool | None:
        """After each epoch's evaluation and save, with its metrics.jsonl record."""
        return None

    def on_train_end(self, trainer: TrainerView) -> bool | None:
        """Once the last epoch (or a stop) is done and saved; not after an interruption or
        an error. Its return value stops nothing, but is checked like every hook's."""
        return None


class _EpochFunction(Callback):
    """A plain function of the epoch record as a callback: returning True stops training."""

    def __init__(self, function: Callable[[dict[str, Any]], Any]) -> None:
        self.function = function

    def on_epoch_end(self, trainer: TrainerView, record: dict[str, Any]) -> bool | None:
        return self.function(dict(record))  # checked by `call`


def call(callbacks: list[Callback], hook: str, trainer: TrainerView, *args: Any) -> bool:
    """Run `hook` of every callback; whether one asked to stop. A return value that is not
    a bool or None is one clear error naming the callback and the hook."""
    stop = False
    for callback in callbacks:
        answer = getattr(callback, hook)(trainer, *args)
        if isinstance(answer, np.bool_):  # `return loss > limit` on numpy numbers: one bool
            answer = bool(answer)
        if answer is None or answer is False:
            continue
        if answer is True:
            stop = True
            continue
        if isinstance(callback, _EpochFunction):
            name = f"the callback function {getattr(callback.function, '__name__', '?')}"
        else:
            name = f"the callback {type(callback).__name__}.{hook}"
        raise ConfigError(
            f"{name} returned {type(answer).__name__} {str(answer)[:40]!r}; a callback returns "
            "True (stop training), False or None: return bool(...) of your condition"
        )
    return stop


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
