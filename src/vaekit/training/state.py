"""The resumable training state: random number generators, and which config changes a
resume allows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..errors import ConfigError


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    state: dict[str, Any] = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(generator: torch.Generator, state: dict[str, Any]) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


RESUME_FREE = (
    "train.epochs",
    "train.out",
    "train.progress",
    "train.tracker",
    "train.checkpoint_every",
    "train.eval_every",
    "train.run_name",
    "train.log_images_every",
    "train.max_skipped",
    "train.threads",
    "model.init_output_bias",  # acts before the first step only; a resumed run loads weights
)


def check_resume_config(saved: dict[str, Any], config: Config, run_dir: Path) -> None:
    now = config.to_dict()
    # an option added after the run was saved is missing there: it had the default's effect
    defaults = Config().to_dict()
    diffs = []
    for section, values in now.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            dotted = f"{section}.{key}"
            before = saved.get(section, {}).get(key, defaults[section][key])
            if dotted not in RESUME_FREE and before != value:
                diffs.append(f"{dotted}: {before!r} -> {value!r}")
    if diffs:
        raise ConfigError(
            f"--resume: the config differs from the run in {run_dir} ("
            f"{'; '.join(diffs[:6])}); resume with the run's own config.yaml"
        )
