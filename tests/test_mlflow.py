"""`--train.tracker mlflow` against local MLflow stores, read back with MLflow's own client."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

import vaekit
from conftest import tiny_config
from vaekit.config import iter_fields
from vaekit.errors import ConfigError
from vaekit.tracking import MLFLOW_RUN_FILE, read_metrics

# MLflow 3.17 with SQLAlchemy 2.1 warns about its own ORM options; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A 2-epoch run with the mlflow tracker and no MLFLOW_TRACKING_URI: (cwd, run dir)."""
    cwd = tmp_path_factory.mktemp("mlflow-default")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        run_dir = vaekit.train(
            tiny_config(cwd / "run", **{"train.epochs": 2, "train.tracker": ["mlflow"]})
        )
    yield cwd, run_dir


def _record(run_dir: Path) -> dict[str, str]:
    return json.loads((run_dir / MLFLOW_RUN_FILE).read_text())


def test_default_store_is_mlruns_in_the_current_directory(tracked: tuple[Path, Path]) -> None:
    cwd, run_dir = tracked
    record = _record(run_dir)
    assert record["tracking_uri"] == f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=record["tracking_uri"])
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert client.get_experiment(run.info.experiment_id).name == "vaekit"
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(cwd / "mlruns")


def test_params_metrics_and_images_read_back(tracked: tuple[Path, Path]) -> None:
    _, run_dir = tracked
    record = _record(run_dir)
    client = MlflowClient(tracking_uri=record["tracking_uri"])
    run = client.get_run(record["run_id"])
    config = vaekit.load(run_dir).run_config
    assert set(run.data.params) == {key for key, _, _ in iter_fields()}  # every option
    assert run.data.params["model.latent_dim"] == str(config.model.latent_dim)
    assert run.data.params["train.tracker"] == "['mlflow']"
    assert run.data.tags["vaekit.version"] == vaekit.__version__

    epochs = read_metrics(run_dir)
    for key in ("train_nelbo", "val_nelbo", "train_kl", "lr"):
        history = client.get_metric_history(record["run_id"], key)
        assert [m.step for m in history] == [r["step"] for r in epochs], key
        assert [m.value for m in history] == pytest.approx([r[key] for r in epochs]), key

    images = sorted(a.path for a in client.list_artifacts(record["run_id"], "images"))
    steps = [r["step"] for r in epochs]
    assert images == sorted(
        f"images/{k}_step{s:08d}.png" for k in ("samples", "reconstructions") for s in steps
    )
    local = Path(client.download_artifacts(record["run_id"], images[-1], str(run_dir.parent)))
    grid = np.asarray(Image.open(local))
    assert grid.dtype == np.uint8 and grid.ndim == 2 and grid.std() > 0  # grayscale samples
    config_file = client.download_artifacts(record["run_id"], "config.yaml", str(local.parent))
    assert Path(config_file).read_text() == (run_dir / "config.yaml").read_text()


def test_resume_continues_the_same_mlflow_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tracked: tuple[Path, Path]
) -> None:
    cwd, _ = tracked
    monkeypatch.chdir(cwd)  # the store made by `tracked`: no second database to create
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = tiny_config(tmp_path / "run", **{"train.tracker": ["mlflow"]})
    run_dir = vaekit.train(config)
    first = _record(run_dir)
    config.train.epochs = 2
    vaekit.train(config, resume=True)
    assert _record(run_dir) == first
    client = MlflowClient(tracking_uri=first["tracking_uri"])
    history = client.get_metric_history(first["run_id"], "epoch")
    assert [m.value for m in history] == [1.0, 2.0]
    assert client.get_run(first["run_id"]).info.status == "FINISHED"


def test_mlflow_tracking_uri_is_honoured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tracked: tuple[Path, Path]
) -> None:
    cwd, _ = tracked
    store = tmp_path / "elsewhere.db"
    shutil.copy(cwd / "mlruns" / "mlflow.db", store)  # an existing store, already migrated
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    run_dir = vaekit.train(
        tiny_config(tmp_path / "run", **{"train.tracker": ["mlflow"], "train.run_name": "named"})
    )
    record = _record(run_dir)
    assert record["tracking_uri"] == f"sqlite:///{store}"
    run = MlflowClient(tracking_uri=record["tracking_uri"]).get_run(record["run_id"])
    assert run.info.run_name == "named"
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()
    default = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")
    assert all(
        r.info.run_id != record["run_id"] for r in default.search_runs([run.info.experiment_id])
    )


def test_mlflow_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://store")
    with pytest.raises(ConfigError, match="MLflow store nosuchscheme://store cannot be used"):
        vaekit.train(tiny_config(tmp_path / "a", **{"train.tracker": ["mlflow"]}))
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match=r"pip install 'vaekit\[mlflow\]'"):
        vaekit.train(tiny_config(tmp_path / "b", **{"train.tracker": ["mlflow"]}))
