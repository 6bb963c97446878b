"""Honest model selection: training evaluates and selects on a validation split carved
from the training data (or given), never on the test set; `train.keep: best` saves the
best validation epoch, `train.patience` stops early, and both resume bit-identically."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vaekit
from conftest import tiny_config
from vaekit.data import Dataset, load_data
from vaekit.data.core.validation import carve_validation
from vaekit.errors import ConfigError, DataError
from vaekit.io import checkpoint
from vaekit.viz.figures import write_images

# 32 noise images, half of them as validation, a wide net and a high learning rate: the
# validation -ELBO is best at epoch 8 of 10 and worse after (seeded: the same every run)
OVERFIT = {
    "data.noise_examples": 32,
    "data.val_fraction": 0.5,
    "train.batch_size": 8,
    "train.epochs": 10,
    "optim.lr": 0.01,
    "model.hidden": [64],
    "model.latent_dim": 8,
}
BEST_EPOCH = 8


class Untouchable:
    """Stands in for the test set: any use of it at all is recorded and raises."""

    def __init__(self, name: str, touched: list[str]) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_touched", touched)

    def __getattribute__(self, attr: str) -> Any:
        if attr in ("_name", "_touched", "__class__"):
            return object.__getattribute__(self, attr)
        object.__getattribute__(self, "_touched").append(
            f"{object.__getattribute__(self, '_name')}.{attr}"
        )
        raise AssertionError(f"training touched the test set ({attr})")

    def __getitem__(self, key: Any) -> Any:
        self._touched.append(f"{self._name}[...]")
        raise AssertionError("training touched the test set ([...])")

    def __len__(self) -> int:
        self._touched.append(f"len({self._name})")
        raise AssertionError("training touched the test set (len)")


def _records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


class _Snapshots(vaekit.Callback):
    """The shown model's weights at the end of every epoch."""

    def __init__(self) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        state = trainer.shown.state_dict()
        self.weights[record["epoch"]] = {k: v.detach().clone() for k, v in state.items()}


# -- the test set is never read ---------------------------------------------------------------
def test_training_never_reads_the_test_set(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "run")
    real = load_data(cfg.data, progress=False)
    touched: list[str] = []
    data = Dataset(
        real.name,
        real.x_train,
        Untouchable("x_test", touched),  # type: ignore[arg-type]
        real.y_train,
        Untouchable("y_test", touched),  # type: ignore[arg-type]
        list(real.class_names),
    )
    overrides = {
        "train.keep": "best",
        "train.patience": 3,
        "train.epochs": 2,
        "train.checkpoint_every": 2,
        "train.log_images_every": 1,
        "optim.ema": 0.9,
        "model.conditional": True,  # labels of every split in use
    }
    cfg = tiny_config(tmp_path / "run", **overrides)
    half = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1))
    vaekit.Trainer(None, half, data=data).fit()
    result = vaekit.Trainer(None, cfg, data=data, resume=True).fit()  # the resume path too
    assert touched == []
    assert [r["epoch"] for r in _records(result.run_dir)] == [1, 2]
    for record in result.history:
        assert "val_nelbo" in record and not any(k.startswith("test") for k in record)


# -- the split --------------------------------------------------------------------------------
def test_the_validation_split_is_carved_seeded_and_disjoint() -> None:
    x = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1).expand(100, 1, 2, 2)
    data = Dataset("rows", x.contiguous(), x[:5].clone(), torch.arange(100), None, [])
    a = carve_validation(data, 0.2, seed=3)
    assert a.x_val is not None and a.y_val is not None and a.y_train is not None
    assert a.x_train.shape[0] == 80 and a.x_val.shape[0] == 20
    rows = sorted(a.y_train.tolist() + a.y_val.tolist())
    assert rows == list(range(100))  # every row on exactly one side, labels with their images
    assert torch.equal(a.x_val[:, 0, 0, 0].long(), a.y_val)
    assert a.info["validation"] == {
        "source": "carved",
        "fraction": 0.2,
        "seed": 3,
        "train": 80,
        "val": 20,
    }
    b = carve_validation(data, 0.2, seed=3)
    assert torch.equal(a.y_val, b.y_val)  # seeded
    assert not torch.equal(a.y_val, carve_validation(data, 0.2, seed=4).y_val)
    assert carve_validation(data, 0.0, seed=3).x_val is None
    assert data.x_val is None and "validation" not in data.info  # the caller's is untouched
    four = carve_validation(dataclasses.replace(data, x_train=x[:4], y_train=None), 0.1, 0)
    assert four.x_val is not None and four.x_val.shape[0] == 1  # a small set still gets one
    with pytest.raises(DataError, match=r"val_fraction=0.1 of the 1 training examples"):
        carve_validation(dataclasses.replace(data, x_train=x[:1], y_train=None), 0.1, 0)


