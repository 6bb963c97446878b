"""The run directory: its name, the files a run writes, who owns it while the run lasts,
and what --resume and --overwrite may do to a directory that already holds something.

`owned_run_dir` is the whole life of a run's directory: checked before any data is
loaded, created (a default name is made unique by creating it with mkdir, which only one
process can do), locked for the run (runlock.py), and only then looked into, so that two
processes never both decide that a directory is theirs. --overwrite removes the files a
run writes and nothing else: a directory holding anything more is refused. A directory
the run created and left empty (its set-up failed on the data or the model) is removed
when it ends; one that was there before never is.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from .. import tracking
from ..config import Config
from ..errors import ConfigError
from ..io import checkpoint, fileio, outputs
from ..models import VAE, code_prior
from ..models.described import FAMILY, model_section
from ..models.registry import registered_name
from ..wording import option
from . import runlock

RUN_FILES = (
    "config.yaml",
    checkpoint.CONFIG_FILE,
    checkpoint.MODEL_FILE,
    checkpoint.STATE_FILE,
    *code_prior.FILES,  # a VQ-VAE's prior over its codes (vaekit train-prior)
    code_prior.STATE_FILE,  # and the resumable state of its training
    tracking.METRICS_FILE,
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
    # the trackers' records of which run to continue on --resume (tracking.py)
    tracking.WANDB_ID_FILE,
    tracking.MLFLOW_RUN_FILE,
)
RUN_FOLDERS = ("tensorboard", "wandb")  # the trackers' logs (tracking.py); mlruns/ is in the cwd


@contextlib.contextmanager
def owned_run_dir(config: Config, resume: bool, overwrite: bool) -> Iterator[Path]:
    """The run directory, created if new and locked by this process for the body; one it
    created is removed again if the run ends with it empty."""
    if resume and overwrite:
        raise ConfigError(
            f"{option('resume')} and {option('overwrite')} contradict each other: resuming "
            f"continues the run in {option('out')}, overwriting deletes it and starts anew; "
            "pass one of them"
        )
    run_dir, created = _create(config)
    try:
        with runlock.held(run_dir):
            _prepare(run_dir, resume, overwrite)
            yield run_dir
    finally:
        if created:  # a set-up that failed (bad data, a bad model) leaves no empty folder
            with contextlib.suppress(OSError):  # rmdir: only while it holds nothing
                run_dir.rmdir()


def _create(config: Config) -> tuple[Path, bool]:
    """--out, created; without it runs/NAME-TIME, with -2, -3, ... if that exists. With
    whether this call created it (a folder that was there before is never removed)."""
    if config.train.out:
        existed = os.path.lexists(config.train.out)
        return outputs.make_dir(config.train.out, option("out")), not existed
    parent = outputs.make_dir("runs", "the default --out folder")
    stem = f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for i in range(1, 1000):
        run_dir = parent / (stem if i == 1 else f"{stem}-{i}")
        try:
            run_dir.mkdir()  # atomic: of two processes started together, one creates it
        except FileExistsError:
            continue
        except OSError as e:
            raise ConfigError(f"cannot create the run directory {run_dir} ({e.strerror})") from None
        return run_dir, True
    raise ConfigError(f"runs/{stem}-2 to -999 exist already; set {option('out')}")


def _contents(run_dir: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(the files and folders a run writes, temporary files, anything else) in run_dir."""
    own, temporary, other = [], [], []
    try:
        entries = sorted(run_dir.iterdir())
    except OSError as e:  # e.g. a directory without read permission
        raise ConfigError(f"{option('out')} {run_dir}: cannot list it ({e.strerror})") from None
    for path in entries:
        name, real_dir = path.name, path.is_dir() and not path.is_symlink()
        if name == runlock.LOCK_FILE or name.startswith(f"{runlock.LOCK_FILE}."):
            continue
        if (name in RUN_FILES and not path.is_dir()) or (name in RUN_FOLDERS and real_dir):
            own.append(path)
        elif name.startswith(fileio.TMP_PREFIX) and path.is_file():
            temporary.append(path)
        else:
            other.append(path)
    return own, temporary, other


def _names(paths: list[Path]) -> str:
    shown = [p.name + ("/" if p.is_dir() else "") for p in paths[:5]]
    more = f" and {len(paths) - 5} more" if len(paths) > 5 else ""
    return ", ".join(shown) + more


def _prepare(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """What --resume and --overwrite may do here; called while holding the lock."""
    own, temporary, other = _contents(run_dir)
    resume_, overwrite_, out = option("resume"), option("overwrite"), option("out")
    if resume and not (run_dir / checkpoint.STATE_FILE).is_file():
        raise ConfigError(
            f"{resume_}: {run_dir} holds no resume state "
            f"({checkpoint.STATE_FILE}); start it without {resume_}"
        )
    if overwrite and other:
        raise ConfigError(
            f"{overwrite_}: {run_dir} holds {_names(other)}, which no run writes; overwriting "
            f"deletes only a run's own files: move those away or choose another {out}"
        )
    if not resume and not overwrite:
        if other:
            raise ConfigError(
                f"{out} {run_dir} is not empty: it holds files that no run writes "
                f"({_names(other)}); choose a new or empty directory"
            )
        if own:
            raise ConfigError(
                f"{out} {run_dir} already holds a run; pass {resume_} to continue "
                f"it, {overwrite_} to replace it, or choose another {out}"
            )
        return
    for path in temporary:  # left by a killed run; never loaded
        path.unlink(missing_ok=True)
    if overwrite:
        for path in own:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


def config_yaml(config: Config, model: VAE) -> str:
    """config.yaml; for a model of the user's own, without the options that name vaekit's
    families (model.arch, hidden, channels, ...), which did not build it, and with a first
    line saying what did (config.json records its architecture)."""
    if model_section(model, config.model)[1]:
        return config.to_yaml()
    record = config.to_dict()
    for key in FAMILY:
        record["model"].pop(key, None)
    halves = " + ".join(
        registered_name(m) or type(m).__name__ for m in (model.encoder, model.decoder)
    )
    return (
        f"# The model is {halves}, from the code that trained it, recorded in config.json; the "
        "model section below\n# gives its settings, and no model.arch: none of vaekit's "
        "families built it. Resume with\n# that code imported (vaekit --import MODULE train "
        "... --resume).\n" + yaml.safe_dump(record, sort_keys=False)
    )
