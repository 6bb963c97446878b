"""Optimizers, learning-rate schedules and the weight average.

torch's optimizers without torch._dynamo: the same classes, started ~1 s sooner.

torch.optim wraps step, zero_grad, add_param_group, state_dict and load_state_dict so that
their first call imports torch._dynamo, the compiler, which vaekit never uses: ~1 s of a
run's start-up on a 2-core CPU, more than one of the default preset's epochs. The classes
here subclass torch's and call the wrapped functions themselves (inspect.unwrap finds them
through functools.wraps), so their updates, state dicts, hooks and fused kernels are
torch's own (tests/test_train.py compares them update by update).
"""

from __future__ import annotations

import copy
import inspect
import math
from typing import Any

import torch

from ..config import Config

_WRAPPED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")


def _without_dynamo(kind: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    step = inspect.unwrap(kind.step)

    def lean_step(self: torch.optim.Optimizer, closure: Any = None) -> Any:
        # what torch's wrapper does around step, minus its two dynamo graph breaks
        with torch.set_grad_enabled(bool(self.defaults.get("differentiable", False))):
            return step(self, closure)

    methods: dict[str, Any] = {name: inspect.unwrap(getattr(kind, name)) for name in _WRAPPED}
    methods.update(step=lean_step, __module__=__name__, __qualname__=kind.__name__)
    return type(kind.__name__, (kind,), methods)


# module-level names, so that the optimizers pickle like torch's
Adam = _without_dynamo(torch.optim.Adam)
AdamW = _without_dynamo(torch.optim.AdamW)
Adagrad = _without_dynamo(torch.optim.Adagrad)
SGD = _without_dynamo(torch.optim.SGD)
OPTIMIZERS: dict[str, Any] = {"adam": Adam, "adamw": AdamW, "adagrad": Adagrad, "sgd": SGD}


# torch checks this only at the first step (Adagrad's fused kernel is CPU-only), too late for
# the fallback below: found on an H200 by `vaekit reproduce` (Adagrad on CUDA)
NO_FUSED_KERNEL = {("adagrad", "cuda")}


def make_optimizer(
    model: torch.nn.Module, config: Config, device: torch.device
) -> torch.optim.Optimizer:
    o = config.optim
    params = [p for p in model.parameters() if p.requires_grad]
    kwargs: dict[str, Any] = {"lr": o.lr, "weight_decay": o.weight_decay}
    if o.fused and (o.name, device.type) not in NO_FUSED_KERNEL:
        try:  # fused kernels: one launch for all parameters (measured faster on CPU too)
            return OPTIMIZERS[o.name](params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            pass
    return OPTIMIZERS[o.name](params, **kwargs)


def grad_norm(params: list[torch.nn.Parameter], clip: float) -> torch.Tensor:
    """The total gradient norm, left on the device; clips the gradients to it when > 0."""
    if clip > 0:
        return torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
    grads = [p.grad for p in params if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads, foreach=True)  # no multiply-by-1 pass


def make_schedule(
    optimizer: torch.optim.Optimizer, config: Config, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:

    warm, kind = config.optim.warmup_steps, config.optim.schedule

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if kind == "cosine":
            progress = min(1.0, (step - warm) / max(1, total_steps - warm))
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class WeightAverage:
    """An exponential moving average of a model's weights (Polyak averaging).

    `model` is the averaged copy: what a run evaluates, draws its images from and saves.
    `decay` is per step, ramped up as min(decay, (1 + n) / (10 + n)) after n steps so that
    early on the average follows the weights instead of remembering their random start.
    It moves every EVERY steps, by decay ** EVERY: the same average within a few steps, at
    a quarter of the memory traffic (a full pass over the weights costs ~0.3 ms, 5-10% of
    a `fashion-mlp` step); `sync` folds in the steps since, before the average is used.
    A skipped (non-finite) update leaves the weights as they were, so averaging them is
    harmless.
    """

    EVERY = 4

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.steps = 0  # optimizer steps counted
        self.moved = 0  # of which folded into the average
        self._mine: list[torch.Tensor] = list(self.model.parameters())
        self._theirs: list[torch.Tensor] = list(model.parameters())
        self._buffers = (list(self.model.buffers()), list(model.buffers()))

    def update(self) -> None:
        """Count one optimizer step; every EVERY steps, move the average."""
        self.steps += 1
        if self.steps - self.moved >= self.EVERY:
            self.sync()

    @torch.no_grad()
    def sync(self) -> None:
        """Fold the steps counted since the last move into the average."""
        pending = self.steps - self.moved
        if not pending:
            return
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps)) ** pending
        torch._foreach_lerp_(self._mine, self._theirs, 1.0 - decay)  # as swa_utils does
        for mine, theirs in zip(*self._buffers, strict=True):
            mine.copy_(theirs)
        self.moved = self.steps

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "steps": self.steps, "moved": self.moved}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.steps, self.moved = int(state["steps"]), int(state["moved"])
