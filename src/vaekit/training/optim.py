"""torch's optimizers without torch._dynamo: the same classes, started ~1 s sooner.

torch.optim wraps step, zero_grad, add_param_group, state_dict and load_state_dict so that
their first call imports torch._dynamo, the compiler, which vaekit never uses: ~1 s of a
run's start-up on a 2-core CPU, more than one of the default preset's epochs. The classes
here subclass torch's and call the wrapped functions themselves (inspect.unwrap finds them
through functools.wraps), so their updates, state dicts, hooks and fused kernels are
torch's own (tests/test_train.py compares them update by update).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

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
