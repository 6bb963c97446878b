"""A model's and a module's constructor arguments, recorded once: what config.json writes
to rebuild them, what a run reports of them and what loading passes back.

A model (`Recorded`: the VAE, and the families built on it) takes its settings' names
from its constructor's signature once, when the class is defined, and keeps each setting
under its name. A registered encoder or decoder keeps the arguments it was built with
(`record_arguments`, applied by `@vaekit.register`: defaults filled in, `**kwargs`
flattened, as diffusers' `@register_to_config` does); `arguments(module)` reads them. A
builder of a config returns `Built`: the halves, the settings and the weights to start
from, which `Built.model(cls)` puts together.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, ClassVar, NamedTuple, TypeVar

import torch
from torch import nn

from ..errors import ConfigError

M = TypeVar("M", bound=nn.Module)
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


class Recorded:
    """A model whose settings are its constructor's arguments, recorded once: their names
    come from the signature of the class's `__init__` when the class is defined (a
    `**kwargs` there passes the base class's settings on), and the constructor keeps each
    as the attribute of that name, as it resolved it (a default filled in, a shape as a
    tuple). `settings()` reads them, so config.json's record (`Pretrained.architecture`),
    the settings a run reports (described.py) and the rebuild on load (`from_architecture`)
    come from the one signature, and the Gaussian VAE's forward pass pays nothing for it.

    `module_settings` are the arguments that are modules (recorded by registered name);
    `required_settings` the ones a record must hold (the others default as the
    constructor's signature says, for records written before a setting existed)."""

    recorded_settings: ClassVar[tuple[str, ...]] = ()
    module_settings: ClassVar[tuple[str, ...]] = ()
    required_settings: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return  # the base class's settings
        names: list[str] = []
        for p in list(inspect.signature(init).parameters.values())[1:]:  # without self
            if p.kind is p.VAR_KEYWORD:  # passed on to the base class's constructor
                names += getattr(super(cls, cls), "recorded_settings", ())
            elif p.kind is not p.VAR_POSITIONAL:
                names.append(p.name)
        cls.recorded_settings = tuple(dict.fromkeys(names))

    def settings(self) -> dict[str, Any]:
        """Each of the constructor's arguments as the model holds it now."""
        missing = [n for n in self.recorded_settings if not hasattr(self, n)]
        if missing:  # a model class that breaks the rule above: a bug, not a user's error
            raise TypeError(
                f"{type(self).__name__} keeps no attribute for its constructor's argument "
                f"{missing[0]!r}; a Recorded model keeps each argument under its name"
            )
        return {name: getattr(self, name) for name in self.recorded_settings}


def as_json(value: Any) -> Any:
    """A setting as config.json holds it: tuples as lists, an object with a `record()`
    method (a Normalization) as its record, anything else as it is."""
    if isinstance(value, (tuple, list)):
        return [as_json(v) for v in value]
    record = getattr(value, "record", None)
    return record() if callable(record) else value


class Built(NamedTuple):
    """What a builder makes of a config (models/builtin.py, diffusers/init.py): the two
    halves, the model's other settings (its constructor's keyword arguments) and the
    weights to start from (None: as initialised)."""

    encoder: nn.Module
    decoder: nn.Module
    settings: dict[str, Any]
    weights: dict[str, torch.Tensor] | None = None

    def model(self, cls: type[M]) -> M:
        """`cls` built of these halves and settings, started from the weights exactly where
        there are some (model.init, a diffusers AutoencoderKL)."""
        model = cls(encoder=self.encoder, decoder=self.decoder, **self.settings)
        if self.weights is not None:
            model.load_state_dict(self.weights, strict=True)
        return model
