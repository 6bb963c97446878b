"""The Hugging Face Hub without a network: `vaekit push` against a patched HfApi that records
what it is sent, and `hf://` loading from a huggingface_hub cache with HF_HUB_OFFLINE=1."""

from __future__ import annotations

import contextlib
import io
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import huggingface_hub
import pytest
import torch
import yaml
from huggingface_hub import constants as hub_constants

import vaekit
from conftest import assert_clean_error, run_cli, write_hub_cache
from vaekit import publish
from vaekit.cli import main
from vaekit.data import load_data
from vaekit.errors import CheckpointError, ConfigError, VaekitError
from vaekit.evaluation.summary import metrics_rows
from vaekit.tracking import read_metrics

REPO = "alice/tiny-vae"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class Recorder:
    """Stands in for the Hub's API: remembers the repo created and every file committed."""

    def __init__(self) -> None:
        self.repos: list[dict[str, Any]] = []
        self.commits: list[dict[str, Any]] = []

    def create_repo(self, api: Any, repo_id: str, **kwargs: Any) -> str:
        self.repos.append({"repo_id": repo_id, **kwargs})
        return f"https://huggingface.co/{repo_id}"

    def create_commit(self, api: Any, repo_id: str, operations: Any, **kwargs: Any) -> Any:
        files = {}
        for op in operations:
            assert isinstance(op, huggingface_hub.CommitOperationAdd)
            with op.as_file() as f:  # the client's own reader of what it would upload
                files[op.path_in_repo] = f.read()
        self.commits.append({"repo_id": repo_id, "files": files, **kwargs})
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/" + "a" * 40)


@pytest.fixture(scope="module")
def pushed(trained_run: Path) -> Iterator[tuple[Recorder, str, str]]:
    """`vaekit push RUN alice/tiny-vae --private --iw-samples 8`, recorded; with its output."""
    recorder = Recorder()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            huggingface_hub.HfApi,
            "create_repo",
            lambda self, repo_id, **kw: recorder.create_repo(self, repo_id, **kw),
        )
        mp.setattr(
            huggingface_hub.HfApi,
            "create_commit",
            lambda self, repo_id, ops, **kw: recorder.create_commit(self, repo_id, ops, **kw),
        )
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["push", str(trained_run), REPO, "--private", "--iw-samples", "8"])
    assert code == 0, err.getvalue()
    yield recorder, out.getvalue(), err.getvalue()


def test_push_uploads_the_model_folder_and_a_card_in_one_commit(
    pushed: tuple[Recorder, str, str], trained_run: Path
) -> None:
    recorder, out, _ = pushed
    assert recorder.repos == [
        {"repo_id": REPO, "private": True, "exist_ok": True, "repo_type": "model"}
    ]
    (commit,) = recorder.commits
    files = commit["files"]
    assert set(files) == {
        "README.md",
        "config.json",
        "model.safetensors",
        "samples.png",
        "reconstructions.png",
    }
    for name in ("config.json", "model.safetensors", "samples.png", "reconstructions.png"):
        assert files[name] == (trained_run / name).read_bytes(), name
    assert not any(name.endswith(PICKLE_SUFFIXES) or name == "state.pt" for name in files)
    assert f"https://huggingface.co/{REPO}/commit/" in out and REPO in out


def test_model_card_has_hub_metadata_config_numbers_and_images(
    pushed: tuple[Recorder, str, str], trained_run: Path
) -> None:
    card_text = pushed[0].commits[0]["files"]["README.md"].decode("utf-8")
    card = huggingface_hub.ModelCard(card_text)  # the Hub's own parser of the front matter
    assert card.data.library_name == "vaekit"
    assert {"vaekit", "vae", "variational-autoencoder"} <= set(card.data.tags)
    assert card.data.pipeline_tag == "unconditional-image-generation"
    model = vaekit.load(trained_run)
    config_block = card_text.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(config_block) == model.run_config.to_dict()
    # the numbers are vaekit.evaluate's on the run's test set, as `vaekit evaluate` prints them
    data = load_data(model.run_config.data, seed=model.run_config.train.seed, progress=False)
    stats = vaekit.evaluate(model, data.x_test, seed=0, iw_samples=8)
    for label, value, _ in metrics_rows(stats):
        assert f"| {value} |" in card_text, (label, value)
    assert "log p(x), K = 8" in card_text
    assert "](samples.png)" in card_text and "](reconstructions.png)" in card_text
    assert f'vaekit.load("hf://{REPO}")' in card_text


