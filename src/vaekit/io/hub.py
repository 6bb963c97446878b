"""The Hugging Face Hub: `download` a model folder, `upload` one in a single commit.

A vaekit repo holds what `vaekit.load` reads, config.json and model.safetensors (never a
pickle), plus a model card (README.md, see card.py) and sample images. The client,
`huggingface_hub`, is the `[hub]` extra and is imported only here, only when used.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import untrusted_files
from ..errors import CheckpointError, ConfigError, VaekitError, first_line, require
from ..version import __version__
from .checkpoint import CONFIG_FILE, MODEL_FILE, PRIOR_FILES

CARD_FILE = "README.md"
IMAGE_FILES = ("samples.png", "reconstructions.png")
# what a download fetches: named files only, so no pickle (.bin, .pt, .pkl) ever arrives
FETCHED = (CONFIG_FILE, MODEL_FILE, CARD_FILE, *IMAGE_FILES, *PRIOR_FILES)
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_REF_FORBIDDEN = frozenset(" ~^:?*[\\")  # and control characters: git check-ref-format


def client(what: str) -> Any:
    """huggingface_hub, or one line saying that `what` needs it."""
    package = "the Hugging Face Hub client"
    return require("hub", "huggingface_hub", what, package=package, error=VaekitError)


def check_repo_id(repo_id: str) -> str:
    if not isinstance(repo_id, str) or not _REPO_ID.fullmatch(repo_id) or ".." in repo_id:
        raise ConfigError(
            f"{repo_id!r} is not a Hub repo id; write OWNER/NAME, e.g. alice/fashion-vae"
        )
    return repo_id


def looks_like_repo_id(text: str) -> bool:
    """OWNER/NAME as the Hub spells repo ids."""
    return bool(_REPO_ID.fullmatch(text)) and ".." not in text


def check_revision(revision: object) -> str:
    """A branch, tag or commit as git and the Hub name them (`git check-ref-format`).

    huggingface_hub joins a revision into cache paths (refs/REVISION, snapshots/COMMIT)
    unchecked, so `..` or a leading `/` would read, or write, outside the cache: anything
    git would not accept as a ref name is refused here, before the client sees it. The
    message shows the revision with repr(), so no character in it can split the line.
    """
    if not isinstance(revision, str):
        kind = type(revision).__name__
        raise ConfigError(f"a revision is a branch, tag or commit name, not {kind}")
    problem = _revision_problem(revision)
    if problem:
        shown = repr(revision[:80]) + ("..." if len(revision) > 80 else "")
        raise CheckpointError(
            f"revision {shown} is not a branch, tag or commit: {problem}; "
            "write e.g. main, v1.0, refs/pr/1 or a 40-hex commit"
        )
    return revision


def _revision_problem(revision: str) -> str:
    """What makes `revision` no valid ref name, or "" (git's rules, plus printable only)."""
    if not revision:
        return "it is empty"
    if bad := sorted({c for c in revision if c in _REF_FORBIDDEN or not c.isprintable()}):
        return "it contains " + ", ".join(repr(c) for c in bad[:8])
    for found, reason in (
        (".." in revision, "it contains '..'"),
        ("@{" in revision or revision == "@", "it contains '@{' or is '@'"),
        ("//" in revision, "it contains '//'"),
        (revision[0] in "/-", f"it starts with {revision[0]!r}"),
        (revision[-1] in "/.", f"it ends with {revision[-1]!r}"),
    ):
        if found:
            return reason
    for part in revision.split("/"):
        if part.startswith(".") or part.endswith(".lock"):
            return f"its part {part[:40]!r} starts with '.' or ends with '.lock'"
        if len(part.encode("utf-8")) > 255:
            return f"a part of it is {len(part.encode('utf-8'))} bytes long (at most 255)"
    return ""


def parse_uri(uri: str) -> tuple[str, str | None]:
    """`hf://OWNER/NAME[@REVISION]` as (repo id, revision or None); both checked."""
    repo_id, at, revision = uri.removeprefix("hf://").partition("@")
    repo_id = repo_id.strip("/")
    if not _REPO_ID.fullmatch(repo_id) or ".." in repo_id or (revision == "" and at):
        raise CheckpointError(
            f"{uri!r} is not a Hub model address; write hf://OWNER/NAME "
            "(or hf://OWNER/NAME@REVISION)"
        )
    return repo_id, check_revision(revision) if at else None


def download(uri: str) -> Path:
    """The local snapshot folder of `hf://OWNER/NAME[@REVISION]`, fetched or from the cache.

    Goes through huggingface_hub's cache, so HF_HUB_OFFLINE=1, HF_HUB_CACHE and HF_TOKEN
    work as everywhere else. Fetches only FETCHED, and checks that it is a vaekit model.
    """
    repo_id, revision = parse_uri(uri)
    hub = client(f"loading {uri}")
    try:
        folder = Path(
            hub.snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=list(FETCHED),
                library_name="vaekit",
                library_version=__version__,
            )
        )
    except Exception as e:  # the client raises its HTTP library's errors, OSError, ValueError
        name = type(e).__name__
        if name in ("RepositoryNotFoundError", "GatedRepoError"):
            hint = "check the name; a private or gated repo needs `hf auth login` or HF_TOKEN"
        elif name == "RevisionNotFoundError":
            hint = "check the revision after @"
        elif isinstance(e, FileNotFoundError):  # LocalEntryNotFoundError: offline, not cached
            hint = (
                "it is not in the local cache and the Hub cannot be reached (offline or "
                "HF_HUB_OFFLINE=1); connect once to download it"
            )
        else:
            hint = "check the network, or the name"
        raise CheckpointError(
            f"could not fetch {uri} from the Hugging Face Hub ({first_line(e, named=True)}); {hint}"
        ) from None
    for name in (CONFIG_FILE, MODEL_FILE):
        if not (folder / name).is_file():
            raise CheckpointError(
                f"{uri} is not a vaekit model: it has no {name} (vaekit "
                "loads config.json + model.safetensors, never pickles)"
            )
    try:
        library = untrusted_files.load_json_file(folder / CONFIG_FILE).get("library_name")
    except (ValueError, OSError, AttributeError):
        library = None  # read_meta names the damage when it loads the file
    else:
        if library != "vaekit":
            raise CheckpointError(
                f"{uri} is not a vaekit model (its {CONFIG_FILE} says library_name {library!r})"
            )
    return folder


