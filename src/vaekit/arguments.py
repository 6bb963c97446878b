"""The Python API's arguments, checked against their annotations when a call fails.

A public function's signature says what it takes (`n: int`, `x: torch.Tensor |
np.ndarray`, `device: str | torch.device`); `checked` makes that a promise: when a call
ends in an exception that is not a VaekitError (a TypeError, AttributeError, RuntimeError
from deep inside), its arguments are checked against the annotations, and an argument of a
type the annotation does not allow, a float that is NaN or infinite, or a seed or count
outside its range is reported instead, in one line naming the function and the argument,
as an `ArgumentError` (a VaekitError, and a TypeError as Python's own convention has it).
Only then: the functions' own checks, whose messages say more, keep the first word, and a
call that works pays nothing. It reads the signature, so a parameter added tomorrow is
checked the day it is added; an exception with no wrong argument behind it is a bug and
propagates unchanged.
"""

from __future__ import annotations

import collections.abc
import functools
import inspect
import math
import numbers
import os
import types
import typing
from collections.abc import Callable
from typing import Any, TypeGuard, TypeVar, cast

from .errors import ConfigError, VaekitError

F = TypeVar("F", bound=Callable[..., Any])
# ranges of parameters by name, wherever they appear: seeds feed numpy and torch
# generators (0 to 2**63 - 1), counts and sizes are whole numbers a machine can hold
RANGES = {
    "seed": (0, 2**63 - 1),
    "split_seed": (0, 2**63 - 1),
    "epoch": (0, 2**62),
    "limit_train": (0, 2**62),
    "limit_test": (0, 2**62),
    "batch_size": (1, 2**62),
    "n": (0, 2**62),
}


class ArgumentError(ConfigError, TypeError):
    """An argument of the wrong type or out of range: one line, naming it."""


