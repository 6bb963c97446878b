"""The explorer's HTTP server, on the standard library's http.server.

It binds 127.0.0.1 by default and treats every request as hostile: sizes are capped,
numbers are checked, a request must arrive whole within a deadline (limits.py, which also
holds the server class and its connection slots), and every failure is a 4xx with a
one-line message (a bug is a 500 without a traceback), so a browser tab can never wedge it.
"""

from __future__ import annotations

import errno
import io
import ipaddress
import json
import math
import socket
import sys
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler
from typing import Any

from ... import templates
from ...errors import VaekitError
from ...models import VQVAE
from .client_limits import (
    DRAIN_TIME,
    MAX_CONNECTIONS,
    REQUEST_DEADLINE,
    DeadlineReader,
    ExplorerServer,
    check_framing,
    connection_gone,
    read_head,
)
from .latents import MAX_STEPS, BadRequest, Explorer
from .params import INDEX, check_params, one, parse_codes, parse_index, parse_z

SOCKET_TIMEOUT = 10.0  # seconds one read or one reply may wait on a silent client
PAGE = templates.read("explorer.html").encode("utf-8")
ROUTES = ("/", "/info", "/decode", "/encode", "/image", "/interpolate", "/sample")


# -- the HTTP side ----------------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    """Routes GET requests to the Explorer; everything else is a 4xx with a message."""

    server_version = "vaekit-explore"
    timeout = SOCKET_TIMEOUT  # StreamRequestHandler sets it on the socket
    explorer: Explorer  # set on the subclass `make_server` builds
    server: ExplorerServer

    def setup(self) -> None:
        super().setup()  # sets self.timeout on the socket, builds rfile and wfile
        self.rfile.close()  # reads go through the deadline instead
        self.reader = DeadlineReader(self.connection, self.timeout)
        self.socket_file = self.rfile = io.BufferedReader(self.reader)
        self.server.register(self.reader)

    def finish(self) -> None:
        self.server.unregister(self.reader)
        super().finish()

    def handle_one_request(self) -> None:
        # http.server's own version, with our limits: the whole request within the
        # server's request_deadline, a shorter request line, a checked head, 405 instead
        # of 501 for unknown methods, 408 when a client is too slow, no HTTP/0.9
        self.command, self.requestline, self.request_version = "", "", "HTTP/1.0"
        self.reader.begin(self.server.request_deadline)
        try:
            if not self._read_request():
                return
        except BadRequest as e:
            self.send_error(e.status, str(e))
            return
        except TimeoutError:
            self._too_slow()
            return
        if not self.server.claim(self.reader):  # evicted just as the request completed
            self._too_slow()
            return
        self.connection.settimeout(self.timeout)  # for the reply
        self.do_GET()
        self.wfile.flush()

    def _read_request(self) -> bool:
        """Request line, head and body, checked; False when it is answered already."""
        line = self.rfile.readline(self.explorer.max_query + 64)
        if not line:
            self.close_connection = True
            return False
        self.raw_requestline = line
        if len(line) > self.explorer.max_query + 32 or not line.endswith(b"\n"):
            raise BadRequest(f"request line too long (limit {self.explorer.max_query} bytes)", 414)
        self.rfile = io.BytesIO(read_head(self.socket_file))  # parse_request reads it there
        try:
            if not self.parse_request():
                return False
        finally:
            self.rfile = self.socket_file
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"
            raise BadRequest("HTTP/0.9 requests are not supported")
        if self.command not in ("GET", "HEAD"):
            raise BadRequest(f"method {self.command[:20]} is not allowed; use GET", 405)
        length = check_framing(self.headers)
        if length:
            self.rfile.read(length)  # small: drain it so the reply is not reset
        return True

    def _too_slow(self) -> None:
        reader, limit = self.reader, self.server.request_deadline
        if reader.evicted:
            waited = time.monotonic() - reader.started
            why = (
                f"request not complete after {waited:.1f} s while all "
                f"{self.server.max_connections} connections were taken; closed to make room"
            )
        elif time.monotonic() >= reader.deadline:
            why = f"request not complete within {limit:g} s (request line, headers and body)"
        else:
            why = f"request not received: the client sent nothing for {self.timeout:g} s"
        self.close_connection = True
        try:
            self.send_error(408, why)
        except OSError:
            pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """A plain-text error with one line, always with a status line and headers."""
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # else http.server writes a bare body
        text = (message or self.responses.get(code, ("error",))[0]).replace("\n", " ")
        body = f"error {code}: {text}\n".encode("utf-8", "replace")
        self.log_error("%d %s", code, text)
        self.close_connection = True
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.send_header("X-Content-Type-Options", "nosniff")
        if code == 405:
            self.send_header("Allow", "GET, HEAD")
        self.end_headers()
        if getattr(self, "command", "") != "HEAD" and code >= 200:
            self.wfile.write(body)
        self._drain()

    def _drain(self, limit: int = 1 << 20) -> None:
        """Half-close, then read what the client still sends, so that closing the socket
        with unread data does not reset the connection before the client reads the error."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.reader.deadline = time.monotonic() + DRAIN_TIME  # in all, not per read
            got = 0
            while got < limit:
                chunk = self.socket_file.read1(65536)
                if not chunk:
                    break
                got += len(chunk)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)

    def _reply(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if content_type.startswith("text/html"):
            self.send_header(
                "Content-Security-Policy",
                "default-src 'self'; img-src 'self' blob: data:; "
                "script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            )
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _check_host(self) -> None:
        if getattr(self.server, "loopback_only", False):
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
            if host not in ("127.0.0.1", "localhost", "::1", ""):
                # a page on another site that resolves its name to 127.0.0.1 (DNS rebinding)
                raise BadRequest(
                    f"Host {host[:60]!r} is not served here; open http://127.0.0.1:PORT/", 421
                )

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        try:
            self._check_host()
            url = urllib.parse.urlsplit(self.path)
            try:
                params = urllib.parse.parse_qs(
                    url.query,
                    keep_blank_values=True,
                    strict_parsing=bool(url.query),
                    max_num_fields=8,
                    errors="strict",
                )
            except (ValueError, UnicodeDecodeError) as e:
                raise BadRequest(f"malformed query string ({str(e)[:80]})") from None
            self._route(url.path, params)
        except BadRequest as e:
            self.send_error(e.status, str(e))
        except Exception as e:
            if connection_gone(e):  # the client stopped reading, or the server is stopping
                self.close_connection = True
                return
            # a bug: the traceback goes to the server's log, not the client
            print(f"vaekit explore: internal error on {self.path[:200]}", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            self.send_error(500, f"internal error ({type(e).__name__}); see the server log")

    def _route(self, path: str, params: dict[str, list[str]]) -> None:
        ex = self.explorer
        n = int(ex.x.shape[0])
        allowed = {
            "/": (),
            "/index.html": (),
            "/info": (),
            "/favicon.ico": (),
            "/decode": ("z", "codes", "label"),
            "/encode": ("index",),
            "/image": ("index",),
            "/interpolate": ("a", "b", "steps", "method"),
            "/sample": ("seed",),
        }
        if path not in allowed:
            raise BadRequest(
                f"no such page {path[:80]!r}; the explorer serves {', '.join(ROUTES)}", 404
            )
        check_params(params, allowed[path], path)
        if path in ("/", "/index.html"):
            self._reply(PAGE, "text/html; charset=utf-8")
        elif path == "/favicon.ico":
            self._reply(b"", "image/x-icon")
        elif path == "/info":
            self._reply(json.dumps(ex.info()).encode(), "application/json")
        elif path == "/decode":
            self._reply(_decode(ex, params), "image/png")
        elif path == "/sample":
            seed = parse_index(params, "seed", 1_000_000_000)
            self._reply(json.dumps(ex.sample(seed)).encode(), "application/json")
        elif path == "/encode":
            index = parse_index(params, "index", n)
            self._reply(json.dumps(ex.encode(index)).encode(), "application/json")
        elif path == "/image":
            self._reply(ex.image(parse_index(params, "index", n)), "image/png")
        else:
            a, b = parse_index(params, "a", n), parse_index(params, "b", n)
            steps_text = one(params, "steps", required=False) or "10"
            if not INDEX.fullmatch(steps_text) or not 2 <= int(steps_text) <= MAX_STEPS:
                raise BadRequest(
                    f"'steps' must be a whole number from 2 to {MAX_STEPS}; got {steps_text[:20]!r}"
                )
            method = one(params, "method", required=False) or "linear"
            if method not in ("linear", "slerp"):
                raise BadRequest(f"'method' must be linear or slerp; got {method[:20]!r}")
            self._reply(ex.interpolate(a, b, int(steps_text), method), "image/png")


def _decode(ex: Explorer, params: dict[str, list[str]]) -> bytes:
    """/decode: z (a latent vector), or a VQ-VAE's codes, and a label where it takes one."""
    if "codes" in params:
        if not isinstance(ex.model, VQVAE):
            raise BadRequest("codes: this model has no codes (it is not a VQ-VAE); give z")
        if "z" in params:
            raise BadRequest("give z or codes, not both")
        count = math.prod(ex.model.code_shape())
        codes = parse_codes(one(params, "codes") or "", count, ex.model.codebook_size)
        return ex.decode_codes(codes)
    z = parse_z(one(params, "z") or "", ex.model.latent_dim, ex.z_limit)
    if "label" in params and not ex.model.conditional:
        raise BadRequest("label: this model is not class-conditional")
    label = parse_index(params, "label", max(1, ex.model.num_classes), required=False)
    return ex.decode(z, label)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(
    explorer: Explorer,
    host: str = "127.0.0.1",
    port: int = 8000,
    verbose: bool = False,
    max_connections: int = MAX_CONNECTIONS,
    request_deadline: float = REQUEST_DEADLINE,
) -> ExplorerServer:
    """A bound, not yet serving, server (port 0 picks a free port: see server_address).

    At most `max_connections` at once; each request must arrive whole (line, headers and
    body) within `request_deadline` seconds or is answered 408 and closed."""
    handler = type("ExplorerHandler", (Handler,), {"explorer": explorer})
    try:
        server = ExplorerServer(
            (host, port),
            handler,
            max_connections=max_connections,
            request_deadline=request_deadline,
        )
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise VaekitError(
                f"port {port} on {host} is in use; pass --port with another "
                "number (0 picks a free one)"
            ) from None
        raise VaekitError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    server.verbose = verbose
    server.loopback_only = _is_loopback(host)
    return server


def serve(
    run: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    verbose: bool = False,
    *,
    data: str | None = None,
    split: str = "test",
    image_size: int | None = None,
) -> None:
    """Load RUN and its examples (`vaekit.loading.load_with_data`: the test split of the
    data it trained on, or of `data`), and serve the explorer until interrupted."""
    from ...loading import load_with_data

    model, examples = load_with_data(run, data, split=split, image_size=image_size)
    server = make_server(
        Explorer(model, examples.x, examples.y, examples.class_names), host, port, verbose
    )
    bound = server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"latent explorer for {run}: http://{shown}:{bound}/  (Ctrl-C stops it)", flush=True)
    if not server.loopback_only:
        print(
            f"warning: listening on {host}: anyone who can reach this machine can use it",
            file=sys.stderr,
        )
    try:
        server.serve_forever()
    finally:
        server.server_close()
