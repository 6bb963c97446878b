"""Hostile Hub revisions (issue 15, case 7): `hf://OWNER/NAME@REV` and `revision=`.

huggingface_hub joins a revision into its cache paths unchecked (refs/REV names a file
whose text is the commit, snapshots/COMMIT the folder returned), so a revision with `..`
can hand back a folder outside the cache. vaekit accepts only what git and the Hub accept
as a ref name and refuses anything else in one line, before the client reads any file.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest

import vaekit
from conftest import assert_clean_error, assert_one_line_error, run_cli, write_hub_cache
from vaekit.cli import main
from vaekit.errors import CheckpointError, ConfigError
from vaekit.io import hub

REPO = "alice/tiny-vae"
ESCAPE = "../../../outside/ref"  # from <cache>/models--alice--tiny-vae/refs/ to tmp_path/


def model_files(run: Path) -> dict[str, bytes]:
    return {name: (run / name).read_bytes() for name in ("config.json", "model.safetensors")}


def hostile_cache(cache: Path, run: Path) -> Path:
    """A cached repo, and beside the cache a model folder with a "ref" file naming it: the
    client resolves revision ESCAPE to that file, reads it as the commit and returns the
    folder. Returns the folder."""
    write_hub_cache(cache, REPO, model_files(run))
    outside = cache.parent / "outside"
    outside.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(run / name, outside / name)
    (outside / "ref").write_text(str(outside))  # an absolute "commit": os.path.join keeps it
    return outside


def spy_on_the_client(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record every snapshot_download call, then let the real one run."""
    calls: list[dict[str, Any]] = []
    real = huggingface_hub.snapshot_download

    def spy(repo_id: str, **kwargs: Any) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        return str(real(repo_id, **kwargs))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", spy)
    return calls


def test_a_revision_with_dotdot_cannot_load_a_folder_outside_the_cache(
    offline_cache: Path, trained_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = hostile_cache(offline_cache, trained_run)
    # the layout is really hostile: the client itself hands back the outside folder
    assert Path(huggingface_hub.snapshot_download(REPO, revision=ESCAPE)) == outside
    calls = spy_on_the_client(monkeypatch)
    attempts = [
        lambda: vaekit.load(f"hf://{REPO}@{ESCAPE}"),
        lambda: vaekit.VAE.from_pretrained(f"hf://{REPO}", revision=ESCAPE),
        lambda: vaekit.VAE.from_pretrained(REPO, revision=ESCAPE),
    ]
    for attempt in attempts:
        with pytest.raises(CheckpointError) as caught:
            attempt()
        message = str(caught.value)
        assert "\n" not in message and repr(ESCAPE) in message and "'..'" in message, message
    assert calls == []  # refused before the client looked at any file
    assert vaekit.load(f"hf://{REPO}") is not None  # the honest address still loads
    assert len(calls) == 1 and calls[0]["revision"] is None
    result = run_cli("sample", f"hf://{REPO}@{ESCAPE}", cwd=offline_cache.parent)
    assert_clean_error(result, "revision", repr(ESCAPE))
    assert not (offline_cache.parent / "samples.png").exists()


def test_a_revision_with_a_newline_is_one_line_naming_it(
    offline_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    revision = "main\nerror: everything is fine"
    code = main(["sample", f"hf://{REPO}@{revision}", "--out", str(offline_cache.parent / "s.png")])
    assert_one_line_error(code, capsys.readouterr().err, repr(revision))


@pytest.mark.parametrize(
    "revision",
    [
        "..",
        "a..b",
        "x/../../y",
        "/etc",
        "main/",
        "a//b",
        "-rf",
        ".hidden",
        "refs/.x",
        "main.lock",
        "a.lock/b",
        "v1.",
        "two words",
        "tab\there",
        "nul\x00",
        "del\x7f",
        "line\u2028sep",
        "a~1",
        "a^2",
        "a:b",
        "what?",
        "star*",
        "br[acket",
        "back\\slash",
        "a@{1}",
        "@",
        "x" * 300,
    ],
)
def test_revisions_git_would_refuse_are_refused_in_one_line(revision: str) -> None:
    with pytest.raises(CheckpointError, match="not a branch, tag or commit") as caught:
        hub.parse_uri(f"hf://{REPO}@{revision}")
    message = str(caught.value)
    assert message.isprintable() and len(message) < 300, message
    assert repr(revision[:80]) in message
    with pytest.raises(CheckpointError, match="not a branch, tag or commit"):
        vaekit.VAE.from_pretrained(f"hf://{REPO}", revision=revision)


@pytest.mark.parametrize(
    "revision",
    ["main", "v1.0", "refs/pr/1", "refs/convert/parquet", "feature/new-thing", "a" * 40, "v2@rc"],
)
def test_revisions_the_hub_accepts_reach_the_client_unchanged(
    revision: str, trained_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str | None] = []

    def fake_snapshot_download(repo_id: str, **kwargs: Any) -> str:
        calls.append(kwargs["revision"])
        return str(trained_run)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert hub.parse_uri(f"hf://{REPO}@{revision}") == (REPO, revision)
    vaekit.load(f"hf://{REPO}@{revision}")
    vaekit.VAE.from_pretrained(REPO, revision=revision)
    assert calls == [revision, revision]


def test_revision_given_twice_or_not_a_string_is_refused(trained_run: Path) -> None:
    with pytest.raises(ConfigError, match="after @ already"):
        vaekit.VAE.from_pretrained(f"hf://{REPO}@v1", revision="v2")
    with pytest.raises(ConfigError, match="not int"):
        vaekit.VAE.from_pretrained(REPO, revision=3)  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="it is empty"):
        vaekit.VAE.from_pretrained(REPO, revision="")
