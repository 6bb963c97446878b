"""Shared fixtures: tiny configs on the noise dataset, and a CLI runner."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vaekit
from vaekit import allocator
from vaekit.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
# The suite never reaches the internet: downloads are off here and in child processes;
# tests/test_download.py lifts this for its local server on 127.0.0.1.
os.environ["VAEKIT_OFFLINE"] = "1"
# `make test` runs the suite in pytest-xdist workers, one per core: each worker (and the CLI
# processes it starts) computes on one thread, so the workers do not fight over the cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


# diffusers' AutoencoderKL at its smallest: two levels of 8 and 16 channels, a 2-channel latent
TINY_AUTOENCODERKL = {
    "block_out_channels": (8, 16),
    "down_block_types": ("DownEncoderBlock2D",) * 2,
    "up_block_types": ("UpDecoderBlock2D",) * 2,
    "norm_num_groups": 4,
    "latent_channels": 2,
    "layers_per_block": 1,
}


def tiny_config(out: Path | str, **overrides: object) -> Config:
    """A model and dataset small enough to train in well under a second."""
    base = {
        "data.name": "noise",
        "data.noise_examples": 256,
        "model.hidden": [32],
        "model.latent_dim": 4,
        "train.epochs": 1,
        "train.batch_size": 64,
        "train.progress": False,
        "train.out": str(out),
        "train.eval_batch_size": 128,
    }
    base.update(overrides)
    return load_config(None, base)


@pytest.fixture
def tiny(tmp_path: Path):
    def make(name: str = "run", **overrides: object) -> Config:
        return tiny_config(tmp_path / name, **overrides)

    return make


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny trained run shared by read-only tests."""
    out = tmp_path_factory.mktemp("shared") / "run"
    return vaekit.train(tiny_config(out, **{"train.epochs": 2}))


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    cwd: Path | None = None,
    memory: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m vaekit ARGS` as a user would, in a fresh process; with `memory`, under
    that many bytes of address space (RLIMIT_AS), so that a file which makes vaekit allocate
    too much fails the test with MemoryError instead of taking the machine."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})}

    def limit_memory() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run(
        [sys.executable, "-m", "vaekit", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
        preexec_fn=limit_memory if memory else None,
    )


# A tiny training run on the noise data, as command-line flags (add --data noise and --out).
TINY_FLAGS = ["--data.noise_examples", "256", "--model.hidden", "32", "--latent-dim", "4",
              "--epochs", "1", "--batch-size", "64", "--train.progress", "false"]  # fmt: skip


# The perceptual + adversarial presets (kl-f8-128, vq-f8-128) shrunk for a test: the
# PatchGAN from step 1 at 4 channels, LPIPS at random weights (no download), fp32, quiet.
SHRUNK_GAN_RECIPE = ["--loss.adversarial_start", "1", "--loss.adversarial_channels", "4",
                     "--loss.perceptual_backbone_weights", "random",
                     "--loss.perceptual_lin_weights", "random",
                     "--train.precision", "fp32", "--train.progress", "false"]  # fmt: skip


def nan_on_odd_steps(monkeypatch: pytest.MonkeyPatch) -> object:
    """Make every other training step's loss NaN (the 1st, 3rd, ...); return the real
    `objective.compute`."""
    from vaekit.training import objective

    original = objective.compute
    calls = []

    def spy(*args: object, **kwargs: object) -> objective.StepTerms:
        calls.append(1)
        terms = original(*args, **kwargs)
        if len(calls) % 2:
            terms.loss = terms.loss * float("nan")
        return terms

    monkeypatch.setattr(objective, "compute", spy)
    return original


def assert_one_line_error(code: int, stderr: str, *needles: str) -> None:
    """A user error: non-zero exit, one line on stderr naming the problem, no traceback."""
    assert code != 0, stderr
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def assert_clean_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """`assert_one_line_error` for a CLI run in a fresh process."""
    assert_one_line_error(result.returncode, result.stderr, *needles)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _malloc_as_it_comes(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI calls in this process would tune its malloc for every later test (the settings
    cannot be undone); tests/test_allocator.py checks the real one in fresh processes."""
    monkeypatch.setattr(allocator, "tune_malloc", lambda: False)


def write_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> str:
    """Lay `files` out as huggingface_hub's cache does (the Hub docs' "Hub Local Cache"):
    blobs/ named by hash, snapshots/COMMIT/ of relative symlinks, refs/main naming COMMIT."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(b"".join(files[k] for k in sorted(files))).hexdigest()
    for name, data in files.items():
        if name.endswith(".safetensors"):  # LFS files are stored under their sha256
            blob_id = hashlib.sha256(data).hexdigest()
        else:  # regular files under their git blob id
            blob_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        blob = repo / "blobs" / blob_id
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return commit


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HF_HUB_CACHE with HF_HUB_OFFLINE=1, here and in child processes."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants as hub_constants

    # huggingface_hub reads both once, at import; this process imported it already
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    return cache
