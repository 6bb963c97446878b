"""The explorer against hostile clients (issue 15, case 5): slow-drip connections cannot
lock it out, and request heads that could be read two ways are refused.

Every socket here is on 127.0.0.1; every loop is bounded in rounds and in time.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import vaekit
from test_explore import get, raw, status_of
from vaekit.data import load_data
from vaekit.viz import explore
from vaekit.viz.explore.server import MAX_CONNECTIONS

LINE = b"GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\n"
Start = Callable[..., explore.ExplorerServer]  # make_server's options -> a serving server


@pytest.fixture(scope="module")
def explorer(trained_run: Path) -> explore.Explorer:
    model = vaekit.load(trained_run)
    data = load_data(model.training_config().data, seed=0, progress=False)
    return explore.Explorer(model, data.x_test, data.y_test, data.class_names)


@pytest.fixture
def serve(explorer: explore.Explorer) -> Iterator[Start]:
    """Start servers with make_server's options; all are shut down after the test."""
    servers: list[explore.ExplorerServer] = []

    def start(**options: Any) -> explore.ExplorerServer:
        srv = explore.make_server(explorer, "127.0.0.1", 0, **options)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


class Drippers:
    """`n` slowloris clients: each sends a request line, then one header byte every
    `every` seconds and never the blank line. What the server answers a dropped one is
    kept in `replies`; with `reconnect` a dropped one is opened again at once, as an
    attacker who keeps going would. Runs at most `rounds` rounds."""

    def __init__(self, address: Any, n: int, every: float = 0.5, reconnect: bool = False) -> None:
        self.address, self.every, self.reconnect = address, every, reconnect
        self.socks = [self._open() for _ in range(n)]
        self.replies: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(80,), daemon=True)

    def _open(self) -> socket.socket:
        s = socket.create_connection(self.address, timeout=5)
        s.sendall(LINE + b"X-Slow: ")
        return s

    def _run(self, rounds: int) -> None:
        for _ in range(rounds):
            if self.stop.wait(self.every):
                return
            for i, s in enumerate(self.socks):
                if s.fileno() < 0:
                    continue
                if self._dropped(s):
                    s.close()
                    if self.reconnect:
                        self.socks[i] = self._open()
                    continue
                try:
                    s.send(b"a")
                except OSError:
                    s.close()

    def _dropped(self, s: socket.socket) -> bool:
        if not select.select([s], [], [], 0)[0]:
            return False
        reply = b""
        try:
            while chunk := s.recv(65536):  # the server closes after its answer
                reply += chunk
        except OSError:
            pass
        self.replies.append(reply)
        return True

    def __enter__(self) -> Drippers:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        for s in self.socks:
            s.close()


def served_within(srv: explore.ExplorerServer, seconds: float) -> int:
    """Ask for /info until it is served (a 503 says all slots are taken); the last status."""
    stop = time.monotonic() + seconds
    status = 0
    for _ in range(100):
        status = get(srv, "/info")[0]
        if status == 200 or time.monotonic() > stop:
            break
        time.sleep(0.1)
    return status


def test_explorer_slow_drip_clients_cannot_lock_it_out(serve: Start) -> None:
    srv = serve(request_deadline=1.0)
    with Drippers(srv.server_address[:2], MAX_CONNECTIONS, every=0.5) as drippers:
        assert served_within(srv, 8) == 200
        for _ in range(50):  # 5 s at most: by then every dripper has outlived the deadline
            if len(drippers.replies) == MAX_CONNECTIONS or drippers.stop.wait(0.1):
                break
    assert len(drippers.replies) == MAX_CONNECTIONS  # each was closed, though it kept sending
    for reply in drippers.replies:
        assert status_of(reply) == 408, reply[:300]
        body = reply.split(b"\r\n\r\n", 1)[1].decode()
        assert len(body.strip().splitlines()) == 1 and "request not complete" in body, body


def test_explorer_a_persistent_slow_drip_attack_cannot_lock_it_out(serve: Start) -> None:
    srv = serve()  # the default deadline (seconds); they reconnect
    with Drippers(srv.server_address[:2], MAX_CONNECTIONS, every=0.5, reconnect=True) as d:
        time.sleep(2.5)  # every slot is held by a dripper past limits.EVICTABLE_AFTER (2 s)
        for _ in range(3):  # a dripper that has waited longest makes room for each
            assert served_within(srv, 4) == 200
    for reply in d.replies:  # an evicted dripper is told why (unless its drip reset it)
        assert reply == b"" or (status_of(reply) == 408 and b"to make room" in reply), reply


def test_explorer_request_deadline_is_for_the_whole_request(serve: Start) -> None:
    srv = serve(request_deadline=1.0)
    with Drippers(srv.server_address[:2], 1, every=0.2) as drippers:
        for _ in range(50):  # 10 s at most, against a deadline of 1 s
            if drippers.replies or drippers.stop.wait(0.2):
                break
    (reply,) = drippers.replies  # cut off though it never paused longer than 0.2 s
    assert status_of(reply) == 408 and b"not complete within 1 s" in reply, reply[:300]
    assert get(srv, "/info")[0] == 200


@pytest.mark.parametrize(
    "head,code,needle",
    [
        (b"Host: attacker.example\r\n", 400, b"Host is given 2 times"),
        (b"host: 127.0.0.1\r\n", 400, b"Host is given 2 times"),
        (b"no colon here\r\nHost: attacker.example\r\n", 400, b"Host is given 2 times"),
        (b"Content-Length: 0\r\nContent-Length: 5\r\n\r\nhello", 400, b"Content-Length is"),
        (b"content-length: 3\r\nContent-Length: 3\r\n\r\nabc", 400, b"Content-Length is"),
        (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n", 400, b"given 2 times"),
        (b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 413, b"bodies"),
        (b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 413, b"bodies"),
        (b"Host : attacker.example\r\n", 400, b"not a token"),
        (b"X-Folded: a\r\n  Host: attacker.example\r\n", 400, b"line folding"),
        (b"X-A: 1\rHost: attacker.example\r\n", 400, b"control character"),
        (b"X-A: a\x00b\r\n", 400, b"control character"),
        (b"X-Big: " + b"a" * 20000 + b"\r\n", 431, b"longer than"),
        (b"".join(b"X-%d: %s\r\n" % (i, b"a" * 8000) for i in range(10)), 431, b"together"),
        (b"".join(b"X-%d: 1\r\n" % i for i in range(101)), 431, b"lines"),
    ],
)
def test_explorer_ambiguous_or_oversized_heads_are_refused(
    serve: Start, head: bytes, code: int, needle: bytes
) -> None:
    srv = serve()
    request = LINE + head + (b"" if b"\r\n\r\n" in head else b"\r\n")
    reply = raw(srv, request)
    assert status_of(reply) == code, reply[:300]
    body = reply.split(b"\r\n\r\n", 1)[1]
    assert needle in body and len(body.strip().splitlines()) == 1, body[:300]
    assert b"Traceback" not in reply
    assert get(srv, "/info")[0] == 200  # and it keeps serving


def test_explorer_serves_a_browser_sized_head(serve: Start) -> None:
    srv = serve()
    head = {
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0",
        "Accept": "image/avif,image/webp,image/apng,image/*,*/*;q=0.8",
        "Accept-Language": "en-GB,en;q=0.9",
        "Cookie": "; ".join(f"c{i}={'x' * 120}" for i in range(60)),  # ~8 KB of cookies
    }
    assert get(srv, "/info", headers=head)[0] == 200
