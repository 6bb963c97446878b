"""How an option is declared: `opt`, a dataclass field that carries its documentation in
`metadata["help"]`, an optional short CLI flag and its constraints (choices, or a range),
and the bounds that every numeric option's range stays within. The config's sections
(options.py, training_options.py) declare each of their fields with it.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

# bounds of the numeric options: large enough for any real run, small enough that no
# value can ask for absurd memory or overflow an integer downstream
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes at most 64 bits
MAX_WIDTH = 65_536  # units of one layer or latent
MAX_BATCH = 2**20
MAX_STEPS = 10**12
MAX_EXAMPLES = 10**12


def opt(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    choices: tuple[str, ...] = (),
    min: float | None = None,
    exclusive_min: bool = False,
    max: float | None = None,
    exclusive_max: bool = False,
) -> Any:
    """A config field with its documentation, an optional short CLI flag and its constraints:
    `choices`, or a range [min, max] (either end exclusive). Every number also has to be
    finite; every numeric option has a max, so no value can ask for absurd sizes."""
    meta = {
        "help": help,
        "flag": flag,
        "choices": choices,
        "min": min,
        "exclusive_min": exclusive_min,
        "max": max,
        "exclusive_max": exclusive_max,
    }
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)
