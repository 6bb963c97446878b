"""The run directory: its name, the files a run writes, and what --resume and --overwrite
may do to a directory that already holds something."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ..config import Config
from ..errors import ConfigError
from ..io import checkpoint, fileio
from ..models import VAE

RUN_FILES = (
    "config.yaml",
    checkpoint.CONFIG_FILE,
    checkpoint.MODEL_FILE,
    checkpoint.STATE_FILE,
    "metrics.jsonl",
    "samples.png",
    "reconstructions.png",
    "report.html",
    # pictures of `vaekit report` and the picture commands (figures.FILES)
    "interpolation.png",
    "interpolation_linear.png",
    "interpolation_slerp.png",
    "manifold.png",
    "latents.png",
    "curves.png",
    "kl.png",
)


def prepare_run_dir(config: Config, resume: bool, overwrite: bool) -> Path:
    out = config.train.out or f"runs/{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file; choose a directory")
    holds_run = run_dir.is_dir() and any((run_dir / f).exists() for f in RUN_FILES)
    if run_dir.is_dir() and (resume or overwrite):  # left by a killed run; never loaded
        for stale in run_dir.glob(f"{fileio.TMP_PREFIX}*"):
            stale.unlink(missing_ok=True)
    if resume:
        if not (run_dir / checkpoint.STATE_FILE).is_file():
            raise ConfigError(
                f"--resume: {run_dir} holds no resume state "
                f"({checkpoint.STATE_FILE}); start it without --resume"
            )
    elif holds_run:
        if not overwrite:
            raise ConfigError(
                f"--out {run_dir} already holds a run; pass --resume to continue "
                "it, --overwrite to replace it, or choose another --out"
            )
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        for name in ("tensorboard", "wandb", "images"):
            shutil.rmtree(run_dir / name, ignore_errors=True)
    return run_dir


def config_yaml(config: Config, model: VAE) -> str:
    """config.yaml; for a model of the user's own, a first line saying the `model` section
    did not build it (config.json records its architecture)."""
    custom = model.custom_architectures()
    if not custom:
        return config.to_yaml()
    return (
        f"# The model is {' + '.join(custom)}, registered by the code that trained it and "
        "recorded in config.json;\n# the model section below did not build it. Resume with "
        "that code imported (vaekit --import MODULE train ... --resume).\n" + config.to_yaml()
    )
