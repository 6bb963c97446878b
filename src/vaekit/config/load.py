"""Reading configurations: presets and YAML files, dotted overrides, and the checks that
turn a wrong key, type or value into one clear line (see options.py for the options)."""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .. import untrusted_files
from ..arguments import is_whole
from ..errors import ConfigError, first_line
from .options import SECTIONS, Config, iter_fields
from .training_options import check_objective_options


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def coerce(key: str, value: Any, typ: Any) -> Any:
    """Convert a YAML or command-line value to the field's type, or fail naming the key."""
    origin = typing.get_origin(typ)
    if origin is list:
        (item_type,) = typing.get_args(typ)
        if isinstance(value, str):
            text = value.strip().strip("[]")
            value = [] if not text else [v.strip() for v in text.split(",")]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        return [coerce(key, v, item_type) for v in value]
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    if typ is int:
        if is_whole(value):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
    if typ is float:
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
    if typ is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
    raise TypeError(f"unsupported config type {typ} for {key}")  # a bug, not a user error


def _check(key: str, value: Any, f: dataclasses.Field[Any]) -> None:
    meta = f.metadata
    values = value if isinstance(value, list) else [value]
    twice = [v for i, v in enumerate(values) if v in values[:i]]
    if meta.get("choices") and twice:  # a set of choices: crop,crop is a typo
        raise ConfigError(f"config key '{key}' lists {twice[0]!r} twice; name each once")
    for v in values:
        if meta.get("choices") and v not in meta["choices"]:
            raise ConfigError(
                f"config key '{key}' must be one of {', '.join(meta['choices'])}; got {v!r}"
            )
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"config key '{key}' must be a finite number; got {v!r}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            _check_range(key, v, meta)


def _n(bound: float) -> str:
    """A bound as written: whole numbers in full (2**63 - 1 is no 9.22337e+18)."""
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def _check_range(key: str, v: float, meta: Any) -> None:
    lo, hi = meta.get("min"), meta.get("max")
    too_low = lo is not None and (v < lo or (meta.get("exclusive_min") and v == lo))
    too_high = hi is not None and (v > hi or (meta.get("exclusive_max") and v == hi))
    if too_low or too_high:
        low = "" if lo is None else (">" if meta.get("exclusive_min") else ">=") + f" {_n(lo)}"
        high = "" if hi is None else ("<" if meta.get("exclusive_max") else "<=") + f" {_n(hi)}"
        bound = " and ".join(b for b in (low, high) if b)
        raise ConfigError(f"config key '{key}' must be {bound}; got {v!r}")


def validate(config: Config) -> Config:
    """Check every field's type and range, and the combinations that cannot work."""
    for key, f, typ in iter_fields():
        section, _, leaf = key.rpartition(".")
        obj = getattr(config, section) if section else config
        value = coerce(key, getattr(obj, leaf), typ)
        _check(key, value, f)
        setattr(obj, leaf, value)
    if not config.data.name.strip():
        raise ConfigError(
            "config key 'data.name' is empty; name a dataset, an .npz file or a folder"
        )
    if config.model.arch == "mlp" and not config.model.hidden:
        raise ConfigError("config key 'model.hidden' must list at least one layer size")
    if config.data.binarize == "dynamic" and config.model.likelihood not in ("bernoulli", "auto"):
        raise ConfigError(
            "config key 'data.binarize' is 'dynamic' but model.likelihood is "
            f"'{config.model.likelihood}'; dynamic binarization needs bernoulli"
        )
    if config.model.init and not config.model.init.startswith("diffusers:"):
        raise ConfigError(
            f"config key 'model.init' is {config.model.init[:80]!r}; write "
            "diffusers:PATH_OR_REPO (a diffusers AutoencoderKL), or '' for none"
        )
    if config.data.channels not in (0, 1, 3):
        raise ConfigError(
            f"config key 'data.channels' must be 0, 1 or 3; got {config.data.channels}"
        )
    if config.loss.adversarial_weight > 0 and config.loss.iw_samples > 1:
        raise ConfigError(
            "config key 'loss.adversarial_weight' needs loss.iw_samples 1: the IWAE bound "
            "has no single reconstruction for the discriminator to judge"
        )
    check_objective_options(config.loss)
    for name in config.train.tracker:
        if name not in ("wandb", "tensorboard", "mlflow"):
            raise ConfigError(
                f"config key 'train.tracker' lists unknown tracker {name!r}; "
                "choose from wandb, tensorboard, mlflow"
            )
    return config


