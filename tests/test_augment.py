"""Random crops and flips of a folder's training images (data.augment): the windows and
mirrors each image gets, the decoded margin and the centred evaluation sets, seeded
reproducible batches, a bit-identical resume, and the refusals."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vaekit
from conftest import assert_one_line_error
from vaekit import cli
from vaekit.data import load_data
from vaekit.data.core import augment
from vaekit.errors import ConfigError, TrainingInterrupted
from vaekit.training import objective

SIZE = 32  # margin 2: decoded at 36


def _folder(root: Path, n: int = 40) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir()
    for i in range(n):
        pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)  # landscape, not square
        Image.fromarray(pixels).save(root / f"{i:03d}.png")
    return root


def _config(data: Path, out: Path, **options: object) -> vaekit.Config:
    base = {
        "data.name": str(data),
        "data.image_size": SIZE,
        "data.augment": ["crop", "flip"],
        "model.arch": "conv",
        "model.channels": [8, 16],
        "model.latent_dim": 8,
        "train.batch_size": 8,
        "train.epochs": 2,
        "train.progress": False,
        "train.out": str(out),
    }
    return vaekit.load_config(None, {**base, **options})


def test_each_image_gets_a_window_near_its_centre_mirrored_for_about_half() -> None:
    rows = torch.randint(0, 256, (64, 3, 36, 36), dtype=torch.uint8)
    spec = augment.Augment(margin=2, flip=True)
    out = augment.apply(rows, spec, (32, 32), torch.Generator().manual_seed(1))
    assert out.shape == (64, 3, 32, 32) and out.dtype == torch.uint8
    g = torch.Generator().manual_seed(1)  # the same draws, one image at a time
    offsets = torch.randint(0, 5, (64, 2), generator=g)
    flips = torch.rand(64, generator=g) < 0.5
    for i in range(64):
        top, left = offsets[i].tolist()
        window = rows[i, :, top : top + 32, left : left + 32]
        assert torch.equal(out[i], window.flip(-1) if flips[i] else window), i
    assert 16 < int(flips.sum()) < 48 and len({tuple(o) for o in offsets.tolist()}) > 10
    flipped = augment.apply(rows, augment.Augment(flip=True), (36, 36), torch.Generator())
    assert all(
        torch.equal(f, r) or torch.equal(f, r.flip(-1)) for f, r in zip(flipped, rows, strict=True)
    )


def test_a_folder_is_decoded_with_a_margin_and_evaluated_on_the_centres(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "images")
    plain = load_data(_config(folder, tmp_path / "a", **{"data.augment": []}).data)
    data = load_data(_config(folder, tmp_path / "b").data, progress=False)
    assert augment.decoded_size(SIZE) == 36 and data.x_train_full is not None
    assert data.x_train_full.shape[1:] == (3, 36, 36) and data.shape == (3, SIZE, SIZE)
    assert torch.equal(data.x_train, data.x_train_full[:, :, 2:34, 2:34])
    assert data.x_val is not None and data.x_val.shape[1:] == data.x_test.shape[1:] == (3, 32, 32)
    assert plain.x_train_full is None and not torch.equal(plain.x_train, data.x_train)


def _batches(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    original = objective.compute

    def record(model, x, *args, **kwargs):
        seen.append(x.detach().clone())
        return original(model, x, *args, **kwargs)

    monkeypatch.setattr(objective, "compute", record)
    return seen


def test_augmented_batches_are_seeded_and_differ_from_the_centres(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _folder(tmp_path / "images")
    seen = _batches(monkeypatch)
    runs = {}
    for name, options in [("a", {}), ("b", {}), ("plain", {"data.augment": []})]:
        seen.clear()
        result = vaekit.Trainer(None, _config(folder, tmp_path / name, **options)).fit()
        runs[name] = ([b for b in seen], result.model.state_dict())
    (a, wa), (b, wb), (plain, _) = runs["a"], runs["b"], runs["plain"]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))  # the seed decides
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not any(torch.equal(x, y) for x, y in zip(a, plain, strict=True))
    epochs = len(a) // 2  # the same images in the other epoch are cropped elsewhere
    assert not torch.equal(a[0], a[epochs])


def test_an_augmented_run_resumed_mid_epoch_is_bit_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _folder(tmp_path / "images")
    full = vaekit.train(_config(folder, tmp_path / "full", **{"train.accumulate": 2}))
    original = objective.compute
    calls = []

    def interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(objective, "compute", interrupt)
    cfg = _config(folder, tmp_path / "cut", **{"train.accumulate": 2})
    with pytest.raises(TrainingInterrupted):
        vaekit.train(cfg)
    monkeypatch.setattr(objective, "compute", original)
    vaekit.train(cfg, resume=True)
    weights = (full / "model.safetensors").read_bytes()
    assert (Path(cfg.train.out) / "model.safetensors").read_bytes() == weights


def test_crops_of_data_that_is_no_folder_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--data", "noise", "--data.augment", "crop", "--out", str(tmp_path / "r")]
    assert_one_line_error(cli.main(args), capsys.readouterr().err, "data.augment crop", "flip")
    args[4] = "spin"
    assert_one_line_error(cli.main(args), capsys.readouterr().err, "data.augment", "crop, flip")


def test_a_repeated_augmentation_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--data", "noise", "--data.augment", "flip,flip", "--out", str(tmp_path)]
    assert_one_line_error(cli.main(args), capsys.readouterr().err, "data.augment", "'flip' twice")
    with pytest.raises(ConfigError, match="'crop' twice"):
        vaekit.load_config(None, {"data.augment": ["crop", "flip", "crop"]})
