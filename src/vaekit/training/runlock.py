"""Who owns a run directory: a lock file, created atomically and held for the run's life.

Two trainings writing one directory would interleave metrics.jsonl and leave the config of
one run beside the weights of the other. So the process that starts a run first creates
LOCK_FILE in it with O_CREAT | O_EXCL (atomic: of two processes exactly one succeeds) and
writes its PID, host and start time into it; a second process finds the file and refuses.
The owner removes the file when the run ends, however it ends. A process killed with
SIGKILL cannot: its lock is stale when its PID no longer runs on this host (or runs a later
process: the start time in /proc tells them apart), and the next run takes it over with a
one-line notice. A lock written on another host cannot be checked from here; it is refused
with the path to delete once that run is known to be over.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import untrusted_files
from ..arguments import is_whole
from ..errors import ConfigError
from ..io import fileio
from ..wording import option

LOCK_FILE = ".vaekit.lock"
_WRITING_GRACE_S = 2.0  # an empty lock younger than this is being written by its creator


@dataclass(frozen=True)
class Owner:
    """What a lock file records about the process that holds the run directory."""

    pid: int
    host: str
    started: str  # the process's start time (/proc/PID/stat; "" where there is no /proc)
    token: str  # random: tells this process's lock from a later one with the same PID

    def alive(self) -> bool:
        """Whether the owner may still run: True unless it is known to be gone."""
        if self.host != socket.gethostname() or os.name == "nt":
            return True  # another machine, or no signal 0 (on Windows it would kill)
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process: it runs
            pass
        return not self.started or _start_time(self.pid) in ("", self.started)

    def describe(self) -> str:
        mine = self.pid == os.getpid() and self.host == socket.gethostname()
        return f"process {self.pid} on {self.host}" + (" (this process)" if mine else "")


def _start_time(pid: int) -> str:
    """The start time of process `pid` in clock ticks since boot ("" if unknown)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces and ')'
    return fields[19] if len(fields) > 19 else ""


def _me() -> Owner:
    pid = os.getpid()
    return Owner(pid, socket.gethostname(), _start_time(pid), secrets.token_hex(8))


def _parse(text: str) -> Owner | None:
    """The owner a lock file names (fields added by later versions are ignored)."""
    try:
        data = untrusted_files.loads_json(text, "the lock file")
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    pid, host = data.get("pid"), data.get("host")
    started, token = data.get("started", ""), data.get("token", "")
    if not is_whole(pid, 1, 2**31 - 1):
        return None  # os.kill(0 or -1, 0) would ask about whole process groups
    if not all(isinstance(v, str) for v in (host, started, token)):
        return None
    return Owner(pid, str(host), started, token)


def _read(lock: Path) -> Owner | None:
    """The lock's owner, None for a file vaekit cannot read; FileNotFoundError if gone."""
    deadline = time.monotonic() + _WRITING_GRACE_S
    while True:
        text = lock.read_text(encoding="utf-8", errors="replace")
        age = time.time() - lock.stat().st_mtime
        if text or age > _WRITING_GRACE_S or time.monotonic() > deadline:
            return _parse(text)
        time.sleep(0.05)  # created a moment ago; its owner is writing it


def acquire(directory: Path, what: str = "") -> Owner:
    """Create the lock in `directory` for this process, taking over a stale one. `what`
    names the directory in the refusal (default: the --out of a training run)."""
    lock = directory / LOCK_FILE
    me, where = _me(), what or option("out")
    for _ in range(5):  # each pass either creates the lock, refuses, or clears a stale one
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, fileio.FILE_MODE)
        except FileExistsError:
            try:
                holder = _read(lock)
            except FileNotFoundError:  # removed since: its owner finished
                continue
            if holder is not None and holder.alive():
                instead = "" if what else f" or choose another {option('out')}"
                raise ConfigError(
                    f"{where} {directory} is in use by {holder.describe()}, "
                    f"which is training into it; wait for it to finish{instead} (if that run "
                    f"is known to be over, delete {lock})"
                ) from None
            _take_over(lock, holder)
            continue
        except OSError as e:
            raise ConfigError(
                f"{where} {directory}: cannot create files there ({e.strerror}); "
                + ("it must be writable" if what else f"choose a writable {option('out')}")
            ) from None
        try:  # no fsync: other processes see it at once, and after a crash it is stale
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(asdict(me)) + "\n")
        except OSError as e:  # a full disk
            lock.unlink(missing_ok=True)
            raise ConfigError(
                f"{where} {directory}: cannot write its lock file {LOCK_FILE} ({e.strerror})"
            ) from None
        return me
    raise ConfigError(f"{where} {directory}: other processes keep taking its lock; try again")


def _take_over(lock: Path, stale: Owner | None) -> None:
    """Remove a stale lock, unless another process has replaced it meanwhile."""
    aside = lock.with_name(f"{LOCK_FILE}.stale-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.rename(lock, aside)  # of several processes taking it over, one moves it
    except FileNotFoundError:
        return
    if _read(aside) != stale:  # a live lock, created since our look: put it back
        with contextlib.suppress(FileExistsError):  # never over a newer one
            os.link(aside, lock)
        aside.unlink(missing_ok=True)
        return
    aside.unlink(missing_ok=True)
    why = (
        f"its lock names {stale.describe()}, which is no longer running"
        if stale is not None
        else "its lock file is not one vaekit can read (half-written, or not vaekit's)"
    )
    print(f"vaekit: taking over {lock.parent}: {why}", file=sys.stderr)


def release(directory: Path, me: Owner) -> None:
    """Remove the lock if it is still this process's."""
    lock = directory / LOCK_FILE
    with contextlib.suppress(FileNotFoundError):
        if _read(lock) == me:
            lock.unlink()


@contextlib.contextmanager
def held(directory: Path, what: str = "") -> Iterator[None]:
    """Hold the run directory's lock for the body, released whatever happens in it."""
    me = acquire(directory, what)
    try:
        yield
    finally:
        release(directory, me)
