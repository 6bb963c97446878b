"""Where metrics go: metrics.jsonl always; wandb, TensorBoard and MLflow when asked.

Each optional backend is imported only when a run asks for it; a missing package is one
`ConfigError` line naming the extra to install. Every backend receives the same things:
the config once, scalars (per epoch, and per step every `train.log_images_every`
steps) and the sample / reconstruction grids (uint8 arrays (H, W, C)).
"""

from __future__ import annotations

import json
import math
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import untrusted_files
from .config import Config
from .errors import ConfigError, first_line, require
from .io import fileio
from .version import __version__

METRICS_FILE = "metrics.jsonl"
WANDB_ID_FILE = "wandb_run_id"  # so that --resume continues the same wandb run
MLFLOW_DIR = "mlruns"  # the default store, in the current directory: mlflow.db + artifacts
MLFLOW_RUN_FILE = "mlflow.json"  # in the run directory: where its MLflow run is, for --resume
_NOT_SCALARS = ("time",)  # in metrics.jsonl, but a wall-clock stamp is no metric to plot


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    return value


def _scalars(record: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in record.items()
        if isinstance(v, (int, float))
        and not isinstance(v, bool)
        and k not in _NOT_SCALARS
        and math.isfinite(float(v))
    }


def _image(array: Any) -> np.ndarray:
    """A uint8 (H, W) or (H, W, 3) array: what every backend's image call accepts."""
    a = np.asarray(array)
    if a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a


class Tracker:
    """Fan metrics and images out to metrics.jsonl and any configured trackers."""

    def __init__(
        self, run_dir: Path, config: Config, enabled: bool = True, resume: bool = False
    ) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.backends: list[Any] = []
        if not enabled:
            return
        name = config.train.run_name or self.run_dir.name
        try:
            for kind in dict.fromkeys(config.train.tracker):  # each backend once
                if kind == "wandb":
                    self.backends.append(_wandb(config, self.run_dir, name, resume))
                elif kind == "tensorboard":
                    self.backends.append(_tensorboard(config, self.run_dir))
                elif kind == "mlflow":
                    self.backends.append(_mlflow(config, self.run_dir, name, resume))
                else:
                    raise ConfigError(
                        f"--train.tracker {kind!r} is unknown; choose from "
                        "wandb, tensorboard, mlflow"
                    )
        except BaseException:
            self.close()  # never leave a started backend behind
            raise

    @property
    def active(self) -> bool:
        """True when some backend besides metrics.jsonl listens (images are worth making)."""
        return bool(self.backends)

    def log_epoch(self, record: dict[str, Any]) -> None:
        """Append one JSON line per epoch; scalars also go to every backend."""
        if not self.enabled:
            return
        record = {k: _clean(v) for k, v in record.items()}
        record.setdefault("time", time.time())
        fileio.append_line(self.run_dir / METRICS_FILE, json.dumps(record, sort_keys=True))
        self.log_scalars(record, step=int(record.get("step", 0)))

    def log_scalars(self, scalars: dict[str, Any], step: int) -> None:
        """Numbers to every backend (not to metrics.jsonl, which holds one line per epoch)."""
        if not self.enabled or not self.backends:
            return
        values = _scalars(scalars)
        for backend in self.backends:
            backend.scalars(values, step)

    def log_images(self, images: dict[str, Any], step: int) -> None:
        if not self.enabled or not self.backends:
            return
        arrays = {k: _image(v) for k, v in images.items()}
        for backend in self.backends:
            backend.images(arrays, step)

    def close(self) -> None:
        backends, self.backends = self.backends, []
        for backend in backends:
            backend.close()


class Metrics(list[dict[str, Any]]):
    """metrics.jsonl's records, and how many lines or values were skipped as malformed."""

    skipped: int = 0


def read_metrics(run_dir: Path) -> Metrics:
    """metrics.jsonl's records, as charts, reports and cards may use them: a line that is no
    JSON object is skipped, and so is a value that is not a finite number of sane size or
    a string (an edited or damaged log must not break a picture); `skipped` counts them."""
    path = Path(run_dir) / METRICS_FILE
    records = Metrics()
    if not path.is_file():
        return records
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return records
    for line in lines:
        try:
            record = untrusted_files.loads_json(line, "metrics.jsonl") if line.strip() else None
        except (ValueError, RecursionError):
            record = None
        if not isinstance(record, dict):
            records.skipped += bool(line.strip())
            continue
        clean = {k: v for k, v in record.items() if isinstance(k, str) and _sane(v)}
        records.skipped += len(clean) < len(record)
        records.append(clean)
    return records


def _sane(value: Any) -> bool:
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, (int, float)):
        return math.isfinite(value) and abs(value) < 1e100
    return isinstance(value, str) and len(value) < 1000 or isinstance(value, (list, dict))


def _require(kind: str, module: str = "", attribute: str = "") -> Any:
    """The tracker's package (or `module` of it, or its `attribute`), or one line naming
    the extra to install."""
    drop = f" (or drop {kind} from train.tracker)"
    where, package = f"--train.tracker {kind}", f"the {kind} package"
    return require(kind, module or kind, where, attribute=attribute, package=package, also=drop)


def _failed(kind: str, error: BaseException, fix: str) -> ConfigError:
    return ConfigError(
        f"--train.tracker {kind} could not start ({first_line(error, named=True)}); {fix}"
    )


