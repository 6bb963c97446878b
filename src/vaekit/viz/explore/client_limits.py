"""What one client may cost the explorer: a connection slot for a bounded time, a bounded head.

A per-read socket timeout does not bound a request: a client that sends one header byte
every few seconds ("slowloris") never trips it, and 32 such clients held every slot, so
every real request got 503. Here a request has a deadline for the whole of it (request
line, headers and body), and when every slot is taken a newcomer evicts the connection
that has waited longest for its request, so a complete request always finds a slot.

The head is read here too, strictly (RFC 9112): bounded lines, count and total size, no
line folding, no control characters, no space before a colon, and the headers that frame
a request (Host, Content-Length, Transfer-Encoding) at most once each, since a second
copy that a proxy and this server read differently is how requests are smuggled.
"""

from __future__ import annotations

import errno
import io
import math
import re
import socket
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any

from .latents import BadRequest

MAX_CONNECTIONS = 32  # connections served at once (a thread each); more get 503 or evict
REQUEST_DEADLINE = 5.0  # seconds for a whole request: line, headers and body
EVICTABLE_AFTER = 2.0  # seconds a connection must have waited for its request to be evicted
EVICT_WAIT = 1.0  # seconds a newcomer waits for an evicted connection's slot
DRAIN_TIME = 1.0  # seconds spent reading what a refused client still sends
MAX_HEADER_LINE = 16384  # bytes in one header line
MAX_HEADERS = 100  # header lines in a request
MAX_HEAD = 65536  # bytes of all header lines together
MAX_BODY = 1024  # bytes of request body read and discarded; the API takes none
SINGLE = ("Host", "Content-Length", "Transfer-Encoding")  # framing: at most once each
# the connection is gone: the client closed it, or Ctrl-C landed while its thread started and
# the server closed the socket under the reply (socketserver shuts a request down then)
GONE = (ConnectionError, TimeoutError)
GONE_ERRNOS = (errno.EBADF, errno.ENOTCONN)


def connection_gone(exc: BaseException | None) -> bool:
    return isinstance(exc, GONE) or (isinstance(exc, OSError) and exc.errno in GONE_ERRNOS)


TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a header name (RFC 9110 token)
CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # tab is the only control allowed


class Evicted(TimeoutError):
    """The connection was closed to make room: its request was not complete in time."""


class DeadlineReader(io.RawIOBase):
    """A socket's read side with a deadline for everything read until `deadline`.

    Every read may wait only for what is left of the deadline (and at most `idle`), so a
    client that trickles bytes is cut off at the deadline however often it sends. Wrapped
    in io.BufferedReader as the handler's rfile (see server.Handler.setup).
    """

    def __init__(self, sock: socket.socket, idle: float | None) -> None:
        super().__init__()
        self.sock = sock
        self.idle = idle
        self.deadline = math.inf
        self.started = time.monotonic()
        self.reading = True  # still waiting for (part of) its request: may be evicted
        self.evicted = False

    def begin(self, seconds: float) -> None:
        """A new request starts now and must be complete within `seconds`."""
        self.started = time.monotonic()
        self.deadline = self.started + seconds
        self.reading = True

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if self.evicted:
            raise Evicted("closed to make room for another connection")
        if left <= 0:
            raise TimeoutError("request deadline passed")
        self.sock.settimeout(left if self.idle is None else min(left, self.idle))
        got = self.sock.recv_into(buffer)
        if self.evicted:  # woken by the shutdown in `evict`: what came is not a request
            raise Evicted("closed to make room for another connection")
        return got

    def evict(self) -> None:
        self.evicted = True
        try:
            self.sock.shutdown(socket.SHUT_RD)  # wakes the thread blocked in recv_into
        except OSError:
            pass  # already closed


def read_head(rfile: Any) -> bytes:
    """The header lines up to the blank line that ends them, checked. A line without a
    colon is skipped, leniently, as http.server did; but where its parser (the email
    package's) would take every line after it as body, hiding a second Host or
    Content-Length from the checks, here the lines after it are read and checked too."""
    lines: list[bytes] = []
    size = count = 0
    while True:
        line = rfile.readline(MAX_HEADER_LINE + 1)
        if line in (b"\r\n", b"\n", b""):  # b"": the client closed its side; take what came
            return b"".join(lines) + b"\r\n"
        if len(line) > MAX_HEADER_LINE:
            raise BadRequest(f"a header line is longer than {MAX_HEADER_LINE} bytes", 431)
        size, count = size + len(line), count + 1
        if size > MAX_HEAD or count > MAX_HEADERS:
            raise BadRequest(
                f"the headers exceed {MAX_HEADERS} lines or {MAX_HEAD} bytes together", 431
            )
        text = line.removesuffix(b"\n").removesuffix(b"\r")
        if text[:1] in (b" ", b"\t"):
            raise BadRequest("a header line starts with a space (line folding is not accepted)")
        if CONTROL.search(text):
            raise BadRequest(f"header line {_shown(text)} holds a control character")
        name, colon, _ = text.partition(b":")
        if not colon:
            continue
        if not TOKEN.fullmatch(name):
            raise BadRequest(f"header name {_shown(name)} is not a token (no spaces before ':')")
        lines.append(text + b"\r\n")


