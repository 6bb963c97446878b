"""A module's constructor arguments, recorded once: what config.json writes to rebuild it.

`record_arguments(cls)` wraps a class's `__init__` so that each instance keeps the
arguments it was built with (defaults filled in, `**kwargs` flattened), as diffusers'
`@register_to_config` does; `arguments(module)` reads them back. `@vaekit.register`
(registry.py) records every registered class this way, so an encoder or decoder built in
Python saves and loads like one built from a config.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from torch import nn

from ..errors import ConfigError

ARGS = "_vaekit_args"  # the instance attribute that holds its constructor's arguments


def record_arguments(cls: type[nn.Module]) -> None:
    """Wrap cls.__init__ so that each instance keeps the arguments it was built with."""
    init = cls.__dict__.get("__init__")
    if init is not None and getattr(init, "_vaekit_wrapped", False):
        return  # this very class is registered again
    if init is None:  # no __init__ of its own: wrap the inherited one, for this class
        init = cls.__init__
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self: nn.Module, *args: Any, **kwargs: Any) -> None:  # noqa: N807
        init(self, *args, **kwargs)
        if type(self) is cls:  # a subclass records its own arguments (if registered)
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            arguments = dict(list(bound.arguments.items())[1:])  # without self
            for p in signature.parameters.values():
                if p.kind is p.VAR_KEYWORD:
                    arguments.update(arguments.pop(p.name, {}))
                elif p.kind is p.VAR_POSITIONAL:
                    if arguments.pop(p.name, ()):
                        raise ConfigError(
                            f"{cls.__name__}: arguments passed through *{p.name} cannot be "
                            "recorded in config.json; pass them by name"
                        )
            object.__setattr__(self, ARGS, arguments)

    __init__._vaekit_wrapped = True  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[method-assign]


def arguments(module: nn.Module) -> dict[str, Any]:
    """The arguments `module` was built with, as recorded ({} for a class not recorded)."""
    return dict(getattr(module, ARGS, {}))
