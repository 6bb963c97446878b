"""A run records where its data came from, and every command that reads examples takes
--data: data passed from Python is never replaced by the config's default dataset, a file
that changed since training is refused, and the model card names the data honestly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import vaekit
from conftest import assert_one_line_error, tiny_config
from vaekit import cli
from vaekit.errors import DataError
from vaekit.publish import plan_push


def images(n: int, seed: int = 0, size: int = 28) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 1, size, size), dtype=np.uint8)


@pytest.fixture(scope="module")
def python_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained on data passed from Python, with a config whose data.name is
    Fashion-MNIST (the default a command must never fall back to)."""
    out = tmp_path_factory.mktemp("py") / "run"
    config = tiny_config(out, **{"data.name": "fashion-mnist"})
    x = torch.from_numpy(images(120))
    return vaekit.Trainer(None, config, data=TensorDataset(x)).fit().run_dir


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_config_json_records_data_passed_from_python(python_run: Path) -> None:
    meta = json.loads((python_run / "config.json").read_text())
    assert meta["data_source"]["kind"] == "python"
    assert vaekit.load(python_run).data_source == meta["data_source"]


def test_a_python_trained_run_refuses_to_evaluate_without_data(
    python_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    commands = ("evaluate", "reconstruct", "interpolate", "latents", "kl", "report", "explore")
    for command in commands:
        code, _, err = run(capsys, command, python_run)
        assert_one_line_error(code, err, "passed from Python", "--data")
    for command in ("encode", "score"):  # they wrote the config's default dataset's rows
        out = python_run.parent / f"{command}.npy"
        code, _, err = run(capsys, command, python_run, "--out", out)
        assert_one_line_error(code, err, "passed from Python", "--data")
        assert not out.exists()


def test_a_python_trained_run_encodes_and_scores_the_data_given(
    python_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "mine.npy", images(30, seed=2))
    for command in ("encode", "score"):
        out = tmp_path / f"{command}.npz"
        code, _, _ = run(capsys, command, python_run, "--data", tmp_path / "mine.npy", "--out", out)
        assert code == 0
        assert len(np.load(out)["id"]) == 30  # all of a --data source by default


def test_a_python_trained_run_evaluates_on_the_data_given(
    python_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "mine.npy", images(50, seed=1))
    code, out, _ = run(capsys, "evaluate", python_run, "--data", tmp_path / "mine.npy", "--json")
    assert code == 0
    stats = json.loads(out)
    assert stats["n"] == 5  # the 10% training would hold out of 50 (data.test_fraction)
    code, out, _ = run(
        capsys, "evaluate", python_run, "--data", tmp_path / "mine.npy", "--split", "all", "--json"
    )
    assert code == 0 and json.loads(out)["n"] == 50
    png = tmp_path / "r.png"
    code, _, _ = run(
        capsys, "reconstruct", python_run, "--data", tmp_path / "mine.npy", "--out", png
    )
    assert code == 0 and png.is_file()
    code, _, _ = run(
        capsys, "latents", python_run, "--data", tmp_path / "mine.npy", "--out", tmp_path / "l.png"
    )
    assert code == 0
    report = tmp_path / "report"
    args = ["report", python_run, "--data", tmp_path / "mine.npy", "--out", report]
    code, _, _ = run(capsys, *args, "--iw-samples", "0")
    assert code == 0 and "mine" in (report / "report.html").read_text()


def test_explore_serves_the_data_given(
    python_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    from vaekit.viz.explore import server

    served = []
    monkeypatch.setattr(server.ExplorerServer, "serve_forever", lambda self: served.append(self))
    np.save(tmp_path / "mine.npy", images(50, seed=1))
    code, out, _ = run(capsys, "explore", python_run, "--data", tmp_path / "mine.npy", "--port", 0)
    assert code == 0 and "http://127.0.0.1:" in out
    assert served[0].RequestHandlerClass.explorer.x.shape[0] == 5


def test_every_split_is_a_choice_of_split(
    python_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vaekit import loading
    from vaekit.cli import core

    assert core.SPLITS == loading.SPLITS
    np.save(tmp_path / "mine.npy", images(50, seed=1))
    counts = {}
    for split in core.SPLITS:
        args = ["evaluate", python_run, "--data", tmp_path / "mine.npy", "--split", split]
        code, out, _ = run(capsys, *args, "--json")
        counts[split] = json.loads(out)["n"]
    # 5 held out for test, then data.val_fraction (0.1) of the other 45: 4 for validation
    assert counts == {"test": 5, "train": 41, "val": 4, "all": 50}


def test_data_of_another_shape_is_one_line(
    python_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "big.npy", images(20, size=32))
    code, _, err = run(capsys, "evaluate", python_run, "--data", tmp_path / "big.npy")
    assert_one_line_error(code, err, "(1, 32, 32)", "(1, 28, 28)")


def test_the_card_of_a_python_trained_run_names_no_dataset(
    python_run: Path, tmp_path: Path
) -> None:
    plan = plan_push(python_run, "me/model", run_evaluate=False)
    card = plan.files["README.md"]
    assert isinstance(card, bytes)
    text = card.decode()
    front = text.split("---")[1]
    assert "datasets" not in front and "fashion" not in front
    assert "| data | data passed from Python" in text
    with pytest.raises(DataError, match="passed from Python"):
        plan_push(python_run, "me/model", iw_samples=0)
    np.save(tmp_path / "mine.npy", images(50, seed=1))
    plan = plan_push(python_run, "me/model", iw_samples=0, data=str(tmp_path / "mine.npy"))
    evaluated = plan.files["README.md"]
    assert isinstance(evaluated, bytes) and b"on the test split of mine (5 images)" in evaluated


def test_a_named_dataset_run_keeps_its_hub_dataset_tag(trained_run: Path, tmp_path: Path) -> None:
    from vaekit.io import card

    config = tiny_config(tmp_path / "run", **{"data.name": "fashion-mnist"})
    text = card.model_card(
        "me/x",
        architecture=vaekit.load(trained_run).architecture(),
        parameters=1,
        config=config,
        data_source={"kind": "named", "name": "fashion-mnist"},
    )
    assert "zalando-datasets/fashion_mnist" in text.split("---")[1]


@pytest.fixture
def file_run(tmp_path: Path) -> tuple[Path, Path]:
    """A run trained on an .npy file named by a relative path."""
    data = tmp_path / "data.npy"
    np.save(data, images(100))
    config = tiny_config(tmp_path / "run", **{"data.name": str(data)})
    return vaekit.train(config), data


def test_a_file_run_reloads_its_file_from_anywhere(
    file_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    run_dir, data = file_run
    record = json.loads((run_dir / "config.json").read_text())["data_source"]
    assert record["kind"] == "file" and record["path"] == str(data.resolve())
    monkeypatch.chdir("/")
    code, out, _ = run(capsys, "evaluate", run_dir, "--json")
    assert code == 0 and json.loads(out)["n"] == 10


def test_a_file_changed_since_training_is_refused(
    file_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, data = file_run
    np.save(data, images(100, seed=7))  # the same shape, other images
    code, _, err = run(capsys, "evaluate", run_dir)
    assert_one_line_error(code, err, "changed since", f"--data {data.resolve()}")
    for command in ("encode", "score"):  # they read the run's data through loading too
        code, _, err = run(capsys, command, run_dir, "--out", data.parent / f"{command}.npy")
        assert_one_line_error(code, err, "changed since", f"--data {data.resolve()}")
    code, out, _ = run(capsys, "evaluate", run_dir, "--data", data, "--json")
    assert code == 0 and json.loads(out)["n"] == 10


def _before_the_record(run_dir: Path, to: Path, state: bool = True) -> Path:
    """A copy of run_dir as vaekit 0.2 wrote it: config.json without `data_source`."""
    to.mkdir()
    meta = json.loads((run_dir / "config.json").read_text())
    meta.pop("data_source")
    (to / "config.json").write_text(json.dumps(meta))
    files = ("model.safetensors", "state.pt") if state else ("model.safetensors",)
    for name in files:
        (to / name).write_bytes((run_dir / name).read_bytes())
    return to


def test_a_run_from_before_the_record_evaluates_its_configs_data_as_its_state_shows(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """state.pt's fingerprint shows that the config's dataset is what the run trained on."""
    old = _before_the_record(trained_run, tmp_path / "old")
    code, out, _ = run(capsys, "evaluate", old, "--json")
    assert code == 0 and json.loads(out)["n"] == 26  # 10% of the 256 noise examples
    code, _, _ = run(capsys, "encode", old, "--out", tmp_path / "z.npy")
    assert code == 0 and np.load(tmp_path / "z.npy").shape == (26, 4)


def test_a_python_run_from_before_the_record_is_refused_without_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """vaekit 0.2 recorded no data_source: a run trained from Python on images of the
    config's dataset's shape silently evaluated that dataset. Its state.pt's fingerprint
    is not the config's data's, so it is refused, asking for --data."""
    x = torch.from_numpy(images(120))
    trained = vaekit.Trainer(None, tiny_config(tmp_path / "py"), data=TensorDataset(x)).fit()
    old = _before_the_record(trained.run_dir, tmp_path / "old")
    for command in ("evaluate", "encode", "score"):
        out = ("--out", tmp_path / f"{command}.npy") if command != "evaluate" else ()
        code, _, err = run(capsys, command, old, *out)
        assert_one_line_error(code, err, "other data than its config's", "--data")
    np.save(tmp_path / "mine.npy", x.numpy())
    code, out, _ = run(capsys, "evaluate", old, "--data", tmp_path / "mine.npy", "--json")
    assert code == 0 and json.loads(out)["n"] == 12
    # a model folder from before the record, without its state.pt, cannot tell either way
    folder = _before_the_record(trained.run_dir, tmp_path / "folder", state=False)
    code, _, err = run(capsys, "evaluate", folder)
    assert_one_line_error(code, err, "does not record what data", "--data")


def test_data_loaded_from_the_config_and_passed_in_stays_reloadable(tmp_path: Path) -> None:
    """`vaekit reproduce` loads config.data once and passes it to each Trainer: its runs
    record the config's dataset, not "passed from Python"."""
    from vaekit.data import load_data

    config = tiny_config(tmp_path / "run")
    result = vaekit.Trainer(None, config, data=load_data(config.data, progress=False)).fit()
    assert vaekit.load(result.run_dir).data_source == {"kind": "noise", "name": "noise"}