def _merge(config: Config, data: dict[str, Any], source: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping of config sections, got {type(data).__name__}"
        )
    known = ["name", *SECTIONS]
    for key, value in data.items():
        if key == "name":
            config.name = coerce("name", value, str)
            continue
        if key not in SECTIONS:
            raise ConfigError(f"{source}: unknown config key '{key}'{_suggest(str(key), known)}")
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: config key '{key}' must be a mapping of options")
        section = getattr(config, key)
        hints = typing.get_type_hints(type(section))
        names = [f.name for f in dataclasses.fields(section)]
        for leaf, v in value.items():
            if leaf not in names:
                raise ConfigError(
                    f"{source}: unknown config key '{key}.{leaf}'{_suggest(str(leaf), names)}"
                )
            setattr(section, leaf, coerce(f"{key}.{leaf}", v, hints[leaf]))


def from_dict(data: dict[str, Any], source: str = "config") -> Config:
    config = Config()
    _merge(config, data, source)
    return validate(config)


def preset_names() -> list[str]:
    return sorted(
        p.name[:-5] for p in resources.files("vaekit.configs").iterdir() if p.name.endswith(".yaml")
    )


def resolve_config_path(name_or_path: str) -> Path:
    """A YAML path, or the name of a preset shipped with vaekit (`fashion-mlp`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if os.sep not in name_or_path and not name_or_path.endswith((".yaml", ".yml")):
        candidate = resources.files("vaekit.configs").joinpath(f"{name_or_path}.yaml")
        if candidate.is_file():
            return Path(str(candidate))
    raise ConfigError(
        f"config {name_or_path!r} is neither a YAML file nor a preset; presets: "
        f"{', '.join(preset_names())}"
    )


MAX_YAML_BYTES = 1_000_000  # a config is a few kilobytes; more is not a config


class _StrictLoader(yaml.SafeLoader):
    """yaml's SafeLoader, refusing a key given twice in one mapping (yaml would keep the
    last silently, so the first setting a user wrote would be dropped without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                line = key_node.start_mark.line + 1
                raise ConfigError(f"{self.name}: key {key!r} appears twice (line {line})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    """A config file's YAML, checked: a regular file of at most MAX_YAML_BYTES, UTF-8,
    well-formed, no key twice, nested at most MAX_DEPTH levels (untrusted_files)."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_YAML_BYTES:
            raise ConfigError(
                f"config {path} is not a regular file of at most {MAX_YAML_BYTES:,} bytes"
            )
        text = path.read_text(encoding="utf-8")
        loader = _StrictLoader(text)
        loader.name = str(path)
        try:
            return untrusted_files.check_depth(loader.get_single_data(), f"config {path}")
        finally:
            loader.dispose()
    except untrusted_files.TextLimitError as e:
        raise ConfigError(str(e)) from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"config {path} is not valid YAML: {first_line(e)}") from None
    except RecursionError:
        raise ConfigError(f"config {path} is nested too deeply to be a config") from None
    except OSError as e:
        raise ConfigError(f"config {path} cannot be read ({e.strerror or e})") from None


def load_config(name_or_path: str | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Load a preset or YAML file, apply dotted overrides {'train.epochs': 3}, validate."""
    config = Config()
    if name_or_path:
        path = resolve_config_path(name_or_path)
        _merge(config, read_yaml(path) or {}, str(path))
    apply_overrides(config, overrides or {})
    return validate(config)


def apply_overrides(config: Config, overrides: dict[str, Any]) -> None:
    fields = {key: (f, typ) for key, f, typ in iter_fields()}
    for key, value in overrides.items():
        if key not in fields:
            raise ConfigError(f"unknown config key '{key}'{_suggest(key, list(fields))}")
        section, _, leaf = key.rpartition(".")
        obj = getattr(config, section) if section else config
        setattr(obj, leaf, coerce(key, value, fields[key][1]))