def describe(value: Any) -> str:
    """A value in a few words for a message (a tensor's repr runs to many lines)."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"a {type(value).__name__} of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 60 and "\n" not in text else f"a {type(value).__name__}"


def is_whole(
    value: object, low: int | None = None, high: int | None = None, *, numpy: bool = False
) -> TypeGuard[int]:
    """Whether `value` is a whole number from `low` to `high` (None: no bound): an int,
    never a bool; with `numpy`, also NumPy's integers (an argument, a label; not a setting
    that is written to JSON)."""
    kind = numbers.Integral if numpy else int
    if isinstance(value, bool) or not isinstance(value, kind):
        return False
    number = int(cast(int, value))
    return (low is None or number >= low) and (high is None or number <= high)


def _resolve(annotation: Any, namespace: dict[str, Any]) -> Any:
    """The annotation as an object (None when it names something this module cannot see:
    then that argument goes unchecked)."""
    if not isinstance(annotation, str):
        return annotation
    try:
        return eval(annotation, namespace)  # noqa: S307 (our own annotations, not input)
    except Exception:  # a name imported only for type checking
        return None


def allows(annotation: Any, value: Any) -> bool:
    """Whether `value` is of a type `annotation` allows (unknown forms allow anything)."""
    if annotation is None or annotation is Any or annotation is object:
        return True
    if isinstance(annotation, TypeVar):
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(allows(a, value) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if origin is not None:  # list[str], Sequence[int], Callable[...], dict[...]
        if origin is collections.abc.Callable:
            return callable(value)
        if not (isinstance(origin, type) and isinstance(value, origin)):
            return False
        items = typing.get_args(annotation)
        if origin in (list, tuple, collections.abc.Sequence) and len(items) == 1:
            if isinstance(value, str):  # a string is a sequence of strings, never of numbers
                return items[0] is str
            return all(allows(items[0], v) for v in list(typing.cast(Any, value))[:100])
        return True
    if annotation is bool:
        return isinstance(value, bool) or type(value).__name__ == "bool_"
    if annotation is int:
        return is_whole(value, numpy=True)
    if annotation is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if isinstance(annotation, type):
        if annotation.__name__ == "Tensor" and annotation.__module__.startswith("torch"):
            return _array_like(value)
        if annotation.__module__ == "pathlib" or annotation is os.PathLike:
            return isinstance(value, os.PathLike)
        return isinstance(value, annotation)
    return True


def _array_like(value: Any) -> bool:
    """What a tensor argument may be given as: a tensor or a NumPy array (not a number,
    None, text, a list or another object)."""
    return type(value).__name__ in ("Tensor", "Parameter", "ndarray") or hasattr(
        value, "__array_interface__"
    )


def check(where: str, name: str, annotation: Any, value: Any) -> None:
    """One argument against its annotation and its range; ArgumentError otherwise."""
    if not allows(annotation, value):
        wanted = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
        raise ArgumentError(f"{where}: {name} must be {wanted}; got {describe(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ArgumentError(f"{where}: {name} must be a finite number; got {value!r}")
    low_high = RANGES.get(name)
    if low_high and isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = low_high
        if not low <= value <= high:
            raise ArgumentError(f"{where}: {name} must be from {low} to {high}; got {value!r}")


def checked(function: F) -> F:
    """`function` with its arguments checked against its annotations on every call."""
    signature = inspect.signature(function)
    namespace = {**vars(typing), **inspect.unwrap(function).__globals__}
    hints = {
        p.name: _resolve(p.annotation, namespace)
        for p in signature.parameters.values()
        if p.annotation is not p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    where = function.__qualname__.replace(".__init__", "")

    flags = {n for n, h in hints.items() if h is bool}
    required = {n for n, h in hints.items() if _vaekit_class(h) and not allows(h, None)}

    def _bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            return dict(signature.bind(*args, **kwargs).arguments)
        except TypeError as e:  # a missing or unknown argument: Python's own words
            raise ArgumentError(f"{where}: {e}") from None

    def check_all(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        for name, value in _bind(args, kwargs).items():
            if name in hints:
                check(where, name, hints[name], value)

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # before the call, only what no function words better: None where one of vaekit's
        # objects must be (vaekit.train(None) would train the default configuration), and
        # flags that are not bools (`if flag:` on a tensor raises deep inside)
        if flags or required:
            bound = _bind(args, kwargs)
            for name, value in bound.items():
                if (name in flags and not isinstance(value, bool)) or (
                    name in required and value is None
                ):
                    check(where, name, hints[name], value)
        try:
            return function(*args, **kwargs)
        except (VaekitError, KeyboardInterrupt) as e:
            if isinstance(e, VaekitError) and "\n" in str(e).strip():
                check_all(args, kwargs)  # a message that printed a tensor, say
                raise _one_line(e) from None
            raise
        except Exception:  # an argument of the wrong type says so; anything else is a bug
            check_all(args, kwargs)
            raise

    return typing.cast(F, wrapper)


def _vaekit_class(annotation: Any) -> bool:
    """Whether `annotation` is one of vaekit's classes (Config, VAE, DataConfig, ...)."""
    return isinstance(annotation, type) and annotation.__module__.startswith("vaekit.")


def _one_line(error: VaekitError) -> VaekitError:
    """`error` with its message on one line (the same class, where it takes just that)."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    try:
        return type(error)(text[:400])
    except TypeError:  # a class with more arguments (TrainingInterrupted)
        return error


def public_methods(cls: type, skip: collections.abc.Container[str] = ()) -> list[str]:
    """The public methods vaekit defines on `cls` (not torch's), less `skip`; __init__."""
    names = ["__init__"]
    for name in dir(cls):
        raw = inspect.getattr_static(cls, name)
        function = getattr(raw, "__func__", raw)
        module = getattr(function, "__module__", "") or ""
        if not name.startswith("_") and name not in skip and callable(function):
            if module.startswith("vaekit."):
                names.append(name)
    return names


def check_methods(cls: type, names: collections.abc.Iterable[str]) -> None:
    """Wrap the methods `names` of `cls` (plain, class or static) with `checked`, in place."""
    for name in names:
        raw = inspect.getattr_static(cls, name)
        if isinstance(raw, classmethod):
            setattr(cls, name, classmethod(checked(raw.__func__)))
        elif isinstance(raw, staticmethod):
            setattr(cls, name, staticmethod(checked(raw.__func__)))
        elif callable(raw):
            setattr(cls, name, checked(raw))