def _shown(text: bytes) -> str:
    return repr(text[:40].decode("latin-1"))


def check_framing(headers: Any) -> int:
    """The body length the headers announce (0 if none), refusing duplicates of SINGLE,
    any Transfer-Encoding and a body over MAX_BODY."""
    for name in SINGLE:
        count = len(headers.get_all(name) or ())
        if count > 1:
            raise BadRequest(f"header {name} is given {count} times; give it once")
    if headers.get("Transfer-Encoding") is not None:
        raise BadRequest(
            "request bodies are not accepted; send parameters in the query string", 413
        )
    length = headers.get("Content-Length")
    if length is None:
        return 0
    if not re.fullmatch(r"\d{1,30}", length.strip()):
        raise BadRequest(f"Content-Length {length[:20]!r} is not a number")
    if int(length) > MAX_BODY:
        raise BadRequest(
            f"request body of {int(length)} bytes is too large (limit {MAX_BODY}); "
            "this API takes its parameters in the URL",
            413,
        )
    return int(length)


class ExplorerServer(ThreadingHTTPServer):
    """One thread per connection, at most `max_connections` at once.

    When all are taken, a newcomer evicts the connection that has waited longest (and at
    least EVICTABLE_AFTER) for a complete request; when none qualifies, for all are being
    served, it is answered 503 from the accepting thread and closed, so a flood of
    clients costs no threads and cannot grow without bound.
    """

    daemon_threads = True  # a stuck client never keeps the process alive
    request_queue_size = 128  # listen backlog: with http.server's 5, a burst of connects
    # overflows it and the kernel drops SYNs, which clients retry only after a second
    verbose = False
    loopback_only = True

    def __init__(
        self,
        *args: Any,
        max_connections: int = MAX_CONNECTIONS,
        request_deadline: float = REQUEST_DEADLINE,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.max_connections = max_connections
        self.request_deadline = request_deadline
        self._slots = threading.BoundedSemaphore(max_connections)
        self._holding: set[Any] = set()  # the requests that hold a slot
        self._lock = threading.Lock()
        self._readers: set[DeadlineReader] = set()

    # -- called by the handlers' threads
    def register(self, reader: DeadlineReader) -> None:
        with self._lock:
            self._readers.add(reader)

    def unregister(self, reader: DeadlineReader) -> None:
        with self._lock:
            self._readers.discard(reader)

    def claim(self, reader: DeadlineReader) -> bool:
        """A complete request is served from now on, never evicted; False if it just was."""
        with self._lock:
            if reader.evicted:
                return False
            reader.reading = False
            return True

    # -- called by the accepting thread
    def _evict_one(self) -> bool:
        now = time.monotonic()
        with self._lock:
            waiting = [
                r
                for r in self._readers
                if r.reading and not r.evicted and now - r.started >= EVICTABLE_AFTER
            ]
            if not waiting:
                return False
            min(waiting, key=lambda r: r.started).evict()
            return True

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False) and not (
            self._evict_one() and self._slots.acquire(timeout=EVICT_WAIT)
        ):
            self._refuse(request)
            return
        with self._lock:
            self._holding.add(request)
        try:
            super().process_request(request, client_address)  # starts the thread
        except BaseException:
            # a thread that never started holds the slot still; one that did (Ctrl-C lands
            # while start() waits for it) may have released it: _release gives it back once
            self._release(request)
            raise

    def _refuse(self, request: Any) -> None:
        body = f"busy: {self.max_connections} connections are open; retry shortly\n"
        reply = (
            "HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Retry-After: 1\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n" + body
        )
        try:
            request.settimeout(1.0)  # a client that reads nothing cannot hold us
            request.sendall(reply.encode())
        except OSError:
            pass
        self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request)

    def _release(self, request: Any) -> None:
        """Give back `request`'s slot, once: the handler's thread and, when starting that
        thread was interrupted, the accepting thread both come here. A second release
        would raise ValueError from the semaphore in place of the KeyboardInterrupt, and
        serve_forever would report it and go on serving after Ctrl-C."""
        with self._lock:
            held = request in self._holding
            self._holding.discard(request)
        if held:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if connection_gone(exc):
            return  # the client went away, or the server is stopping: nothing to report
        print(f"vaekit explore: error serving {client_address[0]}: {exc!r}", file=sys.stderr)