# -- Weights & Biases ------------------------------------------------------------------------
class _WandbBackend:
    def __init__(self, run: Any, wandb: Any) -> None:
        self.run, self.wandb = run, wandb

    def scalars(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def images(self, images: dict[str, np.ndarray], step: int) -> None:
        self.run.log(
            {k: self.wandb.Image(v, caption=f"step {step}") for k, v in images.items()}, step=step
        )

    def close(self) -> None:
        self.run.finish()


def _wandb(config: Config, run_dir: Path, name: str, resume: bool) -> _WandbBackend:
    wandb = _require("wandb")
    id_file = run_dir / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if resume and id_file.is_file() else ""
    if not run_id:
        run_id = secrets.token_hex(4)  # wandb's own ids are 8 lowercase alphanumerics too
        fileio.write_text(id_file, run_id + "\n")
    try:
        run = wandb.init(
            project=config.train.wandb_project,
            name=name,
            id=run_id,
            dir=str(run_dir),
            config=config.to_dict(),
            resume="allow" if resume else None,
            reinit="finish_previous",
        )
    except Exception as e:  # wandb raises many types (login, network, usage): all user-side
        raise _failed(
            "wandb",
            e,
            "run `wandb login`, or set WANDB_MODE=offline to log to "
            f"{run_dir / 'wandb'} and `wandb sync` it later",
        ) from None
    return _WandbBackend(run, wandb)


# -- TensorBoard -----------------------------------------------------------------------------
class _TensorBoardBackend:
    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def scalars(self, scalars: dict[str, float], step: int) -> None:
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def images(self, images: dict[str, np.ndarray], step: int) -> None:
        for k, v in images.items():
            self.writer.add_image(k, v, step, dataformats="HWC" if v.ndim == 3 else "HW")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _tensorboard(config: Config, run_dir: Path) -> _TensorBoardBackend:
    _require("tensorboard")  # torch's writer needs it: checked first, for the message
    SummaryWriter = _require("tensorboard", "torch.utils.tensorboard", "SummaryWriter")
    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
    writer.add_text("config", "```yaml\n" + config.to_yaml() + "```", 0)
    return _TensorBoardBackend(writer)


# -- MLflow ----------------------------------------------------------------------------------


class _MlflowBackend:
    """One MLflow run, driven through MlflowClient: no global active run to leak or clash."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    def scalars(self, scalars: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in scalars.items()]
        )

    def images(self, images: dict[str, np.ndarray], step: int) -> None:
        for k, v in images.items():  # (H, W, C) uint8 grids
            image = v[..., 0] if v.ndim == 3 and v.shape[2] == 1 else v
            self.client.log_image(self.run_id, image, f"images/{k}_step{step:08d}.png")

    def close(self) -> None:
        self.client.set_terminated(self.run_id, "FINISHED")


def mlflow_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI (or mlflow.set_tracking_uri) if set, else ./mlruns/mlflow.db.

    A sqlite store, because MLflow 3 refuses the plain-file ./mlruns store unless
    MLFLOW_ALLOW_FILE_STORE is set; its artifacts go to ./mlruns/<experiment>/<run>/.
    """
    import mlflow

    if mlflow.is_tracking_uri_set():
        return str(mlflow.get_tracking_uri())
    root = Path(MLFLOW_DIR).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def _mlflow_params(config: Config) -> dict[str, str]:
    flat: dict[str, str] = {}
    for section, values in config.to_dict().items():
        if isinstance(values, dict):
            flat.update({f"{section}.{k}": str(v) for k, v in values.items()})
        else:
            flat[section] = str(values)
    return flat


def _mlflow(config: Config, run_dir: Path, name: str, resume: bool) -> _MlflowBackend:
    _require("mlflow")  # first: its submodules may be cached without it
    Param = _require("mlflow", "mlflow.entities", "Param")
    MlflowException = _require("mlflow", "mlflow.exceptions", "MlflowException")
    MlflowClient = _require("mlflow", "mlflow.tracking", "MlflowClient")
    uri = mlflow_tracking_uri()
    if uri.startswith("sqlite:"):
        _require("mlflow", "sqlalchemy")  # mlflow-skinny alone has no sqlite store
    record = run_dir / MLFLOW_RUN_FILE
    try:
        client = MlflowClient(tracking_uri=uri)
        if resume and record.is_file():  # continue the same MLflow run
            saved = untrusted_files.read_json(record)
            if saved.get("tracking_uri") == uri:
                client.update_run(saved["run_id"], status="RUNNING")
                return _MlflowBackend(client, saved["run_id"])
        experiment = client.get_experiment_by_name(config.train.mlflow_experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment
            else client.create_experiment(config.train.mlflow_experiment)
        )
        run = client.create_run(
            experiment_id,
            run_name=name,
            tags={"vaekit.version": __version__, "vaekit.run_dir": str(run_dir.resolve())},
        )
        run_id = run.info.run_id
        client.log_batch(run_id, params=[Param(k, v) for k, v in _mlflow_params(config).items()])
        if (run_dir / "config.yaml").is_file():
            client.log_artifact(run_id, str(run_dir / "config.yaml"))
    except MlflowException as e:
        raise ConfigError(
            f"--tracker mlflow: the MLflow store {uri} cannot be used "
            f"({first_line(e)}); check MLFLOW_TRACKING_URI"
        ) from None
    fileio.write_json(
        record, {"tracking_uri": uri, "experiment_id": experiment_id, "run_id": run_id}
    )
    return _MlflowBackend(client, run_id)
