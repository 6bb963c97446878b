"""wandb and TensorBoard, offline, read back from what they wrote; missing packages."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vaekit
from conftest import assert_clean_error, run_cli, tiny_config
from vaekit.errors import ConfigError
from vaekit.tracking import WANDB_ID_FILE, read_metrics

STEPS_PER_EPOCH = 4  # tiny_config: 256 noise images less the test tenth, batch 64


# -- reading back -----------------------------------------------------------------------------
def wandb_records(run_dir: Path, path: Path | None = None) -> list[object]:
    """The records of the (single) offline run in run_dir/wandb, from its .wandb log.

    The file is wandb's LevelDB-style log: a 7-byte header, then 32 KiB blocks of chunks
    (CRC 4 bytes, length 2, type 1: full / first / middle / last), each record a protobuf.
    """
    if path is None:
        (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    deadline = time.monotonic() + 30
    from google.protobuf.message import DecodeError

    while True:  # wandb's service may still be writing the log when finish() has returned
        try:
            records = _read_wandb_log(path)
        except DecodeError:  # a record caught half-written: read again
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            continue
        kinds = [r.WhichOneof("record_type") for r in records]  # type: ignore[attr-defined]
        if "exit" in kinds or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _read_wandb_log(path: Path) -> list[object]:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending, chunks = 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header: padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            chunks.append(chunk)
        elif kind in (2, 3):
            pending = (pending if kind == 3 else b"") + chunk
        elif kind == 4:
            chunks.append(pending + chunk)
        else:
            break
    records = []
    for chunk in chunks:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(chunk)
        records.append(record)
    return records


def wandb_history(run_dir: Path) -> dict[int, dict[str, object]]:
    """step -> {key: value} of everything the run logged."""
    rows: dict[int, dict[str, object]] = {}
    for r in wandb_records(run_dir):
        if r.WhichOneof("record_type") == "history":  # type: ignore[attr-defined]
            row = {
                ("/".join(i.nested_key) or i.key): json.loads(i.value_json) for i in r.history.item
            }  # type: ignore[attr-defined]
            rows.setdefault(int(row["_step"]), {}).update(row)  # type: ignore[arg-type]
    return rows


def tensorboard_events(run_dir: Path) -> object:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def offline_wandb(mp: pytest.MonkeyPatch, root: Path) -> None:
    """wandb without network, its caches and settings in the test's directory."""
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    for name in ("CACHE", "CONFIG", "DATA", "ARTIFACT"):
        mp.setenv(f"WANDB_{name}_DIR", str(root / f"wandb-{name.lower()}"))


# -- wandb ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("wandb") / "run"
    with pytest.MonkeyPatch.context() as mp:
        offline_wandb(mp, out.parent)
        yield vaekit.train(
            tiny_config(
                out,
                **{
                    "train.epochs": 2,
                    "train.tracker": ["wandb"],
                    "train.log_images_every": 3,
                    "train.wandb_project": "vaekit-tests",
                    "train.run_name": "offline-test",
                },
            )
        )


def test_wandb_offline_run_has_the_config_project_and_name(wandb_run: Path) -> None:
    (run,) = [r.run for r in wandb_records(wandb_run) if r.WhichOneof("record_type") == "run"]  # type: ignore[attr-defined]
    assert run.project == "vaekit-tests" and run.display_name == "offline-test"
    assert run.run_id == (wandb_run / WANDB_ID_FILE).read_text().strip()
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["model"]["latent_dim"] == 4 and config["data"]["name"] == "noise"
    assert config["train"]["tracker"] == ["wandb"]


def test_wandb_logs_epoch_scalars_as_metrics_jsonl_has_them(wandb_run: Path) -> None:
    history = wandb_history(wandb_run)
    epochs = read_metrics(wandb_run)  # metrics.jsonl is written whatever the trackers
    assert [r["step"] for r in epochs] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    for record in epochs:
        row = history[record["step"]]
        for key in ("train_nelbo", "val_nelbo", "train_kl", "lr", "epoch"):
            assert row[key] == pytest.approx(record[key]), key
        assert "time" not in row  # a wall-clock stamp is not plotted as a metric


def test_wandb_logs_step_scalars_and_images_every_n_steps(wandb_run: Path) -> None:
    history = wandb_history(wandb_run)
    every_n = {3, 6}  # log_images_every: 3, eight steps
    epoch_ends = {STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH}
    assert set(history) == every_n | epoch_ends
    for step in every_n:
        assert {"loss", "nelbo", "recon", "kl"} <= set(history[step])
    media = wandb_run / "wandb"
    for step in every_n | epoch_ends:
        for key in ("samples", "reconstructions"):
            assert history[step][f"{key}/_type"] == "image-file"
            (png,) = media.glob(f"offline-run-*/files/{history[step][f'{key}/path']}")
            image = np.asarray(Image.open(png))
            assert image.ndim == 2 and image.std() > 0  # a grayscale grid, not a blank
    # the epoch's last images are the run's own samples.png (which is upscaled 2x)
    (samples,) = media.glob(f"offline-run-*/files/{history[8]['samples/path']}")
    saved = np.asarray(Image.open(wandb_run / "samples.png"))
    assert np.array_equal(np.asarray(Image.open(samples)), saved[::2, ::2])


