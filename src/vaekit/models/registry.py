"""Architectures by name: how config.json names an encoder or decoder without code.

A saved model records each half as a registered name and the JSON arguments its class
was built with: `{"name": "conv-encoder", "args": {"channels": [32, 64], ...}}`. Loading
looks the name up among the classes registered in the running process and calls it with
those arguments; it never imports a module, follows an import path or unpickles an
object named by a file. A name nobody registered is refused with one line that says
which name is missing and how to register it.

    @vaekit.register("my-encoder")
    class MyEncoder(nn.Module):
        def __init__(self, channels: int = 32) -> None: ...

`register` remembers the arguments each instance was constructed with, so a model built
in Python saves and loads like one built from a config. An argument may be a registered
module (or a list of them): it is recorded by its name and arguments,
`{"vaekit_module": "my-block", "args": {...}}`, and built the same way on load, never
unpickled. A half whose class is not registered saves too, as `{"class": "pkg.Name"}`
beside its weights; loading it needs the module handed over
(`VAE.from_pretrained(path, encoder=...)`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from ..errors import CheckpointError, ConfigError, first_line
from . import record

M = TypeVar("M", bound=type[nn.Module])
NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_REGISTRY: dict[str, type[nn.Module]] = {}
MODULE = "vaekit_module"  # the key of a module argument's record: {MODULE: name, "args": ...}
MAX_DEPTH = 16  # module arguments nested deeper than this are refused on load


def register(name: str) -> Callable[[M], M]:
    """Class decorator: make an nn.Module class loadable by `name` from config.json.

    Names are lowercase letters, digits, '-', '_' and '.'. Registering a second class
    under a taken name is an error; registering the same class again (a module reloaded,
    a notebook cell run twice) replaces it.
    """
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(
            f"architecture name {name!r} is not valid: use 1-64 lowercase letters, digits, "
            "'-', '_' or '.', starting with a letter or digit"
        )

    def decorate(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(f"@register({name!r}) decorates nn.Module classes, not {cls!r}")
        taken = _REGISTRY.get(name)
        if taken is not None and _qualified(taken) != _qualified(cls):
            raise ConfigError(
                f"architecture name {name!r} is already registered to {_qualified(taken)}; "
                "choose another name"
            )
        record.record_arguments(cls)
        cls.vaekit_name = name  # type: ignore[attr-defined]
        _REGISTRY[name] = cls
        return cls

    return decorate


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def registered() -> list[str]:
    """The registered architecture names, sorted."""
    return sorted(_REGISTRY)


def registered_name(module: nn.Module) -> str | None:
    """The name `module`'s class is registered under in this process, or None."""
    name = type(module).__dict__.get("vaekit_name")
    current = _REGISTRY.get(name) if name is not None else None
    # a class defined again since (a module reloaded, a notebook cell re-run) is the same one
    if current is None or _qualified(current) != _qualified(type(module)):
        return None
    return name


def spec(module: nn.Module, role: str) -> dict[str, Any]:
    """How config.json records a half: {"name", "args"} for a registered class (its module
    arguments recorded the same way, by name), or {"class"} for an unregistered one, whose
    weights save but which loading must be handed (`VAE.from_pretrained(path, encoder=...)`)."""
    name = registered_name(module)
    if name is None:
        return {"class": _qualified(type(module))}
    owner = f"the {role} {type(module).__name__}"
    args = {k: _argument(v, owner, k) for k, v in record.arguments(module).items()}
    try:
        text = json.dumps(args, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"the {role} {type(module).__name__} was built with arguments that are not "
            f"plain JSON ({e}); config.json records an architecture as its registered name "
            "and JSON arguments: pass numbers, strings, lists, dicts and registered modules"
        ) from None
    return {"name": name, "args": json.loads(text)}


def _argument(value: Any, owner: str, key: str, depth: int = 0) -> Any:
    """An argument as JSON can hold it: a registered module as {MODULE: name, "args": ...},
    lists and tuples of them element by element; anything else as it is (checked by
    json.dumps). A module that is not registered is one clear error."""
    if isinstance(value, nn.Module):
        name = registered_name(value)
        if name is None:
            raise ConfigError(
                f"{owner} was built with the module {type(value).__name__} as its argument "
                f"{key!r}, and {type(value).__name__} is not registered, so config.json "
                "cannot name it: register its class (a subclass of it) with "
                "@vaekit.register('a-name')"
            )
        inner = f"the module {type(value).__name__}"
        args = {k: _argument(v, inner, k, depth + 1) for k, v in record.arguments(value).items()}
        return {MODULE: name, "args": args}
    if isinstance(value, (list, tuple)):
        return [_argument(v, owner, key, depth) for v in value]
    return value


def _rebuild(value: Any, source: str, role: str, depth: int = 0) -> Any:
    """An argument from config.json, its module records built through the registry."""
    if depth > MAX_DEPTH:
        raise CheckpointError(f"{source}: the {role}'s modules nest deeper than {MAX_DEPTH}")
    if isinstance(value, list):
        return [_rebuild(v, source, role, depth + 1) for v in value]
    if isinstance(value, dict) and set(value) == {MODULE, "args"}:
        entry = {"name": value[MODULE], "args": value["args"]}
        return build(entry, role, source, depth + 1)
    return value


def build(entry: Any, role: str, source: str, depth: int = 0) -> nn.Module:
    """The module an entry of config.json names: its registered class called with its args
    (module arguments built the same way first).

    Only registered classes are ever called: a name from a file never reaches an import.
    """
    if isinstance(entry, dict) and isinstance(entry.get("class"), str) and "name" not in entry:
        raise CheckpointError(
            f"{source}: the {role} is {entry['class'][:120]}, a class that was not "
            "registered, so config.json holds its weights but not how to build it: pass it "
            f"built as it was trained, VAE.from_pretrained(path, {role}=...) or "
            f"vaekit.load(path, {role}=...)"
        )
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("name"), str)
        or not isinstance(entry.get("args", {}), dict)
    ):
        raise CheckpointError(
            f'{source}: the {role} must be recorded as {{"name": ..., "args": {{...}}}}; '
            f"got {str(entry)[:80]}"
        )
    name, args = entry["name"], entry.get("args", {})
    cls = _REGISTRY.get(name)
    if cls is None:
        shown = name if NAME.fullmatch(name) else repr(name[:64])
        raise CheckpointError(
            f"{source}: the {role} architecture {shown!r} is not registered in this process; "
            f"import the code that defines it (its class carries "
            f"@vaekit.register({shown!r})) before loading, or on the command line pass "
            "--import MODULE (registered: " + ", ".join(registered()) + ")"
        )
    args = {k: _rebuild(v, source, role, depth) for k, v in args.items()}
    try:
        return cls(**args)
    except Exception as e:  # whatever the recorded arguments make the constructor raise
        raise CheckpointError(
            f"{source}: the {role} {name!r} cannot be built from its recorded arguments "
            f"({first_line(e)})"
        ) from None
