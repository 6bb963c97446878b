"""Export to other libraries' formats: a folder `diffusers.AutoencoderKL.from_pretrained`
loads.

diffusers writes the folder itself: an `AutoencoderKL` is built from the config, the
mapped weights are loaded into it strictly (every key, every shape) and its own
`save_pretrained` writes config.json and diffusion_pytorch_model.safetensors, so the
folder is exactly what diffusers writes and reads. It is written beside OUT under a
temporary name and renamed into place: a failed export leaves no half folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, VaekitError
from .fileio import TMP_PREFIX

INSTALL = "pip install 'vaekit[diffusers]'"
CONFIG_FILE = "config.json"


def check_target(out: str | os.PathLike[str], overwrite: bool) -> Path:
    """OUT, checked before anything is loaded: a new or empty folder, or (with overwrite)
    a folder that holds an earlier export; never a file or a folder of other things."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} is a file; the diffusers export is a folder: name a new one")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise ConfigError(f"{path} is not empty; name a new folder, or pass --overwrite")
        if not (path / CONFIG_FILE).is_file():
            raise ConfigError(
                f"{path} holds no {CONFIG_FILE}, so it is not an earlier export; --overwrite "
                "replaces only a model folder: name a new folder"
            )
    return path


def write_diffusers(
    out: str | os.PathLike[str],
    config: dict[str, Any],
    state: dict[str, torch.Tensor],
    overwrite: bool = False,
) -> Path:
    """Write an AutoencoderKL with `config` (its constructor's arguments) and `state` (its
    state dict) to the folder `out`, through diffusers' own save_pretrained."""
    path = check_target(out, overwrite)
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise ConfigError(f"exporting to diffusers needs diffusers: {INSTALL}") from None
    model: Any = AutoencoderKL(**config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:  # a bug in the mapping, never the user's doing
        raise RuntimeError(f"AutoencoderKL weights do not map: {missing} {unexpected}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        _swap(tmp, path)
    except BaseException as e:
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
        os.replace(path, old)  # old is an empty folder: replaced by the earlier export
    try:
        os.replace(new, path)
    except BaseException:
        if old is not None:
            with contextlib.suppress(OSError):
                os.replace(old, path)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
