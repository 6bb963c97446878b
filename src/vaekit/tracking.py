"""Where metrics go: metrics.jsonl always; wandb and TensorBoard when asked (lazy imports)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import fileio
from .config import Config
from .errors import ConfigError

METRICS_FILE = "metrics.jsonl"


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    return value


class Tracker:
    """Fan metrics and images out to metrics.jsonl and any configured trackers."""

    def __init__(self, run_dir: Path, config: Config, enabled: bool = True,
                 resume: bool = False) -> None:
        self.run_dir = run_dir
        self.enabled = enabled
        self.backends: list[Any] = []
        if not enabled:
            return
        name = config.train.run_name or run_dir.name
        for kind in config.train.tracker:
            if kind == "wandb":
                self.backends.append(_wandb(config, run_dir, name, resume))
            elif kind == "tensorboard":
                self.backends.append(_tensorboard(run_dir))
            elif kind == "mlflow":
                self.backends.append(_mlflow(config, name))

    def log_epoch(self, record: dict[str, Any]) -> None:
        """Append one JSON line per epoch; scalars also go to every backend."""
        if not self.enabled:
            return
        record = {k: _clean(v) for k, v in record.items()}
        record.setdefault("time", time.time())
        fileio.append_line(self.run_dir / METRICS_FILE, json.dumps(record, sort_keys=True))
        self.log_scalars({k: v for k, v in record.items() if isinstance(v, (int, float))},
                         step=int(record.get("step", 0)))

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        for backend in self.backends:
            backend.scalars(scalars, step)

    def log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        if not self.enabled:
            return
        for backend in self.backends:
            backend.images(images, step)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()
        self.backends = []


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _missing(kind: str, extra: str) -> ConfigError:
    return ConfigError(f"--tracker {kind} needs the {kind} package: pip install 'vaekit[{extra}]'")


class _WandbBackend:
    def __init__(self, run: Any, wandb: Any) -> None:
        self.run, self.wandb = run, wandb

    def scalars(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def images(self, images: dict[str, np.ndarray], step: int) -> None:
        self.run.log({k: self.wandb.Image(v) for k, v in images.items()}, step=step)

    def close(self) -> None:
        self.run.finish()


def _wandb(config: Config, run_dir: Path, name: str, resume: bool) -> _WandbBackend:
    try:
        import wandb
    except ImportError:
        raise _missing("wandb", "wandb") from None
    run = wandb.init(project=config.train.wandb_project, name=name, dir=str(run_dir),
                     config=config.to_dict(), resume="allow" if resume else None,
                     id=f"{name}".replace("/", "-") if resume else None)
    return _WandbBackend(run, wandb)


class _TensorBoardBackend:
    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def scalars(self, scalars: dict[str, float], step: int) -> None:
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, step)

    def images(self, images: dict[str, np.ndarray], step: int) -> None:
        for k, v in images.items():
            self.writer.add_image(k, v, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


def _tensorboard(run_dir: Path) -> _TensorBoardBackend:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise _missing("tensorboard", "tensorboard") from None
    return _TensorBoardBackend(SummaryWriter(log_dir=str(run_dir / "tensorboard")))


class _MlflowBackend:
    def __init__(self, mlflow: Any) -> None:
        self.mlflow = mlflow

    def scalars(self, scalars: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics({k: float(v) for k, v in scalars.items()}, step=step)

    def images(self, images: dict[str, np.ndarray], step: int) -> None:
        for k, v in images.items():
            self.mlflow.log_image(v, f"{k}_{step:08d}.png")

    def close(self) -> None:
        self.mlflow.end_run()


def _mlflow(config: Config, name: str) -> _MlflowBackend:
    try:
        import mlflow
    except ImportError:
        raise _missing("mlflow", "mlflow") from None
    mlflow.start_run(run_name=name)
    flat: dict[str, Any] = {}
    for section, values in config.to_dict().items():
        if isinstance(values, dict):
            flat.update({f"{section}.{k}": v for k, v in values.items()})
        else:
            flat[section] = values
    mlflow.log_params(flat)
    return _MlflowBackend(mlflow)
