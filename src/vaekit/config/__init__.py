"""Configuration: every option as a typed dataclass (options.py), and reading presets,
YAML files and dotted overrides into a checked `Config` (load.py)."""

from .load import (
    apply_overrides,
    coerce,
    from_dict,
    load_config,
    preset_names,
    resolve_config_path,
    validate,
)
from .options import (
    SECTIONS,
    Config,
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    default_of,
    iter_fields,
    opt,
)

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
