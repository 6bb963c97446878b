"""Run directories: one owner per run, --overwrite that deletes only a run's files, output
locations checked before any work, and suggested commands that survive a paste.

Issue 15, cases 1, 2, 8 and 11. What is a process's (a lock held by a PID, a stdout that
is full) runs in fresh processes; the rest calls the CLI's `main` in this process.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

import vaekit
from conftest import ROOT, TINY_FLAGS, assert_clean_error, assert_one_line_error, run_cli
from vaekit.cli import main
from vaekit.errors import ConfigError, TrainingInterrupted
from vaekit.io import checkpoint

LOCK = ".vaekit.lock"  # the lock file's name: part of the on-disk format, so spelled out
TINY = ["--data", "noise", *TINY_FLAGS]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def train_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`vaekit train` in this process: (exit status, stdout, stderr)."""
    code = main(["train", *TINY, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def popen_train(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "vaekit", "train", *TINY, *args],
        env=ENV,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def seeds(run: Path) -> set[int]:
    """train.seed as config.yaml, config.json and state.pt each record it."""
    from_yaml = yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"]
    from_json = json.loads((run / "config.json").read_text())["config"]["train"]["seed"]
    from_state = checkpoint.load_state(run / "state.pt")["config"]["train"]["seed"]
    return {from_yaml, from_json, from_state}


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(run: Path, pid: int, host: str) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    lock = run / LOCK
    lock.write_text(json.dumps({"pid": pid, "host": host, "started": "", "token": "t"}))
    return lock


# -- case 1: one owner per run directory ---------------------------------------------------
def test_two_trainings_started_together_into_one_out_never_mix(tmp_path: Path) -> None:
    out = tmp_path / "run"
    procs = [
        popen_train("--epochs", "3", "--seed", s, "--out", str(out), cwd=tmp_path) for s in "12"
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(code == 0 for code in codes) == [False, True], outputs
    winner = codes.index(0)
    err = outputs[1 - winner][1]
    assert_one_line_error(codes[1 - winner], err, str(out))
    assert "in use by process" in err or "already holds a run" in err, err
    assert seeds(out) == {winner + 1}  # config.yaml, config.json and state.pt: one run's
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    assert not (out / LOCK).exists()


def test_two_trainings_without_out_started_together_get_a_directory_each(
    tmp_path: Path,
) -> None:
    procs = [popen_train("--epochs", "3", "--seed", s, cwd=tmp_path) for s in "12"]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2, runs
    assert sorted(seed for run in runs for seed in seeds(run)) == [1, 2]
    for run in runs:
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


def test_a_default_name_taken_already_gets_a_suffix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda *a: "20250101-000000")
    taken = tmp_path / "runs" / "vaekit-20250101-000000"
    taken.mkdir(parents=True)  # created by another process a moment ago, still empty
    config = vaekit.load_config(
        None,
        {"data.name": "noise", "data.noise_examples": 256, "model.hidden": [32],
         "model.latent_dim": 4, "train.batch_size": 64, "train.progress": False,
         "train.epochs": 1},
    )  # fmt: skip
    run = vaekit.train(config)
    assert run.resolve() == taken.with_name(taken.name + "-2")
    assert list(taken.iterdir()) == []


def test_a_live_lock_refuses_a_second_process_naming_the_directory_and_pid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    first = popen_train("--epochs", "100000", "--out", str(out), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not (out / "config.yaml").exists() and time.monotonic() < deadline:
            assert first.poll() is None, first.communicate()
            time.sleep(0.05)
        assert json.loads((out / LOCK).read_text())["pid"] == first.pid
        second = run_cli("train", *TINY, "--out", str(out), "--epochs", "2")
        assert_clean_error(second, str(out), f"in use by process {first.pid}")
        for mode in ("--resume", "--overwrite"):  # neither touches a run in progress
            code, _, err = train_cli(capsys, "--out", str(out), mode)
            assert_one_line_error(code, err, f"in use by process {first.pid}")
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=60)
    assert first.returncode == 128 + signal.SIGTERM, err
    assert not (out / LOCK).exists()  # released when interrupted, too


def test_a_stale_lock_is_taken_over_with_a_one_line_notice(tmp_path: Path) -> None:
    out = tmp_path / "run"
    pid = dead_pid()
    write_lock(out, pid, socket.gethostname())
    result = run_cli("train", *TINY, "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "taking over" in lines[0] and f"process {pid}" in lines[0], lines
    assert (out / "model.safetensors").is_file() and not (out / LOCK).exists()


def test_an_old_unreadable_lock_is_taken_over_with_a_notice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text("not json")
    os.utime(out / LOCK, (time.time() - 60, time.time() - 60))
    code, _, err = train_cli(capsys, "--out", str(out))
    assert code == 0, err
    assert err.count("\n") == 1 and "taking over" in err and "not one vaekit can read" in err
    assert not (out / LOCK).exists()


def test_a_lock_from_another_host_is_refused_with_the_file_to_delete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    lock = write_lock(out, 4242, "elsewhere.invalid")
    code, _, err = train_cli(capsys, "--out", str(out))
    assert_one_line_error(code, err, str(out), "process 4242 on elsewhere.invalid", str(lock))
    assert lock.is_file() and sorted(p.name for p in out.iterdir()) == [LOCK]


def test_a_failed_set_up_removes_the_directory_it_created_and_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    bad = ["--model.linear_path", "true"]  # refused with the model, the folder made by then
    code, _, err = train_cli(capsys, *bad)
    assert_one_line_error(code, err, "linear_path needs model.arch conv")
    assert list((tmp_path / "runs").iterdir()) == []
    assert train_cli(capsys, *bad, "--out", "new")[0] == 1
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()  # the user's own folder, empty: kept
    assert train_cli(capsys, *bad, "--out", "mine")[0] == 1
    assert (tmp_path / "mine").is_dir()


def test_the_lock_is_held_while_training_and_released_after_an_error(tiny, tmp_path: Path) -> None:
    seen = []

    def look(record: dict) -> None:
        seen.append(json.loads((tmp_path / "run" / LOCK).read_text()))
        raise ConfigError("a callback's error")

    with pytest.raises(ConfigError, match="a callback's error"):
        vaekit.Trainer(None, tiny("run"), callbacks=[look]).fit()
    assert seen[0]["pid"] == os.getpid() and seen[0]["host"] == socket.gethostname()
    assert not (tmp_path / "run" / LOCK).exists()
    vaekit.train(tiny("run", **{"train.epochs": 2}), resume=True)  # nothing left behind


def test_under_ddp_only_rank_0_takes_the_lock(
    tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rank other than 0 takes the directory rank 0 prepared (and locked), and trains."""
    from vaekit.training import session as session_module
    from vaekit.training.distributed import Dist

    out = tmp_path / "run"
    write_lock(out, os.getpid(), socket.gethostname())  # rank 0 (this process) holds it

    class Rank1(Dist):
        def __init__(self) -> None:
            super().__init__()
            self.rank = 1

        def share(self, make):  # type: ignore[no-untyped-def]
            return out  # what rank 0 broadcasts; rank 1 never runs make()

    monkeypatch.setattr(session_module, "Dist", Rank1)
    vaekit.train(tiny("run"))
    assert (out / LOCK).is_file()  # rank 0's, untouched
    assert sorted(p.name for p in out.iterdir()) == [LOCK]  # rank 1 writes nothing


# -- case 2: --overwrite deletes a run's files and nothing else ---------------------------
def test_overwrite_refuses_a_directory_that_holds_other_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "p"
    (p / "images").mkdir(parents=True)
    (p / "images" / "a.jpg").write_text("x")
    code, _, err = train_cli(capsys, "--out", str(p), "--overwrite")
    assert_one_line_error(code, err, "--overwrite", str(p), "images/")
    assert (p / "images" / "a.jpg").read_text() == "x"
    # a run beside the data: refused too, and the run is left as it was
    other = tmp_path / "q"
    assert train_cli(capsys, "--out", str(other))[0] == 0
    (other / "notes.txt").write_text("mine")
    weights = (other / "model.safetensors").read_bytes()
    code, _, err = train_cli(capsys, "--out", str(other), "--overwrite", "--seed", "3")
    assert_one_line_error(code, err, "notes.txt")
    assert (other / "model.safetensors").read_bytes() == weights
    assert (other / "notes.txt").read_text() == "mine"


def test_a_folder_that_is_no_run_is_not_called_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "p"
    p.mkdir()
    (p / "samples.png").write_bytes(b"someone's picture")
    (p / "notes.txt").write_text("mine")
    code, _, err = train_cli(capsys, "--out", str(p))
    assert_one_line_error(code, err, str(p), "notes.txt")
    assert "holds a run" not in err
    assert (p / "samples.png").read_bytes() == b"someone's picture"


def test_overwrite_removes_the_run_files_and_the_trackers_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert train_cli(capsys, "--out", str(out), "--epochs", "2")[0] == 0
    for folder in ("tensorboard", "wandb"):
        (out / folder / "logs").mkdir(parents=True)
        (out / folder / "logs" / "events").write_text("old")
    for name in ("wandb_run_id", "mlflow.json", ".tmp-state.pt.abc", "kl.png"):
        (out / name).write_text("old")
    assert train_cli(capsys, "--out", str(out), "--overwrite")[0] == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["config.json", "config.yaml", "metrics.jsonl", "model.safetensors",
         "reconstructions.png", "samples.png", "state.pt"]
    )  # fmt: skip
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_resume_with_overwrite_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert train_cli(capsys, "--out", str(out))[0] == 0
    before = (out / "state.pt").read_bytes()
    code, _, err = train_cli(capsys, "--out", str(out), "--resume", "--overwrite", "--epochs", "2")
    assert_one_line_error(code, err, "--resume", "--overwrite")
    assert (out / "state.pt").read_bytes() == before


# -- case 8: the output location is checked first, and fails in one line -----------------
@pytest.fixture
def no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training that gets as far as loading its data fails the test."""
    from vaekit.training import preflight as setup_module  # training_data loads it there

    def load_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data was loaded before the output location was checked")

    monkeypatch.setattr(setup_module, "load_data", load_data)


@pytest.mark.parametrize(
    "make, out, needle",
    [
        (lambda d: (d / "loop").symlink_to("loop"), "loop", "symlink loop"),
        (lambda d: (d / "loop").symlink_to("loop"), "loop/run", "symlink loop"),
        (lambda d: (d / "gone").symlink_to("missing"), "gone", "does not exist"),
        (lambda d: (d / "file").write_text("x"), "file/run", "is a file"),
        (lambda d: (d / "file").write_text("x"), "file", "is a file"),
    ],
    ids=["symlink-loop", "below-a-symlink-loop", "dangling-symlink", "below-a-file", "a-file"],
)
def test_a_bad_out_is_one_line_before_the_data_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_data: None, make, out, needle
) -> None:
    make(tmp_path)
    code, _, err = train_cli(capsys, "--out", str(tmp_path / out))
    assert_one_line_error(code, err, str(tmp_path / out), needle)


def test_a_read_only_out_is_one_line_before_the_data_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_data: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A read-only mount (EROFS), as root meets it too: creating anything there fails."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real_mkdir, real_mkstemp, real_open = os.mkdir, tempfile.mkstemp, os.open

    def read_only(path: object) -> None:
        if str(path).startswith(str(ro)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    def mkdir(path, *a, **k):  # type: ignore[no-untyped-def]
        read_only(path)
        return real_mkdir(path, *a, **k)

    def mkstemp(*a, dir=None, **k):  # type: ignore[no-untyped-def]
        read_only(dir)
        return real_mkstemp(*a, dir=dir, **k)

    def open_(path, flags, *a, **k):  # type: ignore[no-untyped-def]
        if flags & os.O_CREAT:
            read_only(path)
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "open", open_)
    for out in (ro, ro / "run"):
        code, _, err = train_cli(capsys, "--out", str(out))
        assert_one_line_error(code, err, str(out), "Read-only file system")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a mode 555 directory")
def test_a_directory_without_write_permission_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_data: None
) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    code, _, err = train_cli(capsys, "--out", str(ro / "run"))
    assert_one_line_error(code, err, str(ro / "run"), "Permission denied")


PICTURES = [
    ["sample"],
    ["reconstruct"],
    ["interpolate"],
    ["manifold"],
    ["latents"],
    ["curves"],
    ["kl"],
]


@pytest.mark.parametrize("command", PICTURES, ids=lambda c: c[0])
def test_a_picture_out_that_names_a_directory_is_one_line(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    code = main([*command, str(trained_run), "--out", str(tmp_path)])
    assert_one_line_error(code, capsys.readouterr().err, f"--out {tmp_path} is a directory")
    (tmp_path / "file").write_text("x")
    code = main([*command, str(trained_run), "--out", str(tmp_path / "file" / "x.png")])
    assert_one_line_error(code, capsys.readouterr().err, "is a file, not a directory")
    assert (tmp_path / "file").read_text() == "x"


def test_a_report_out_that_is_a_file_is_one_line(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("x")
    code = main(["report", str(trained_run), "--out", str(tmp_path / "file")])
    assert_one_line_error(code, capsys.readouterr().err, "--out", "is a file, not a directory")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("command", [["presets"], ["evaluate", "RUN", "--json"]], ids=str)
def test_a_full_stdout_is_one_line_on_stderr(trained_run: Path, command: list[str]) -> None:
    args = [str(trained_run) if a == "RUN" else a for a in command]
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "vaekit", *args],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
            timeout=120,
        )
    assert_one_line_error(result.returncode, result.stderr, "standard output", "No space left")


# -- case 11: the commands vaekit suggests are shell-quoted --------------------------------
ODD = "a run's dir"  # a space and a quote


def test_the_next_command_after_training_is_shell_quoted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / ODD
    code, stdout, _ = train_cli(capsys, "--out", str(out))
    assert code == 0
    (line,) = [x for x in stdout.splitlines() if x.startswith("next: ")]
    assert shlex.split(line.removeprefix("next: ")) == ["vaekit", "evaluate", str(out)]


def test_the_resume_command_of_an_interrupted_run_is_shell_quoted_and_works(
    tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    class CtrlC(vaekit.Callback):
        def on_step_end(self, trainer: object) -> None:
            os.kill(os.getpid(), signal.SIGINT)  # the loop saves at the next step and stops

    config = tiny(ODD, **{"train.epochs": 2})
    with pytest.raises(TrainingInterrupted) as caught:
        vaekit.Trainer(None, config, callbacks=[CtrlC()]).fit()
    assert not (tmp_path / ODD / LOCK).exists()
    message = str(caught.value)  # from Python: the keyword first, then the shell's command
    assert "Resume with: Trainer(model, config, resume=True).fit()" in message
    command = shlex.split(message.partition("from a shell: ")[2])
    run = str(tmp_path / ODD)
    assert command == ["vaekit", "train", "--config", f"{run}/config.yaml", "--out", run,
                       "--resume"]  # fmt: skip
    assert main(command[1:]) == 0, capsys.readouterr().err
    assert len((tmp_path / ODD / "metrics.jsonl").read_text().splitlines()) == 2
