"""Callbacks: every hook is called where its name says, a True return stops training, and a
return value that is neither a bool nor None is one clear error naming the callback and the
hook. Errors raised from Python name keyword arguments, the CLI's name its flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import vaekit
from conftest import tiny_config
from vaekit import cli
from vaekit.errors import ConfigError


class Recorder(vaekit.Callback):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_train_start(self, trainer: Any) -> None:
        self.calls.append(f"train_start@{trainer.state.global_step}")

    def on_step_end(self, trainer: Any) -> None:
        self.calls.append("step")

    def on_validation_end(self, trainer: Any, record: dict[str, Any]) -> None:
        assert "val_nelbo" in record and "epoch" in record
        self.calls.append(f"validation{record['epoch']}")

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        self.calls.append(f"epoch{record['epoch']}")

    def on_train_end(self, trainer: Any) -> None:
        self.calls.append(f"train_end@{trainer.state.global_step}")


def test_every_hook_is_called_in_order(tmp_path: Path) -> None:
    recorder = Recorder()
    cfg = tiny_config(tmp_path / "run", **{"train.epochs": 2, "data.noise_examples": 128})
    vaekit.Trainer(None, cfg, callbacks=[recorder]).fit()
    # 128 examples, a tenth held out: 116 rows, two steps of 64 per epoch
    epoch = ["step", "step"]
    assert recorder.calls == (
        ["train_start@0", *epoch, "validation1", "epoch1", *epoch]
        + ["validation2", "epoch2", "train_end@4"]
    )


def test_no_validation_set_no_validation_hook(tmp_path: Path) -> None:
    recorder = Recorder()
    cfg = tiny_config(tmp_path / "run", **{"data.val_fraction": 0.0})
    vaekit.Trainer(None, cfg, callbacks=[recorder]).fit()
    assert not [c for c in recorder.calls if c.startswith("validation")]
    assert recorder.calls[-2:] == ["epoch1", "train_end@4"]


@pytest.mark.parametrize("hook", ["on_train_start", "on_step_end", "on_validation_end"])
def test_returning_true_from_a_hook_stops_training(hook: str, tmp_path: Path) -> None:
    class Stop(vaekit.Callback):
        pass

    setattr(Stop, hook, lambda self, trainer, *record: True)
    cfg = tiny_config(tmp_path / "run", **{"train.epochs": 3})
    trainer = vaekit.Trainer(None, cfg, callbacks=[Stop()])
    result = trainer.fit()
    steps = {"on_train_start": 0, "on_step_end": 1, "on_validation_end": 4}[hook]
    assert result.stopped_early and trainer.state.global_step == steps
    assert len(result.history) == (1 if hook == "on_validation_end" else 0)


@pytest.mark.parametrize(
    "hook", ["on_train_start", "on_step_end", "on_validation_end", "on_epoch_end", "on_train_end"]
)
def test_a_hook_returning_an_array_is_one_clear_error(hook: str, tmp_path: Path) -> None:
    class Bad(vaekit.Callback):
        pass

    setattr(Bad, hook, lambda self, trainer, *record: np.array([1.0, 2.0]))
    with pytest.raises(ConfigError, match=rf"the callback Bad.{hook} returned ndarray") as e:
        vaekit.Trainer(None, tiny_config(tmp_path / "run"), callbacks=[Bad()]).fit()
    assert "True (stop training), False or None" in str(e.value)


def test_a_function_returning_an_array_is_one_clear_error(tmp_path: Path) -> None:
    def stop_when_flat(record: dict[str, Any]) -> Any:
        return np.array([record["epoch"], 0.0]) > 0  # ambiguous as a truth value

    with pytest.raises(ConfigError, match="the callback function stop_when_flat returned"):
        vaekit.Trainer(None, tiny_config(tmp_path / "run"), callbacks=[stop_when_flat]).fit()


def test_errors_from_python_name_keywords_and_from_the_cli_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tiny_config(tmp_path / "run")
    vaekit.Trainer(None, cfg).fit()
    with pytest.raises(ConfigError) as e:
        vaekit.Trainer(None, cfg).fit()
    message = str(e.value)
    assert "pass resume=True to continue it, overwrite=True to replace it" in message
    assert "--" not in message
    with pytest.raises(ConfigError, match="resume=True and overwrite=True contradict"):
        vaekit.Trainer(None, cfg, resume=True, overwrite=True).fit()
    args = ["train", "--data", "noise", "--data.noise_examples", "256", "--epochs", "1"]
    args += ["--model.hidden", "[32]", "--train.progress", "false", "--out", str(cfg.train.out)]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "pass --resume to continue it, --overwrite to replace it" in err


def test_a_numpy_bool_stops_training_like_a_bool(tmp_path: Path) -> None:
    """`return record["val_nelbo"] > np.float64(...)` gives numpy.bool_: one truth value."""

    class Stop(vaekit.Callback):
        def on_validation_end(self, trainer: Any, record: dict[str, Any]) -> Any:
            return np.float64(record["val_nelbo"]) > -np.inf

    cfg = tiny_config(tmp_path / "run", **{"train.epochs": 3})
    result = vaekit.Trainer(None, cfg, callbacks=[Stop()]).fit()
    assert result.stopped_early and len(result.history) == 1