def test_an_npz_with_its_own_validation_set_keeps_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    x_val = rng.integers(0, 256, (7, 8, 8), dtype=np.uint8)
    np.savez(path, x_train=rng.integers(0, 256, (40, 8, 8), dtype=np.uint8), x_val=x_val)
    data = load_data(tiny_config(tmp_path, **{"data.name": str(path)}).data, progress=False)
    assert data.x_val is not None and np.array_equal(data.x_val[:, 0].numpy(), x_val)
    assert data.x_train.shape[0] == 36 and data.x_test.shape[0] == 4  # only the test split
    assert data.info["validation"] == {"source": "explicit", "train": 36, "val": 7}
    np.savez(path, x_train=x_val, y_val=np.zeros(7, dtype=np.int64))
    with pytest.raises(DataError, match="y_val but no x_val"):
        load_data(tiny_config(tmp_path, **{"data.name": str(path)}).data, progress=False)


def test_keep_best_and_patience_without_a_validation_set_are_one_line(tmp_path: Path) -> None:
    for option, value in (("train.keep", "best"), ("train.patience", 2)):
        cfg = tiny_config(tmp_path / option, **{"data.val_fraction": 0.0, option: value})
        with pytest.raises(ConfigError, match="no validation set") as error:
            vaekit.train(cfg)
        assert "\n" not in str(error.value)
    run = vaekit.train(tiny_config(tmp_path / "none", **{"data.val_fraction": 0.0}))
    assert not any(k.startswith(("val_", "test_")) for k in _records(run)[-1])


# -- keep: best and patience ------------------------------------------------------------------
def test_keep_best_saves_the_best_validation_epoch(tmp_path: Path) -> None:
    snapshots = _Snapshots()
    cfg = tiny_config(tmp_path / "best", **OVERFIT, **{"train.keep": "best"})
    result = vaekit.Trainer(None, cfg, callbacks=[snapshots]).fit()
    val = [r["val_nelbo"] for r in _records(result.run_dir)]
    assert len(val) == 10 and 1 + int(np.argmin(val)) == BEST_EPOCH  # not the last epoch
    assert result.best_epoch == BEST_EPOCH
    saved = _weights(result.run_dir)
    for key, value in snapshots.weights[BEST_EPOCH].items():
        assert torch.equal(saved[key], value), key
        assert torch.equal(result.model.state_dict()[key], value), key  # fit returns it too
    # the pictures are the saved model's too: drawn again from it, byte for byte the same
    data = load_data(cfg.data, progress=False)
    again = tmp_path / "again"
    again.mkdir()
    write_images(vaekit.load(result.run_dir), data.x_val, data.y_val, again, seed=cfg.train.seed)
    for name in ("samples.png", "reconstructions.png"):
        assert (again / name).read_bytes() == (result.run_dir / name).read_bytes(), name
    state = checkpoint.load_state(result.run_dir / checkpoint.STATE_FILE)
    assert state["best_epoch"] == BEST_EPOCH and state["best_val_nelbo"] == min(val)
    assert state["epoch"] == 10  # state.pt holds the last epoch, for resuming
    last = tiny_config(tmp_path / "last", **OVERFIT)
    saved_last = _weights(vaekit.train(last))
    assert all(torch.equal(saved_last[k], v) for k, v in snapshots.weights[10].items())


def test_early_stopping_stops_after_patience_epochs_without_improvement(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "p", **{**OVERFIT, "train.patience": 2, "train.epochs": 30})
    result = vaekit.Trainer(None, cfg).fit()
    records = _records(result.run_dir)
    assert result.stopped_early and result.best_epoch == BEST_EPOCH
    assert [r["epoch"] for r in records] == list(range(1, BEST_EPOCH + 3))
    assert min(r["val_nelbo"] for r in records[BEST_EPOCH:]) >= records[BEST_EPOCH - 1]["val_nelbo"]
    with pytest.raises(ConfigError, match="stopped early at epoch 10") as error:
        vaekit.train(cfg, resume=True)
    assert "raise train.patience" in str(error.value)
    more = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, patience=3))
    vaekit.train(more, resume=True)  # patience may grow on resume: one more epoch, then stop
    assert len(_records(result.run_dir)) == BEST_EPOCH + 3


