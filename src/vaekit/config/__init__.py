"""Configuration: every option as a typed dataclass (options.py: `Config` with the data
and model sections; training_options.py: the loss, optim and train sections; fields.py:
`opt`, how a field is declared), and reading presets, YAML files and dotted overrides into
a checked `Config` (load.py)."""

from .fields import opt
from .load import (
    apply_overrides,
    coerce,
    from_dict,
    load_config,
    preset_names,
    resolve_config_path,
    validate,
)
from .options import SECTIONS, Config, DataConfig, ModelConfig, default_of, iter_fields
from .training_options import LossConfig, OptimConfig, TrainConfig

__all__ = [
    "SECTIONS",
    "Config",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "apply_overrides",
    "coerce",
    "default_of",
    "from_dict",
    "iter_fields",
    "load_config",
    "opt",
    "preset_names",
    "resolve_config_path",
    "validate",
]
