"""Downloading a file once, for real, into a cache: hash-checked, atomic, with progress.

Weight files (LPIPS, Inception) come through here. The file streams into a temporary file beside
its destination; the length the server announced, then the SHA-256 (whole, or the prefix
torchvision puts in its file names), are checked before it is renamed into place, so the
cache never holds a partial or wrong file, and a failed attempt leaves nothing behind.
Offline (`VAEKIT_OFFLINE=1`, `HF_HUB_OFFLINE=1`, or no route to the server), the error is
one line naming the URL and where to put the file by hand.

torch.hub's `download_url_to_file` does most of this, but checks only a hash prefix and
raises errors that differ by Python version; one function for every download keeps the
messages and the guarantees the same.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .. import progress
from ..errors import DownloadError

CHUNK = 1 << 20
OFFLINE_VARIABLES = ("VAEKIT_OFFLINE", "HF_HUB_OFFLINE")


def offline() -> bool:
    """True when the environment asks for no network use."""
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in OFFLINE_VARIABLES
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(
    url: str,
    dest: Path,
    sha256: str,
    *,
    show_progress: bool = True,
    timeout: float = 30.0,
    fix: str = "",
) -> Path:
    """`dest`, downloaded from `url` unless it is there already. `sha256` is the file's
    whole SHA-256, or a prefix of it (at least 8 hex digits). `fix` ends an offline error:
    how else to get the file."""
    if len(sha256) < 8:
        raise ValueError("a download needs at least 8 hex digits of its SHA-256")
    if dest.is_file():
        return dest
    how = f"; {fix}" if fix else f"; put the file at {dest} by hand"
    if offline():
        raise DownloadError(
            f"{dest.name} is not in {dest.parent} and downloads are off "
            f"(offline mode); it comes from {url}{how}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            _fetch(url, out, dest.name, show_progress, timeout, how)
        actual = sha256_file(Path(tmp))
        if not actual.startswith(sha256.lower()):
            raise DownloadError(
                f"the download of {url} has SHA-256 {actual}, not {sha256}; it was not kept"
            )
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _fetch(url: str, out: object, name: str, show: bool, timeout: float, how: str) -> None:
    """Stream `url` into the open file `out`, checking the announced length."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            announced = response.headers.get("Content-Length")
            total = int(announced) if announced and announced.isdigit() else None
            received = 0
            with progress.bar(total=total, show=show, unit="B", unit_scale=True, desc=name) as bar:
                while block := response.read(CHUNK):
                    out.write(block)  # type: ignore[attr-defined]
                    received += len(block)
                    bar.update(len(block))
    except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as e:
        if isinstance(e, urllib.error.HTTPError):
            reason: object = f"HTTP {e.code} {e.reason}"
        elif isinstance(e, http.client.IncompleteRead):
            reason = f"the transfer stopped after {len(e.partial):,} bytes"
        else:
            reason = getattr(e, "reason", None) or e
        raise DownloadError(f"could not download {url} ({reason}){how}") from None
    if total is not None and received != total:
        raise DownloadError(
            f"the download of {url} stopped after {received:,} of {total:,} bytes; it was "
            "not kept (try again)"
        )
