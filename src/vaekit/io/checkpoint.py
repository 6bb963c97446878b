"""Saving and loading: weights as safetensors + config.json, training state without pickle.

A run directory holds `config.json` + `model.safetensors` (the layout Hugging Face tools
read) and `state.pt`, the resumable training state. Loading never executes code from a
file: safetensors for weights, JSON for configs, `torch.load(weights_only=True)` (passed
explicitly, so `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD` cannot turn it off) for the state.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .. import __version__
from ..config import Config, from_dict
from ..errors import CheckpointError, ConfigError
from ..models import VAE
from . import fileio

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "state.pt"


def model_meta(model: VAE, config: Config, class_names: list[str]) -> dict[str, Any]:
    return {
        "library_name": "vaekit",
        "vaekit_version": __version__,
        "input_shape": list(model.input_shape),
        "num_classes": model.num_classes,
        "class_names": list(class_names),
        "config": config.to_dict(),
    }


def save_model(run_dir: str | Path, model: VAE, config: Config, class_names: list[str]) -> None:
    """Write config.json and model.safetensors atomically (weights first, then config)."""
    run_dir = Path(run_dir)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    fileio.write_bytes(run_dir / MODEL_FILE, st_save(tensors, metadata={"format": "pt"}))
    fileio.write_json(run_dir / CONFIG_FILE, model_meta(model, config, class_names))


def read_meta(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{run_dir} is not a vaekit run or model folder: {CONFIG_FILE} is missing"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
        meta["input_shape"] = [int(s) for s in meta["input_shape"]]
        meta["config"] = from_dict(meta["config"], source=str(path))
        meta.setdefault("class_names", [])
        meta["num_classes"] = int(meta.get("num_classes", 0))
    except ConfigError:
        raise
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint {path} is incomplete or corrupt ({e})") from None
    return meta


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is missing; the run has not saved a model yet")
    try:
        return st_load(path.read_bytes())
    except (SafetensorError, ValueError, OSError, RuntimeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"checkpoint {path} is incomplete or corrupt ({reason})") from None


def check_state_dict(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Fail, listing every difference, unless `tensors` fits `model` exactly."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    problems = [f"missing {k}" for k in expected if k not in found]
    problems += [f"unexpected {k}" for k in found if k not in expected]
    problems += [
        f"{k}: {found[k]} in file, {expected[k]} in model"
        for k in expected
        if k in found and found[k] != expected[k]
    ]
    if problems:
        shown = "; ".join(problems[:8]) + (
            f"; and {len(problems) - 8} more" if len(problems) > 8 else ""
        )
        raise CheckpointError(
            f"weights in {source} do not match the model its config "
            f"describes ({shown}); were they saved from another config?"
        )


def load(path: str | Path, device: str | torch.device = "cpu") -> VAE:
    """Load a trained model from a run directory, a model folder or `hf://OWNER/NAME`.

    Strict: the weights must match the architecture in config.json exactly, and the
    comparison happens before any weight is copied.
    """
    run_dir = resolve(path)
    meta = read_meta(run_dir)
    config: Config = meta["config"]
    tensors = _read_weights(run_dir / MODEL_FILE)
    model = VAE(config.model, tuple(meta["input_shape"]), meta["num_classes"])
    check_state_dict(model, tensors, str(run_dir / MODEL_FILE))
    model.load_state_dict(tensors, strict=True)
    model.run_config = config
    model.class_names = list(meta["class_names"])
    return model.to(device).eval()


def resolve(path: str | Path) -> Path:
    """A local directory for `path`; `hf://OWNER/NAME[@REVISION]` comes from the Hugging Face
    Hub (through huggingface_hub's cache: config.json, model.safetensors, card and images only).
    """
    if str(path).startswith("hf://"):
        from .hub import download  # the hub module imports this one

        return download(str(path))
    run_dir = Path(path)
    if not run_dir.exists():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise CheckpointError(
            f"{run_dir} is a file; pass the run directory that holds {CONFIG_FILE} and {MODEL_FILE}"
        )
    return run_dir


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write the resumable training state atomically (torch.save of tensors and plain data)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    fileio.write_bytes(path, buffer.getvalue())


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a training state, refusing anything but tensors and plain data."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no resume state at {path}; start the run without --resume")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is damage
        raise CheckpointError(
            f"checkpoint {path} is incomplete or corrupt (not a torch "
            "archive); delete it, or restart the run with --overwrite"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).splitlines()[0] if str(e) else ""
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise CheckpointError(
                f"checkpoint {path} contains Python objects that vaekit "
                "refuses to load (it never executes code from a file); "
                "it was not written by vaekit"
            ) from None
        raise CheckpointError(f"checkpoint {path} is incomplete or corrupt ({first})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"checkpoint {path} is incomplete or corrupt ({first})") from None
    if not isinstance(state, dict) or state.get("format") != 1:
        raise CheckpointError(
            f"checkpoint {path} is incomplete or corrupt (not a vaekit training state)"
        )
    return state
