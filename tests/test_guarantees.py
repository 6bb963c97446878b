"""What vaekit guarantees (issue "Hard to break"): one test per case, named after it.

Each test would fail if its guard were removed. User errors must be one line naming the
file or option, a non-zero exit and no traceback; files are never half-written; nothing
from a file is ever executed.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vaekit
from conftest import ROOT, TINY_FLAGS, assert_one_line_error, nan_on_odd_steps, run_cli
from vaekit.cli import main
from vaekit.data.files.idx import write_idx
from vaekit.errors import CheckpointError, TrainingDiverged, TrainingInterrupted, VaekitError
from vaekit.io import checkpoint, fileio
from vaekit.training import objective

TINY = TINY_FLAGS


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run the CLI in-process; return (exit status, stderr)."""
    code = main(list(args))
    return code, capsys.readouterr().err


def write_png(path: Path, size: tuple[int, int] = (20, 16), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = {"RGB": (200, 30, 30), "L": 128, "RGBA": (0, 0, 255, 0)}[mode]
    Image.new(mode, size, color).save(path)
    return path


# -- inputs -----------------------------------------------------------------------------
def test_case01_corrupt_image_is_skipped_with_a_count_or_an_error_with_strict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "imgs"
    for i in range(6):
        write_png(folder / f"ok{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    good = write_png(folder / "cut.png", (64, 64)).read_bytes()
    (folder / "cut.png").write_bytes(good[: len(good) // 2])
    args = [
        "train",
        "--data",
        str(folder),
        "--data.image_size",
        "8",
        *TINY,
        "--out",
        str(tmp_path / "run"),
    ]
    code, err = cli(capsys, *args)
    assert code == 0
    assert "broken.png" in err and "cut.png" in err and "skipped 2" in err
    code, err = cli(capsys, *args[:-2], "--out", str(tmp_path / "run2"), "--strict")
    assert_one_line_error(code, err, "broken.png")


def test_case02_empty_folder_or_only_non_images_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes.txt").write_text("hello")
    for folder in ("empty", "text"):
        code, err = cli(
            capsys,
            "train",
            "--data",
            str(tmp_path / folder),
            *TINY,
            "--out",
            str(tmp_path / f"run-{folder}"),
        )
        assert_one_line_error(code, err, folder)


def test_case03_mixed_modes_and_sizes_are_converted_and_16_bit_keeps_contrast(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "mixed"
    write_png(folder / "rgb.png", (30, 20))
    write_png(folder / "gray.png", (17, 40), "L")
    write_png(folder / "rgba.png", (25, 25), "RGBA")
    Image.new("P", (12, 12), 3).save(folder / "pal.png")
    Image.new("CMYK", (22, 22), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    Image.fromarray(np.full((16, 16), 65535, dtype=np.uint16)).save(folder / "white16.png")
    Image.fromarray(np.full((16, 16), 32896, dtype=np.uint16)).save(folder / "mid16.png")
    cfg = vaekit.load_config(
        None, {"data.name": str(folder), "data.image_size": 8, "data.test_fraction": 0.2}
    )
    from vaekit.data import load_data

    data = load_data(cfg.data, progress=False)
    assert data.x_val is not None
    x = torch.cat([data.x_train, data.x_val, data.x_test])
    assert x.shape == (7, 3, 8, 8) and x.dtype == torch.uint8
    values = sorted(int(v) for v in x.float().mean((1, 2, 3)).round())
    assert 255 in values  # 65535 -> 255 and transparent RGBA on white -> 255
    assert 128 in values  # 32896 -> 128: scaled, never clipped to 255


def test_case04_decompression_bomb_is_refused_with_its_path(tmp_path: Path) -> None:
    from vaekit.config import DataConfig
    from vaekit.data.files.folder import load_folder

    folder = tmp_path / "bomb"
    for i in range(3):
        write_png(folder / f"small{i}.png", (10, 10))
    write_png(folder / "huge.png", (400, 400))
    data = load_folder(
        folder,
        DataConfig(name=str(folder), image_size=8, test_fraction=0.34),
        progress=False,
        max_pixels=20_000,
    )
    assert data.x_train.shape[0] + data.x_test.shape[0] == 3
    assert any("huge.png" in p for p in data.info["skipped"])


def test_case05_bad_idx_and_npz_files_are_clear_errors_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data" / "mnist"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_idx(root / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (20, 28, 28), np.uint8))
    write_idx(root / "train-labels-idx1-ubyte.gz", rng.integers(0, 9, 20, np.uint8))
    write_idx(root / "t10k-images-idx3-ubyte", rng.integers(0, 255, (5, 28, 28), np.uint8))
    write_idx(root / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 9, 5, np.uint8))
    raw = (root / "t10k-images-idx3-ubyte").read_bytes()
    (root / "t10k-images-idx3-ubyte").write_bytes(raw[:-7])
    code, err = cli(
        capsys,
        "train",
        "--data",
        "mnist",
        "--data.root",
        str(tmp_path / "data"),
        "--data.download",
        "false",
        *TINY,
        "--out",
        str(tmp_path / "r1"),
    )
    assert_one_line_error(code, err, "t10k-images-idx3-ubyte")

    npz = tmp_path / "cut.npz"
    np.savez(npz, x_train=np.zeros((200, 28, 28), np.uint8))
    npz.write_bytes(npz.read_bytes()[:3000])
    obj = tmp_path / "obj.npz"
    np.savez(obj, x_train=np.array([{"a": 1}, None], dtype=object))
    shape = tmp_path / "shape.npz"
    np.savez(shape, x_train=np.zeros((4, 2, 5, 5, 5), np.uint8))
    for path in (npz, obj, shape):
        code, err = cli(
            capsys, "train", "--data", str(path), *TINY, "--out", str(tmp_path / f"r-{path.stem}")
        )
        assert_one_line_error(code, err, path.name)


def test_case06_out_of_range_data_for_a_bernoulli_likelihood_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "raw255.npz"
    np.savez(path, x_train=np.random.default_rng(0).uniform(0, 255, (50, 8, 8)).astype(np.float32))
    bernoulli = ("--model.likelihood", "bernoulli")  # auto, the default, picks a Gaussian
    code, err = cli(
        capsys, "train", "--data", str(path), *TINY, *bernoulli, "--out", str(tmp_path / "r")
    )
    assert_one_line_error(code, err, "raw255.npz", "[0, 1]")
    assert not (tmp_path / "r" / "state.pt").exists()
    model = vaekit.VAE.from_config(vaekit.Config().model, (1, 8, 8))
    with pytest.raises(VaekitError, match=r"\[0, 1\]"):
        vaekit.evaluate(model, torch.full((2, 1, 8, 8), 3.0))


@pytest.mark.parametrize(
    "yaml_text, needle",
    [
        ("model:\n  latent_dimension: 3\n", "model.latent_dimension"),
        ("train:\n  epochs: three\n", "train.epochs"),
        ("train:\n  batch_size: -8\n", "train.batch_size"),
        ("model:\n  latent_dim: 0\n", "model.latent_dim"),
        ("optim:\n  lr: [1]\n", "optim.lr"),
    ],
)
def test_case07_bad_options_are_clear_errors_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], yaml_text: str, needle: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    code, err = cli(capsys, "train", "--config", str(path), "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, needle)


# -- checkpoints and files ----------------------------------------------------------------
class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # executed by any unpickler that allows arbitrary globals
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_case08_malicious_pickle_as_resume_state_is_never_executed(
    tmp_path: Path, trained_run: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    marker = tmp_path / "PWNED"
    torch.save({"format": 1, "model": _Evil(marker)}, run / "state.pt")
    result = run_cli(
        "train",
        "--config",
        str(run / "config.yaml"),
        "--out",
        str(run),
        "--resume",
        "--epochs",
        "5",
        env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"},
    )
    assert not marker.exists(), "the pickle was executed"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1 and "Traceback" not in result.stderr
    assert "state.pt" in lines[0] and "refuses" in lines[0]
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        with pytest.raises(CheckpointError):
            checkpoint.load_state(run / "state.pt")
    finally:
        del os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"]
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
@pytest.mark.parametrize("target", ["model.safetensors", "state.pt"])
def test_case09_truncated_empty_or_garbage_checkpoint_is_incomplete_or_corrupt(
    tmp_path: Path, trained_run: Path, capsys: pytest.CaptureFixture[str], damage: str, target: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    raw = (run / target).read_bytes()
    (run / target).write_bytes(
        {"empty": b"", "truncated": raw[: len(raw) // 3], "garbage": os.urandom(4096)}[damage]
    )
    if target == "model.safetensors":
        code, err = cli(capsys, "evaluate", str(run))
    else:
        code, err = cli(
            capsys,
            "train",
            "--config",
            str(run / "config.yaml"),
            "--out",
            str(run),
            "--resume",
            "--epochs",
            "5",
        )
    assert_one_line_error(code, err, f"checkpoint {run / target} is incomplete or corrupt")


def test_case09_a_garbled_pickle_in_a_state_archive_is_incomplete_or_corrupt(
    tmp_path: Path,
) -> None:
    archive = tmp_path / "written.pt"
    torch.save({"format": 1}, archive)
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(tmp_path / "state.pt", "w") as dst:
        for name in src.namelist():  # the unpickler reads b"hi" as opcodes: a KeyError
            dst.writestr(name, b"hi\n" if name.endswith("data.pkl") else src.read(name))
    with pytest.raises(CheckpointError, match="incomplete or corrupt"):
        checkpoint.load_state(tmp_path / "state.pt")


def test_case10_weights_from_another_config_list_the_differences_before_loading(
    tmp_path: Path, trained_run: Path, tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = vaekit.train(tiny("other", **{"model.latent_dim": 6, "model.hidden": [24]}))
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    shutil.copy(other / "model.safetensors", run / "model.safetensors")
    called = []
    monkeypatch.setattr(vaekit.VAE, "load_state_dict", lambda self, *a, **k: called.append(1))
    with pytest.raises(CheckpointError) as err:
        vaekit.load(run)
    assert not called, "weights were loaded before the check"
    message = str(err.value)
    assert "mu_head.weight: (6, 24) in file, (4, 32) in model" in message
    assert "encoder.body.0.weight" in message


def _stale_tmp(run: Path) -> list[Path]:
    return sorted(run.glob(f"{fileio.TMP_PREFIX}*"))


# Runs the CLI, but with a random save chosen to die in: SIGKILL right before that save's
# fsync or rename, so the test does not rely on luck to hit a save.
_DIE_IN_A_SAVE = """
import os, random, signal, sys
rng = random.Random(int(sys.argv[1]))
countdown = [rng.randint(1, 8)]
victim = rng.choice(["fsync", "replace"])
real = getattr(os, victim)
def dying(*args):
    target = args[0] if victim == "replace" else os.readlink(f"/proc/self/fd/{args[0]}")
    if ".tmp-" not in str(target):  # a directory fsync after the rename: not inside a save
        return real(*args)
    countdown[0] -= 1
    if countdown[0] == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args)
setattr(os, victim, dying)
from vaekit.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_case11_every_file_is_written_atomically_and_sigkill_never_breaks_the_checkpoint(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    args = [
        "train",
        "--data",
        "noise",
        "--data.noise_examples",
        "512",
        "--model.hidden",
        "128",
        "--latent-dim",
        "4",
        "--epochs",
        "100000",
        "--batch-size",
        "128",
        "--train.progress",
        "false",
        "--train.checkpoint_every",
        "1",
        "--out",
        str(run),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    rng = random.Random(0)
    in_save = 0
    for i in range(26):
        state = run / "state.pt"
        before = state.stat().st_mtime_ns if state.exists() else None
        mode = ["--resume"] if before is not None else ["--overwrite"]
        if i % 2:  # at a random moment after this process's first save
            proc = subprocess.Popen(
                [sys.executable, "-m", "vaekit", *args, *mode],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            deadline = time.monotonic() + 60
            while (
                time.monotonic() < deadline
                and proc.poll() is None
                and (not state.exists() or state.stat().st_mtime_ns == before)
            ):
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.3))
            proc.kill()
        else:  # inside a save, after the temporary file is written
            proc = subprocess.Popen(
                [sys.executable, "-c", _DIE_IN_A_SAVE, str(i), *args, *mode],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == -signal.SIGKILL, err.decode()
        if i % 2 == 0:
            assert _stale_tmp(run), "the kill inside a save left no temporary file"
            in_save += 1
        if (run / "model.safetensors").exists():
            vaekit.load(run)  # the last model always loads
        checkpoint.load_state(state)  # and so does the last state
    assert in_save == 13
    # what the killed runs left behind is removed, never read, when the run resumes
    epoch = int(checkpoint.load_state(run / "state.pt")["epoch"])
    args[args.index("--epochs") + 1] = str(epoch + 1)
    result = run_cli(*args, "--resume")
    assert result.returncode == 0, result.stderr
    assert not _stale_tmp(run)
    vaekit.load(run)


def test_case11_stale_temporary_files_are_removed_on_resume(tiny) -> None:
    cfg = tiny("stale")
    run = vaekit.train(cfg)
    (run / f"{fileio.TMP_PREFIX}state.pt.abc123").write_bytes(b"half a checkpoint")
    cfg.train.epochs = 2
    vaekit.train(cfg, resume=True)
    assert not _stale_tmp(run)


def test_case12_a_save_that_fails_part_way_leaves_the_previous_checkpoint(
    tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny("fail", **{"train.checkpoint_every": 1})
    run = vaekit.train(cfg)
    before = (run / "state.pt").read_bytes()
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full_disk)
    cfg.train.epochs = 2
    with pytest.raises(VaekitError, match=f"no space left on the device holding {run}"):
        vaekit.train(cfg, resume=True)
    monkeypatch.setattr(fileio.os, "fsync", real_fsync)
    assert (run / "state.pt").read_bytes() == before and not _stale_tmp(run)
    checkpoint.load_state(run / "state.pt")
    vaekit.load(run)

    def broken_save(obj, f, *a, **k):  # an exception inside serialisation, after a write
        f.write(b"partial")
        raise RuntimeError("serialisation failed")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="serialisation failed"):
        vaekit.train(cfg, resume=True)
    assert (run / "state.pt").read_bytes() == before and not _stale_tmp(run)


def test_case13_out_into_an_existing_run_refuses_unless_resume_or_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "run")
    assert cli(capsys, "train", "--data", "noise", *TINY, "--out", out)[0] == 0
    first = (tmp_path / "run" / "model.safetensors").read_bytes()
    code, err = cli(capsys, "train", "--data", "noise", *TINY, "--seed", "5", "--out", out)
    assert_one_line_error(code, err, "already holds a run", "--resume", "--overwrite")
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == first
    assert (
        cli(capsys, "train", "--data", "noise", *TINY, "--seed", "5", "--out", out, "--overwrite")[
            0
        ]
        == 0
    )
    assert (tmp_path / "run" / "model.safetensors").read_bytes() != first
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1  # the old run's metrics did not survive into the new one


# -- interruptions and numerics -----------------------------------------------------------
def _weights(run: Path) -> dict[str, torch.Tensor]:
    return vaekit.load(run).state_dict()


def test_case14_resume_at_an_epoch_boundary_is_bit_identical(
    tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = vaekit.train(tiny("full", **{"train.epochs": 2}))
    half = tiny("half")
    vaekit.train(half)
    half.train.epochs = 2
    vaekit.train(half, resume=True)
    a, b = _weights(full), _weights(Path(half.train.out))
    assert all(torch.equal(a[k], b[k]) for k in a)

    # without the saved RNG states the resumed run draws other noise and differs
    train_module = sys.modules["vaekit.training.state"]
    monkeypatch.setattr(train_module, "set_rng_state", lambda generator, state: None)
    again = tiny("no-rng")
    vaekit.train(again)
    again.train.epochs = 2
    vaekit.train(again, resume=True)
    c = _weights(Path(again.train.out))
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("ema", [0.0, 0.9])  # with ema, the saved weights are the average
def test_case15_resume_mid_epoch_continues_the_same_order_bit_identically(
    tiny, monkeypatch: pytest.MonkeyPatch, ema: float
) -> None:
    overrides = {"train.epochs": 2, "data.noise_examples": 640, "optim.ema": ema}
    full = vaekit.train(tiny("full", **overrides))
    original = objective.compute
    calls = []

    def interrupt_at_step_7(*args, **kwargs):
        calls.append(1)
        if len(calls) == 7:
            os.kill(os.getpid(), signal.SIGINT)  # the handler only sets a flag
        return original(*args, **kwargs)

    monkeypatch.setattr(objective, "compute", interrupt_at_step_7)
    cfg = tiny("cut", **overrides)
    with pytest.raises(TrainingInterrupted) as err:
        vaekit.train(cfg)
    assert err.value.exit_code == 130
    state = checkpoint.load_state(Path(cfg.train.out) / "state.pt")
    assert (state["epoch"], state["step_in_epoch"]) == (0, 7)  # mid-epoch (10 steps each)
    monkeypatch.setattr(objective, "compute", original)
    vaekit.train(cfg, resume=True)
    a, b = _weights(full), _weights(Path(cfg.train.out))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_case16_sigint_and_sigterm_save_at_a_step_boundary_and_resume(
    tmp_path: Path, signum: int, code: int
) -> None:
    run = tmp_path / "run"
    args = [
        "--data",
        "noise",
        "--data.noise_examples",
        "512",
        "--model.hidden",
        "64",
        "--latent-dim",
        "4",
        "--batch-size",
        "32",
        "--train.progress",
        "false",
        "--out",
        str(run),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaekit", "train", *args, "--epochs", "100000"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (run / "config.yaml").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "--resume" in err and "Traceback" not in err
    state = checkpoint.load_state(run / "state.pt")
    done = int(state["epoch"]) + 1
    result = run_cli("train", *args, "--epochs", str(done), "--resume")
    assert result.returncode == 0, result.stderr
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["epoch"] == done


def test_case17_overflowing_logvar_under_autocast_keeps_the_loss_finite() -> None:
    cfg = vaekit.load_config(None, {"model.hidden": [16], "model.latent_dim": 3})
    model = vaekit.VAE.from_config(cfg.model, (1, 8, 8))
    with torch.no_grad():
        model.logvar_head.bias.fill_(100.0)
        model.mu_head.bias.fill_(1e4)
    x = torch.rand(4, 1, 8, 8)
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", dtype=dtype):
            terms = objective.compute(
                model, x, None, cfg.loss, 0, objective.Noise(torch.Generator().manual_seed(0))
            )
        assert torch.isfinite(terms.loss) and torch.isfinite(terms.kl), dtype
        terms.loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        model.zero_grad()


def test_case18_non_finite_updates_are_skipped_counted_and_stop_the_run(
    tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = nan_on_odd_steps(monkeypatch)
    run = vaekit.train(tiny("nan", **{"train.epochs": 2}))
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["skipped_updates"] == 4  # 4 steps per epoch, every other one NaN
    assert all(torch.isfinite(v).all() for v in _weights(run).values())

    good = _weights(run)
    monkeypatch.setattr(objective, "compute", lambda *a, **k: _always_nan(original, *a, **k))
    cfg = tiny("nan")
    cfg.train.epochs, cfg.train.max_skipped = 6, 3
    with pytest.raises(TrainingDiverged, match="3 consecutive non-finite updates up to step"):
        vaekit.train(cfg, resume=True)
    after = _weights(run)  # the last good checkpoint is kept, never NaN
    assert all(torch.equal(good[k], after[k]) for k in good)


def _always_nan(original, *args, **kwargs):
    terms = original(*args, **kwargs)
    terms.loss = terms.loss * float("nan")
    return terms


def test_case19_out_of_memory_is_a_clear_message_suggesting_a_smaller_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(objective, "compute", oom)
    code, err = cli(capsys, "train", "--data", "noise", *TINY, "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, "out of memory", "--batch-size 32")