def test_pushed_model_loads_back_offline_from_the_cache(
    pushed: tuple[Recorder, str, str], trained_run: Path, offline_cache: Path, tmp_path: Path
) -> None:
    commit = write_hub_cache(offline_cache, REPO, pushed[0].commits[0]["files"])
    (cached,) = huggingface_hub.scan_cache_dir(offline_cache).repos  # a layout it recognises
    assert cached.repo_id == REPO and cached.refs["main"].commit_hash == commit
    assert {f.file_name for f in cached.refs["main"].files} == set(pushed[0].commits[0]["files"])

    original = vaekit.load(trained_run)
    for uri in (f"hf://{REPO}", f"hf://{REPO}@{commit}"):
        model = vaekit.load(uri)
        assert model.state_dict().keys() == original.state_dict().keys()
        for key, value in original.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), key
        assert model.run_config == original.run_config
    g = torch.Generator().manual_seed(1)
    assert torch.equal(
        model.sample(4, generator=g), original.sample(4, generator=torch.Generator().manual_seed(1))
    )

    # the CLI, as a user runs it: a RUN may be hf://, and pictures land here, not in the cache
    work = tmp_path / "work"
    work.mkdir()
    result = run_cli("sample", f"hf://{REPO}", "--n", "4", cwd=work)
    assert result.returncode == 0, result.stderr
    assert (work / "samples.png").is_file()
    result = run_cli("evaluate", f"hf://{REPO}", "--json", cwd=work)
    assert result.returncode == 0, result.stderr


def test_download_asks_only_for_named_safe_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, trained_run: Path
) -> None:
    calls: list[dict[str, Any]] = []

    def fake_snapshot_download(repo_id: str, **kwargs: Any) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        return str(trained_run)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    vaekit.load(f"hf://{REPO}@v1.0")
    (call,) = calls
    assert call["repo_id"] == REPO and call["revision"] == "v1.0"
    patterns = call["allow_patterns"]
    assert set(patterns) == {
        "config.json",
        "model.safetensors",
        "README.md",
        "samples.png",
        "reconstructions.png",
        "code_prior.safetensors",  # a VQ-VAE's prior over its codes
        "code_prior.json",
    }
    assert not any("*" in p or p.endswith(PICKLE_SUFFIXES) for p in patterns)


def test_a_repo_that_is_not_a_vaekit_model_is_refused(offline_cache: Path) -> None:
    write_hub_cache(
        offline_cache,
        "bob/bert",
        {"config.json": b'{"library_name": "x"}', "pytorch_model.bin": b"\x80\x04pickle"},
    )
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        vaekit.load("hf://bob/bert")
    write_hub_cache(
        offline_cache,
        "bob/other",
        {"config.json": b'{"library_name": "x"}', "model.safetensors": b"{}"},
    )
    with pytest.raises(CheckpointError, match="not a vaekit model.*library_name 'x'"):
        vaekit.load("hf://bob/other")


def test_hub_errors_are_one_line(
    offline_cache: Path, trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_cli("sample", "hf://alice/not-cached")
    assert_clean_error(result, "hf://alice/not-cached", "not in the local cache")
    for bad in ("hf://alice", "hf://a/b/c", "hf://alice/x@"):
        with pytest.raises(CheckpointError, match="OWNER/NAME"):
            vaekit.load(bad)
    with pytest.raises(ConfigError, match="OWNER/NAME"):
        publish.push(trained_run, "no-owner")
    with pytest.raises(ConfigError, match="local run directory"):
        publish.push(f"hf://{REPO}", REPO)
    # a real client against a closed local port: the push fails in one line, nothing raised
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(hub_constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    with pytest.raises(VaekitError, match=f"could not push to {REPO}.*hf auth login"):
        publish.push(trained_run, REPO, run_evaluate=False)


def test_without_the_hub_extra_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, trained_run: Path, capsys: Any
) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if absent
    with pytest.raises(VaekitError, match=r"pip install 'vaekit\[hub\]'"):
        vaekit.load(f"hf://{REPO}")
    assert main(["push", str(trained_run), REPO]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'vaekit[hub]'" in err[0]


def test_dry_run_and_no_evaluate_card_has_no_test_numbers(trained_run: Path, capsys: Any) -> None:
    assert main(["push", str(trained_run), REPO, "--dry-run", "--no-evaluate"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("---\nlibrary_name: vaekit\n")
    # training evaluates the validation set only: no test numbers to take from its log
    assert "none: pushed without an evaluation" in captured.out
    last = read_metrics(trained_run)[-1]
    assert f"| {last['train_nelbo']:.3f} | {last['val_nelbo']:.3f} | 0 |" in captured.out
    for name in ("README.md", "config.json", "model.safetensors", "samples.png"):
        assert name in captured.err
