"""The files of a model folder and of a run's resumable state: the format, not the model.

A model folder (a run directory, a `save_pretrained` folder, a Hub repo) holds
`config.json` + `model.safetensors`, the layout Hugging Face tools read; a run directory
also holds `state.pt`, the resumable training state. Reading never executes code from a
file: safetensors for weights, JSON for configs, `torch.load(weights_only=True)` (passed
explicitly, so `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD` cannot turn it off) for the state.
Building a model from these files is `models.VAE.from_folder`'s job.
"""

from __future__ import annotations

import io
import pickle
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .. import untrusted_files
from ..config import from_dict
from ..errors import CheckpointError, ConfigError, first_line
from ..wording import option
from . import fileio

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "state.pt"
# a VQ-VAE's prior over its codes, beside its weights (models/code_prior.py): weights, record
PRIOR_FILES = ("code_prior.safetensors", "code_prior.json")


def write_model_folder(directory: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write model.safetensors and config.json atomically (weights first, then config);
    weights that are not finite are never written."""
    directory = Path(directory)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    bad = non_finite(tensors)
    if bad:
        raise CheckpointError(
            f"refusing to save non-finite weights ({', '.join(bad[:4])}) to {directory}; the "
            "files already there are kept"
        )
    fileio.write_bytes(directory / MODEL_FILE, st_save(tensors, metadata={"format": "pt"}))
    fileio.write_json(directory / CONFIG_FILE, meta)


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The names of floating tensors holding NaN or an infinity."""
    return [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]


def read_meta(directory: Path) -> dict[str, Any]:
    """config.json of a model folder, checked: `config` (the training configuration, a
    Config, or None when the folder has none), `class_names` and, for folders written since
    vaekit 0.2, `architecture`; 0.1's `input_shape` and `num_classes` where present."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{directory} is not a vaekit run or model folder: {CONFIG_FILE} is missing"
        )
    try:
        meta = untrusted_files.load_json_file(path)
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
        if "architecture" in meta and not isinstance(meta["architecture"], dict):
            raise ValueError("'architecture' is not an object")
        if "architecture" not in meta:  # vaekit 0.1: the architecture is the config's
            meta["input_shape"] = [int(s) for s in meta["input_shape"]]
            meta["num_classes"] = int(meta.get("num_classes", 0))
            meta["config"]  # noqa: B018 (required: KeyError names it)
        config = meta.get("config")
        meta["config"] = None if config is None else from_dict(config, source=str(path))
        names = meta.get("class_names", [])
        if not isinstance(names, list) or not all(isinstance(c, (str, int)) for c in names):
            raise ValueError(f"'class_names' must be a list of names, not {str(names)[:60]}")
        meta["class_names"] = [str(c) for c in names]
    except ConfigError:
        raise
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint {path} is incomplete or corrupt ({e})") from None
    return meta


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """model.safetensors of a model folder, as CPU tensors."""
    path = directory / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is missing; the run has not saved a model yet")
    try:
        return st_load(path.read_bytes())
    except (SafetensorError, ValueError, OSError, RuntimeError) as e:
        raise CheckpointError(
            f"checkpoint {path} is incomplete or corrupt ({first_line(e)})"
        ) from None


def check_state_dict(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Fail, listing every difference, unless `tensors` fits `model` exactly: the same names
    and shapes, floating weights where the model has them, and only finite values."""
    state = model.state_dict()
    expected = {k: tuple(v.shape) for k, v in state.items()}
    found = {k: tuple(v.shape) for k, v in tensors.items() if isinstance(v, torch.Tensor)}
    problems = [f"missing {k}" for k in expected if k not in found]
    problems += [f"unexpected {k}" for k in tensors if k not in expected]
    problems += [
        f"{k}: {found[k]} in file, {expected[k]} in model"
        for k in expected
        if k in found and found[k] != expected[k]
    ]
    problems += [
        f"{k}: {tensors[k].dtype} in file, {state[k].dtype} in model"
        for k in expected
        if k in found and state[k].is_floating_point() != tensors[k].is_floating_point()
    ]

    if problems:
        shown = "; ".join(problems[:8]) + (
            f"; and {len(problems) - 8} more" if len(problems) > 8 else ""
        )
        raise CheckpointError(
            f"weights in {source} do not match the model its config "
            f"describes ({shown}); were they saved from another config?"
        )
    bad = non_finite(tensors)
    if bad:
        raise CheckpointError(
            f"weights in {source} hold NaN or infinite values ({', '.join(bad[:4])}); the file "
            "is damaged or was saved from a run that diverged"
        )


def local_dir(path: str | Path) -> Path:
    """`path` as a model or run directory that exists, or a clear error."""
    directory = Path(path)
    if not directory.exists():
        raise CheckpointError(f"run directory {directory} does not exist")
    if not directory.is_dir():
        raise CheckpointError(
            f"{directory} is a file; pass the run directory that holds {CONFIG_FILE} and "
            f"{MODEL_FILE}"
        )
    return directory


def torch_load(path: Path) -> Any:
    """torch.load on the CPU with weights_only=True (no code from the file runs), for files
    a user names, every floating tensor in it checked finite (a CheckpointError naming the
    file and the tensor). On junk (text, a garbled or truncated pickle) the unpickler raises
    KeyError, IndexError, struct.error and the like, which say nothing and which callers
    would not expect: those become UnpicklingError. Its warnings about odd pickle
    protocols are silenced, as they would bury a one-line error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except (KeyError, IndexError, TypeError, AttributeError, OverflowError, struct.error) as e:
            raise pickle.UnpicklingError(f"garbled pickle data: {type(e).__name__}") from None
    return untrusted_files.check_finite(loaded, str(path))


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write the resumable training state atomically (torch.save of tensors and plain data)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    fileio.write_bytes(path, buffer.getvalue())


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a training state, refusing anything but tensors and plain data."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no resume state at {path}; start the run without {option('resume')}"
        )
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is damage
        raise CheckpointError(
            f"checkpoint {path} is incomplete or corrupt (not a torch "
            f"archive); delete it, or restart the run with {option('overwrite')}"
        )
    try:
        state = torch_load(path)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise CheckpointError(
                f"checkpoint {path} contains Python objects that vaekit "
                "refuses to load (it never executes code from a file); "
                "it was not written by vaekit"
            ) from None
        raise CheckpointError(
            f"checkpoint {path} is incomplete or corrupt ({first_line(e)})"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(
            f"checkpoint {path} is incomplete or corrupt ({first_line(e)})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != 1:
        raise CheckpointError(
            f"checkpoint {path} is incomplete or corrupt (not a vaekit training state)"
        )
    return state
