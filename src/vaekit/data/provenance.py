"""Where a run's data came from, as config.json records it (`data_source`): a named dataset,
noise, a Hugging Face dataset, a file or folder with the fingerprint of what training read,
or data passed from Python (`Trainer(data=...)`), which no command can reload. Commands
read it to reload the data or to refuse (asking for --data), never to fall back to the
config's default dataset; the model card reads it to name the data honestly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import DataConfig
from ..errors import CheckpointError

PYTHON = "python"  # the kind of data passed from Python
KINDS = ("named", "noise", "hf", "file", "folder", PYTHON)


def record(cfg: DataConfig, passed: bool, fingerprint: str, name: str = "") -> dict[str, Any]:
    """The provenance of the data a run trains on: `passed` (Trainer(data=...)) wins over
    `cfg.name`; files and folders keep their absolute path and the training data's
    fingerprint (Dataset.fingerprint), so a later change is noticed."""
    from .sources import NAMED

    if passed:
        return {"kind": PYTHON, "name": name}
    source = cfg.name
    if source.startswith("hf:"):
        return {"kind": "hf", "name": source}
    if source in NAMED:
        return {"kind": "named", "name": source}
    if source == "noise":
        return {"kind": "noise", "name": source}
    path = Path(source).expanduser().resolve()
    kind = "folder" if path.is_dir() else "file"
    return {"kind": kind, "name": source, "path": str(path), "fingerprint": fingerprint}


def check(value: Any, source: str) -> dict[str, Any] | None:
    """config.json's `data_source` (None where a run predates it), checked."""
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("kind") not in KINDS:
        raise CheckpointError(
            f"{source}: 'data_source' must be an object whose kind is one of "
            f"{', '.join(KINDS)}; got {str(value)[:80]}"
        )
    return value


def describe(value: dict[str, Any] | None, cfg_name: str | None) -> str:
    """How a card or a report names the training data."""
    if value is None:
        return cfg_name or "unknown data"
    if value["kind"] == PYTHON:
        named = f" ({value['name']})" if value.get("name") else ""
        return f"data passed from Python{named}"
    return str(value.get("name") or cfg_name)


def passed_from_python(value: dict[str, Any] | None) -> bool:
    return value is not None and value.get("kind") == PYTHON