@pytest.mark.parametrize("stop_at", [4, 9])
def test_resume_with_keep_best_and_patience_is_bit_identical(tmp_path: Path, stop_at: int) -> None:
    options = {**OVERFIT, "train.keep": "best", "train.patience": 2, "train.epochs": 30}
    whole = vaekit.train(tiny_config(tmp_path / "whole", **options))
    cfg = tiny_config(tmp_path / "halves", **options)
    vaekit.train(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=stop_at)))
    halves = vaekit.train(cfg, resume=True)
    assert (halves / "model.safetensors").read_bytes() == (whole / "model.safetensors").read_bytes()
    a, b = (checkpoint.load_state(r / checkpoint.STATE_FILE) for r in (whole, halves))
    for key in ("epoch", "best_epoch", "best_val_nelbo", "validation"):
        assert a[key] == b[key], key
    assert a["epoch"] == BEST_EPOCH + 2  # both stopped at the same epoch
    for x, y in zip(_records(whole), _records(halves), strict=True):
        assert x["val_nelbo"] == y["val_nelbo"] and x["train_nelbo"] == y["train_nelbo"]


def test_an_old_state_without_the_best_epoch_resumes(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "old", **{**OVERFIT, "train.epochs": 2})
    run = vaekit.train(cfg)
    state = checkpoint.load_state(run / checkpoint.STATE_FILE)
    for key in ("best_epoch", "best_val_nelbo", "validation"):
        del state[key]  # as a state.pt written before validation sets existed
    checkpoint.save_state(run / checkpoint.STATE_FILE, state)
    more = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=3))
    vaekit.train(more, resume=True)
    state = checkpoint.load_state(run / checkpoint.STATE_FILE)
    assert state["epoch"] == 3 and state["best_epoch"] == 3  # counted from the resume on


def test_the_validation_split_is_recorded_and_the_same_on_resume(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.integers(0, 256, (200, 8, 8), dtype=np.uint8))
    cfg = tiny_config(tmp_path / "run", **{"data.name": str(path), "data.split_seed": 5})
    run = vaekit.train(cfg)
    first = checkpoint.load_state(run / checkpoint.STATE_FILE)
    expected = {"source": "carved", "fraction": 0.1, "seed": 5, "train": 162, "val": 18}
    assert first["validation"] == expected  # 200 - 20 test, then 10% of 180
    more = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=2))
    vaekit.train(more, resume=True)
    again = checkpoint.load_state(run / checkpoint.STATE_FILE)
    assert again["validation"] == expected and again["data"] == first["data"]
    other = copy.deepcopy(more)
    other.data.val_fraction = 0.2  # another split would be another run: refused
    other.train.epochs = 3
    with pytest.raises(ConfigError, match=r"data.val_fraction: 0.1 -> 0.2"):
        vaekit.train(other, resume=True)


def test_a_run_saved_before_validation_sets_resumes_without_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.integers(0, 256, (100, 8, 8), dtype=np.uint8))
    cfg = tiny_config(tmp_path / "run", **{"data.name": str(path), "data.val_fraction": 0.0})
    run = vaekit.train(cfg)
    # as written before data.val_fraction existed: neither state.pt nor config.yaml has it
    state = checkpoint.load_state(run / checkpoint.STATE_FILE)
    del state["config"]["data"]["val_fraction"]
    checkpoint.save_state(run / checkpoint.STATE_FILE, state)
    text = (run / "config.yaml").read_text().replace("  val_fraction: 0.0\n", "")
    (run / "config.yaml").write_text(text)
    resumed = vaekit.load_config(str(run / "config.yaml"), {"train.epochs": 2})
    assert resumed.data.val_fraction == 0.1  # the default today...
    vaekit.train(resumed, resume=True)  # ...but the run resumes on the data it trained on
    assert [sorted(k for k in r if k.startswith("val_")) for r in _records(run)] == [[], []]
    resumed.data.val_fraction = 0.2  # a value set on purpose is a change of the run
    resumed.train.epochs = 3
    with pytest.raises(ConfigError, match=r"data.val_fraction: 0.0 -> 0.2"):
        vaekit.train(resumed, resume=True)
