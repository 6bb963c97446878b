"""DDP: two CPU processes (gloo, torchrun) train exactly what one process trains.

Each rank takes rows rank::2 of every global batch and the noise of those rows (drawn for
the global batch on every rank), DDP averages the ranks' gradients, and the per-rank
batch means are equal-sized, so the mean of the means is the global-batch mean: the only
difference from one process is the order of float summation (the all-reduce adds two
partial means instead of one sum). Over 16 Adam steps that moves weights by ~1e-7;
the tolerance below (atol 1e-5, rtol 1e-4) is ~100x that, while one Adam step of
lr 1e-3 (what a wrong shard, wrong noise or an unsynchronised rank would cost) is 1e-3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vaekit

ROOT = Path(__file__).resolve().parents[1]
ATOL, RTOL = 1e-5, 1e-4
ARGS = [
    "--data",
    "noise",
    "--data.noise_examples",
    "256",
    "--data.binarize",
    "dynamic",
    "--model.hidden",
    "32",
    "--latent-dim",
    "4",
    "--batch-size",
    "32",
    "--train.progress",
    "false",
    "--train.threads",
    "1",
]  # 8 steps per epoch


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(ROOT / "tests" / "ddp_entry.py"),  # `-m vaekit`, checking the teardown
            "train",
            *ARGS,
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def one_process(out: Path, epochs: int, **options: object) -> Path:
    overrides = {
        **options,
        "data.name": "noise",
        "data.noise_examples": 256,
        "data.binarize": "dynamic",
        "model.hidden": [32],
        "model.latent_dim": 4,
        "train.batch_size": 32,
        "train.progress": False,
        "train.threads": 1,
        "train.epochs": epochs,
        "train.out": str(out),
    }
    return vaekit.train(vaekit.load_config(None, overrides))


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model.safetensors")


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_training(ddp: Path, single: Path) -> None:
    a, b = weights(ddp), weights(single)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=ATOL, rtol=RTOL, msg=k)
    for r_ddp, r_one in zip(records(ddp), records(single), strict=True):
        # train_* are the global-batch means (the ranks' means averaged), val_* rank 0's
        for key in ("train_nelbo", "train_kl", "val_nelbo", "lr", "skipped_updates"):
            assert r_ddp[key] == pytest.approx(r_one[key], rel=RTOL), key


def test_two_gloo_processes_match_one_process_and_write_one_run_dir(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    result = torchrun("--epochs", "1", cwd=work)  # no --out: rank 0 names the run directory
    assert sorted(p.name for p in work.iterdir()) == ["runs"]  # nothing stray from rank 1
    (ddp,) = (work / "runs").iterdir()
    assert result.stdout.count("run written to") == 1  # only rank 0 reports
    assert len(records(ddp)) == 1  # one metrics line per epoch, not one per rank
    single = one_process(tmp_path / "single", epochs=1)
    assert_same_training(ddp, single)
    torch.manual_seed(0)  # the trainer's initialisation (train.seed 0)
    start = vaekit.VAE.from_config(
        vaekit.load_config(None, {"model.hidden": [32], "model.latent_dim": 4}).model, (1, 28, 28)
    )
    moved = max((weights(ddp)[k] - v).abs().max().item() for k, v in start.state_dict().items())
    assert moved > 100 * ATOL  # it trained: the tolerance is far below one step's change

    # resume under DDP: every rank loads the saved state and continues the same run
    torchrun("--epochs", "2", "--out", str(ddp), "--resume", cwd=work)
    assert [r["epoch"] for r in records(ddp)] == [1, 2]
    assert_same_training(ddp, one_process(tmp_path / "single2", epochs=2))
