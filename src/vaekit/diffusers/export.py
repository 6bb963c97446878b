"""Export to other libraries' formats: a folder `diffusers.AutoencoderKL.from_pretrained`
(or, for a VQ-VAE of diffusers' layout, `diffusers.VQModel.from_pretrained`) loads.

diffusers writes the folder itself: an `AutoencoderKL` (a `VQModel`) is built from the config, the
mapped weights are loaded into it strictly (every key, every shape) and its own
`save_pretrained` writes config.json and diffusion_pytorch_model.safetensors, so the
folder is exactly what diffusers writes and reads. It is written beside OUT under a
temporary name and renamed into place: a failed export leaves no half folder. An
existing OUT is replaced (--overwrite) only when it is what an export writes and nothing
else, and never when it is the run directory or holds or lies inside it: replacing one
would delete the run. Before the rename a caller's check reads the folder back (vaekit's
export: diffusers' `from_pretrained`, compared with the model it came from), so that a
folder diffusers would rebuild into another model is refused and nothing written.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .. import untrusted_files
from ..errors import ConfigError, VaekitError, require
from ..io.fileio import DIR_MODE, TMP_PREFIX
from . import autoencoderkl, vqmodel

CONFIG_FILE = "config.json"
# the diffusers classes the bridge reads and writes
CLASS_NAMES = (autoencoderkl.CLASS_NAME, vqmodel.CLASS_NAME)
CLASS_NAME = autoencoderkl.CLASS_NAME
WEIGHTS = "diffusion_pytorch_model"  # how save_pretrained names the weights (any shard)


def check_target(
    out: str | os.PathLike[str], overwrite: bool, run: str | os.PathLike[str] | None = None
) -> Path:
    """OUT, checked before anything is loaded: a new or empty folder, or (with overwrite)
    an earlier export; never a file, a folder of other things, nor the run directory
    `run`, a folder inside it or one around it (--overwrite would delete the run)."""
    path = Path(out).expanduser()
    if path.is_symlink():  # write where it points: renaming over the link itself fails
        path = _resolve(path)
    overlap = _overlap(path, Path(run).expanduser()) if run is not None else None
    if overlap:
        raise ConfigError(f"{path} {overlap}; write the export to a folder of its own")
    there = next((p for p in (path, *path.parents) if p.exists()), path)  # OUT or a parent
    if there.exists() and not there.is_dir():
        inside = "" if there == path else f", so {path} cannot be made"
        raise ConfigError(
            f"{there} is not a folder{inside}; the diffusers export is a folder: name a new one"
        )
    if path.is_dir() and _has_entries(path):
        if not overwrite:
            raise ConfigError(f"{path} is not empty; name a new folder, or pass --overwrite")
        why = _not_an_export(path)
        if why:
            raise ConfigError(
                f"{path} {why}, so it is not an earlier export; --overwrite replaces only a "
                f"folder of an {CLASS_NAME}'s or a VQModel's {CONFIG_FILE} and {WEIGHTS}* "
                "files: name a new folder"
            )
    return path


def _resolve(path: Path) -> Path:
    """`path` with its symbolic links followed, or one line when they cannot be (a loop)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as e:  # Python < 3.13 raises RuntimeError on a loop
        raise ConfigError(
            f"{path} cannot be used as OUT: its symbolic links do not end ({e}); name a "
            "plain folder"
        ) from None


def check_factor(value: object, where: str) -> float:
    """A scaling factor diffusion pipelines can multiply latents by: a finite number > 0;
    `where` names where it comes from in the refusal."""
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(
            f"{where} is {value!r}, not a finite number > 0; pass --scaling-factor X, or "
            "--scaling-factor measure to measure it on the training images"
        )
    return float(number)


def _has_entries(path: Path) -> bool:
    try:
        return any(path.iterdir())
    except OSError as e:
        raise ConfigError(f"cannot read the folder {path} ({e.strerror or e})") from None


def _overlap(path: Path, run: Path) -> str | None:
    """How the folder `path` and the run directory `run` overlap, or None (a run that is
    no local folder, such as hf://OWNER/NAME, overlaps nothing)."""
    if not run.is_dir():
        return None
    here, there = _resolve(path), _resolve(run)
    if here == there:
        return "is the run directory itself"
    if there in here.parents:
        return f"is inside the run directory {run}"
    if here in there.parents:
        return f"holds the run directory {run}"
    return None


def _not_an_export(path: Path) -> str | None:
    """Why the folder `path` is not what write_diffusers writes (an AutoencoderKL's
    config.json and diffusion_pytorch_model* weight files, nothing else), or None."""
    try:
        config = untrusted_files.load_json_file(path / CONFIG_FILE)
    except (OSError, ValueError):
        return f"holds no readable {CONFIG_FILE}"
    if not isinstance(config, dict) or config.get("_class_name") not in CLASS_NAMES:
        return f"holds a {CONFIG_FILE} that is not an {CLASS_NAME}'s or a VQModel's"
    for entry in sorted(path.iterdir()):
        if not entry.is_file() or not (entry.name == CONFIG_FILE or entry.name.startswith(WEIGHTS)):
            return f"also holds {entry.name}"
    return None


def write_diffusers(
    out: str | os.PathLike[str],
    config: dict[str, Any],
    state: dict[str, torch.Tensor],
    overwrite: bool = False,
    run: str | os.PathLike[str] | None = None,
    check: Callable[[Path], None] | None = None,
    class_name: str = CLASS_NAME,
) -> Path:
    """Write an AutoencoderKL (or the diffusers class `class_name`) with `config` (its
    constructor's arguments) and `state` (its state dict) to the folder `out`, through
    diffusers' own save_pretrained; `run`, the
    run directory it comes from, if any, is never written into or replaced. `check` reads
    the written folder (under a temporary name) and raises to refuse it: nothing is
    written then."""
    path = check_target(out, overwrite, run)
    check_factor(config.get("scaling_factor", 0.18215), "the scaling_factor")
    assert class_name in CLASS_NAMES, class_name
    diffusers_class = require(
        "diffusers", "diffusers", "exporting to diffusers", attribute=class_name
    )
    model: Any = diffusers_class(**config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:  # a bug in the mapping, never the user's doing
        raise RuntimeError(f"{class_name} weights do not map: {missing} {unexpected}")
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent))
        tmp.chmod(DIR_MODE)  # mkdtemp's is 0o700; a folder diffusers makes gets this
        model.save_pretrained(tmp, safe_serialization=True)
        if check is not None:
            check(tmp)
        _swap(tmp, path)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise VaekitError(
                f"cannot write {path} ({e.strerror or e}); nothing was written"
            ) from None
        raise
    return path


def _swap(new: Path, path: Path) -> None:
    """Put the folder `new` at `path`; an earlier folder there is moved aside first and
    removed only once the new one is in place."""
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + path.name + ".old.", dir=path.parent))
        try:
            os.replace(path, old)  # old is an empty folder: replaced by the earlier export
        except BaseException:
            old.rmdir()
            raise
    try:
        os.replace(new, path)
    except BaseException:
        if old is not None:
            with contextlib.suppress(OSError):
                os.replace(old, path)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