def test_wandb_resume_continues_the_same_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    offline_wandb(monkeypatch, tmp_path)
    config = tiny_config(tmp_path / "run", **{"train.tracker": ["wandb"]})
    run = vaekit.train(config)
    first = (run / WANDB_ID_FILE).read_text()
    config.train.epochs = 2
    vaekit.train(config, resume=True)
    assert (run / WANDB_ID_FILE).read_text() == first
    logs = sorted((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 2  # offline, each session writes its own log; `wandb sync` joins them
    for log in logs:
        (record,) = [
            r.run
            for r in wandb_records(run, log)  # type: ignore[attr-defined]
            if r.WhichOneof("record_type") == "run"
        ]  # type: ignore[attr-defined]
        assert record.run_id == first.strip()


# -- TensorBoard ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tb") / "run"
    return vaekit.train(
        tiny_config(
            out,
            **{"train.epochs": 2, "train.tracker": ["tensorboard"], "train.log_images_every": 3},
        )
    )


def test_tensorboard_logs_epoch_and_step_scalars(tensorboard_run: Path) -> None:
    acc = tensorboard_events(tensorboard_run)
    epochs = read_metrics(tensorboard_run)
    for key in ("train_nelbo", "val_nelbo", "train_kl", "lr"):
        events = acc.Scalars(key)  # type: ignore[attr-defined]
        assert [e.step for e in events] == [r["step"] for r in epochs]
        assert [e.value for e in events] == pytest.approx([r[key] for r in epochs], rel=1e-6)
    assert [e.step for e in acc.Scalars("loss")] == [3, 6]  # type: ignore[attr-defined]
    assert "time" not in acc.Tags()["scalars"]  # type: ignore[attr-defined]


def test_tensorboard_logs_images_and_the_config(tensorboard_run: Path) -> None:
    acc = tensorboard_events(tensorboard_run)
    for key in ("samples", "reconstructions"):
        events = acc.Images(key)  # type: ignore[attr-defined]
        assert [e.step for e in events] == [3, 4, 6, 8]
        last = np.asarray(Image.open(io.BytesIO(events[-1].encoded_image_string)))
        saved = np.asarray(Image.open(tensorboard_run / f"{key}.png"))  # upscaled 2x
        assert np.array_equal(last[..., 0], saved[::2, ::2])  # gray, stored as RGB
    text = acc.Tensors("config/text_summary")  # type: ignore[attr-defined]
    assert b"latent_dim: 4" in text[0].tensor_proto.string_val[0]


def test_both_trackers_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    offline_wandb(monkeypatch, tmp_path)
    run = vaekit.train(
        tiny_config(tmp_path / "run", **{"train.tracker": ["wandb", "tensorboard", "wandb"]})
    )
    steps = [r["step"] for r in read_metrics(run)]
    assert [e.step for e in tensorboard_events(run).Scalars("train_nelbo")] == steps  # type: ignore[attr-defined]
    assert wandb_history(run)[steps[-1]]["train_nelbo"] == pytest.approx(
        read_metrics(run)[-1]["train_nelbo"]
    )


# -- missing packages -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["wandb", "tensorboard"])
def test_a_tracker_that_is_not_installed_is_one_clear_line(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, kind, None)  # as if the extra were not installed
    with pytest.raises(
        ConfigError,
        match=rf"--train.tracker {kind} needs the {kind} "
        rf"package: pip install 'vaekit\[{kind}\]'",
    ) as e:
        vaekit.train(tiny_config(tmp_path / "run", **{"train.tracker": [kind]}))
    assert "\n" not in str(e.value)
    assert read_metrics(tmp_path / "run") == []  # nothing trained before the error


def test_a_missing_tracker_from_the_cli(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['wandb'] = None; from vaekit.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "train",
            "--data",
            "noise",
            "--model.hidden",
            "8",
            "--data.noise_examples",
            "64",
            "--train.tracker",
            "wandb",
            "--out",
            str(tmp_path / "run"),
            "--train.progress",
            "false",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert_clean_error(result, "pip install 'vaekit[wandb]'")
    assert_clean_error(run_cli("train", "--train.tracker", "nosuch", "--data", "noise"), "nosuch")