# -- push ---------------------------------------------------------------------------------------
@dataclass
class PushPlan:
    """What `push` sends: repo file name -> bytes (generated) or a path (from the run)."""

    repo_id: str
    files: dict[str, bytes | Path] = field(default_factory=dict)
    url: str = ""

    def sizes(self) -> dict[str, int]:
        return {
            name: len(v) if isinstance(v, bytes) else v.stat().st_size
            for name, v in self.files.items()
        }


def upload(plan: PushPlan, *, private: bool = False, message: str | None = None) -> str:
    """Send a plan's files to its Hub repo in one commit; returns the commit's URL.

    Creates the repo if needed (`private` then applies; an existing repo keeps its
    visibility). Authentication is huggingface_hub's: `hf auth login` or HF_TOKEN.
    """
    hub = client("pushing to the Hub")
    api = hub.HfApi(library_name="vaekit", library_version=__version__)
    operations = [
        hub.CommitOperationAdd(
            path_in_repo=name, path_or_fileobj=value if isinstance(value, bytes) else str(value)
        )
        for name, value in plan.files.items()
    ]
    try:
        repo = api.create_repo(plan.repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.create_commit(
            plan.repo_id,
            operations,
            repo_type="model",
            commit_message=message or f"Upload a vaekit model (vaekit {__version__})",
        )
    except Exception as e:  # the client raises its HTTP library's errors, OSError, ValueError
        raise VaekitError(
            f"could not push to {plan.repo_id} on the Hugging Face Hub "
            f"({first_line(e, named=True)}); log in with `hf auth login` or set HF_TOKEN, "
            "and check the network"
        ) from None
    plan.url = str(getattr(commit, "commit_url", "") or repo)
    return plan.url


def describe(plan: PushPlan, stream: Any = None) -> None:
    """Print the files of a plan, one a line, with their sizes."""
    stream = stream or sys.stdout
    for name, size in plan.sizes().items():
        print(f"  {name:22} {size:>12,} bytes", file=stream)
