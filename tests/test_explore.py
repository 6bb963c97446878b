"""The latent explorer: its API, its robustness against hostile requests (issue 6, item 20:
every `test_explorer_*` here), and the page end to end in headless Chromium."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageChops

import vaekit
from browser import Browser, browser  # noqa: F401 (a fixture)
from conftest import ROOT, tiny_config
from vaekit.cli import main
from vaekit.config import ModelConfig
from vaekit.data import load_data
from vaekit.errors import VaekitError
from vaekit.models import VAE
from vaekit.normalize import Normalization
from vaekit.viz import explore, grid
from vaekit.viz.explore.latents import MAX_SLIDERS


def start(ex: explore.Explorer, host: str = "127.0.0.1") -> explore.ExplorerServer:
    server = explore.make_server(ex, host, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def explorer(trained_run: Path) -> explore.Explorer:
    model = vaekit.load(trained_run)
    data = load_data(model.run_config.data, seed=0, progress=False)
    return explore.Explorer(model, data.x_test, data.y_test, data.class_names)


@pytest.fixture(scope="module")
def server(explorer: explore.Explorer) -> Iterator[explore.ExplorerServer]:
    srv = start(explorer)
    yield srv
    srv.shutdown()
    srv.server_close()


def get(
    server: explore.ExplorerServer,
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        conn.close()


def raw(server: explore.ExplorerServer, data: bytes, wait: float = 10.0) -> bytes:
    """Send bytes as they are; everything the server answers until it closes."""
    with socket.create_connection(server.server_address[:2], timeout=wait) as s:
        try:
            s.sendall(data)
        except OSError:
            pass  # the server may stop reading once it has answered
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                raise AssertionError(f"no answer within {wait} s: the server hangs") from None
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def assert_4xx(status: int, body: bytes, code: int, *needles: str) -> None:
    text = body.decode("utf-8", "replace")
    assert status == code, text
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1, text
    for needle in needles:
        assert needle in text, text


def status_of(reply: bytes) -> int:
    first = reply.split(b"\r\n", 1)[0].decode()
    assert first.startswith("HTTP/1."), reply[:200]
    return int(first.split()[1])


# -- the API --------------------------------------------------------------------------------
def test_explorer_serves_page_info_and_images(
    server: explore.ExplorerServer, explorer: explore.Explorer
) -> None:
    status, ctype, body = get(server, "/")
    assert status == 200 and ctype.startswith("text/html") and b'id="sliders"' in body
    assert b"http://" not in body and b"https://" not in body  # nothing fetched from outside
    status, _, body = get(server, "/info")
    info = json.loads(body)
    assert info["latent_dim"] == 4 and sorted(info["shown"]) == [0, 1, 2, 3]
    kl = info["kl"]
    assert [kl[d] for d in info["shown"]] == sorted(kl, reverse=True)  # most active first
    for path in (
        "/decode?z=0,0,0,0",
        "/image?index=3",
        "/interpolate?a=0&b=5&steps=7&method=slerp",
    ):
        status, ctype, body = get(server, path)
        assert status == 200 and ctype == "image/png", path
        with Image.open(io.BytesIO(body)) as image:
            width = 7 * 28 if "interpolate" in path else 28
            assert image.size == (width, 28), path
    status, _, body = get(server, "/encode?index=3")
    z = json.loads(body)["z"]
    expected = explorer.model.encode(explorer.x[3:4].float() / 255)[0][0]
    assert z == pytest.approx(expected.tolist(), abs=1e-4)


def test_explorer_decodes_what_the_model_decodes(
    server: explore.ExplorerServer, explorer: explore.Explorer
) -> None:
    a = get(server, "/decode?z=0,0,0,0")[2]
    b = get(server, "/decode?z=2.5,-1,0.5,3")[2]
    assert a != b
    pixels = torch.from_numpy(np.asarray(Image.open(io.BytesIO(b)), dtype=np.float32))
    with torch.no_grad():
        model_image = explorer.model.mean(
            explorer.model.decode(torch.tensor([[2.5, -1.0, 0.5, 3.0]]))
        )
    assert torch.allclose(pixels.flatten() / 255, model_image.flatten(), atol=1 / 255 + 1e-6)


def test_explorer_decodes_into_the_users_units() -> None:
    model = VAE.from_config(
        ModelConfig(hidden=[16], latent_dim=3, likelihood="gaussian"), (1, 8, 8)
    )
    model.eval().set_normalization(Normalization("standardize", (0.5,), (0.1,), bounded=False))
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ex = explore.Explorer(model, x)
    png = ex.decode(ex.encode(2)["z"])  # decode(encode(x)) as the page does it
    pixels = np.asarray(Image.open(io.BytesIO(png)), dtype=np.int16)
    expected = grid.make_grid(model.reconstruct(x[2:3]), padding=0)[..., 0].astype(np.int16)
    assert np.abs(pixels - expected).max() <= 1


def test_explorer_ranks_many_dimensions_and_caps_the_sliders(tmp_path: Path) -> None:
    run = vaekit.train(tiny_config(tmp_path / "wide", **{"model.latent_dim": 40}))
    model = vaekit.load(run)
    data = load_data(model.run_config.data, seed=0, progress=False)
    info = explore.Explorer(model, data.x_test, data.y_test).info()
    assert len(info["shown"]) == MAX_SLIDERS and len(info["order"]) == 40
    assert info["shown"] == info["order"][:MAX_SLIDERS]
    assert min(info["kl"][d] for d in info["shown"]) >= max(
        info["kl"][d] for d in info["order"][MAX_SLIDERS:]
    )


def test_explorer_handles_concurrent_requests(server: explore.ExplorerServer) -> None:
    paths = [f"/decode?z={i / 10},0,0,{-i / 10}" for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda p: get(server, p), paths))
    assert all(status == 200 for status, _, _ in results)
    assert len({body for _, _, body in results}) > 1


# -- robustness: every bad request is a 4xx with a one-line message (issue 6, item 20) ------
@pytest.mark.parametrize(
    "z,needle",
    [
        ("nan,0,0,0", "z[0]"),
        ("0,inf,0,0", "z[1]"),
        ("0,0,-inf,0", "z[2]"),
        ("0,0,0,1e999", "outside"),
        ("0,0,0,101", "outside"),
        ("abc,0,0,0", "not a finite"),
        ("1_0,0,0,0", "not a finite"),
        ("0x1,0,0,0", "not a finite"),
        (",,,", "not a finite"),
        ("0,0,0", "has 3 values"),
        ("0,0,0,0,0", "has 5 values"),
        ("", "has 0 values"),
    ],
)
def test_explorer_bad_numbers_are_400(server: explore.ExplorerServer, z: str, needle: str) -> None:
    assert_4xx(*[get(server, f"/decode?z={z}")[i] for i in (0, 2)], 400, needle)


@pytest.mark.parametrize(
    "path,code,needle",
    [
        ("/nope", 404, "no such page"),
        ("/../../etc/passwd", 404, "no such page"),
        ("/decode", 400, "missing parameter 'z'"),
        ("/decode?z=0,0,0,0&z=1,1,1,1", 400, "given 2 times"),
        ("/decode?z=0,0,0,0&evil=1", 400, "unknown parameter"),
        ("/decode?z=0,0,0,0&label=1", 400, "not class-conditional"),
        ("/decode?z=%ff,0,0,0", 400, "malformed query"),
        ("/decode?z", 400, "malformed query"),
        ("/decode?" + "&".join(f"p{i}=1" for i in range(20)), 400, "malformed query"),
        ("/encode?index=-1", 400, "whole number"),
        ("/encode?index=1.5", 400, "whole number"),
        ("/encode?index=99999999", 400, "whole number"),
        ("/image?index=x", 400, "whole number"),
        ("/interpolate?a=0&b=1&steps=1", 400, "'steps'"),
        ("/interpolate?a=0&b=1&steps=1000", 400, "'steps'"),
        ("/interpolate?a=0&b=1&method=cubic", 400, "'method'"),
        ("/interpolate?a=0", 400, "missing parameter 'b'"),
    ],
)
def test_explorer_malformed_queries_and_unknown_routes_are_4xx(
    server: explore.ExplorerServer, path: str, code: int, needle: str
) -> None:
    status, ctype, body = get(server, path)
    assert ctype.startswith("text/plain")
    assert_4xx(status, body, code, needle)


@pytest.mark.parametrize(
    "request_bytes,code",
    [
        (b"GARBAGE\r\n\r\n", 400),  # no method, path or version
        (b"GET /\r\n\r\n", 400),  # HTTP/0.9
        (b"GET / HTTP/1.x\r\nHost: 127.0.0.1\r\n\r\n", 400),  # bad version
        (b"BREW /pot HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 405),  # unknown method, not 501
        (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon here\r\n\r\n", 200),  # lenient header
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n", 431),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # TLS, of sorts
    ],
)
def test_explorer_malformed_requests_get_4xx(
    server: explore.ExplorerServer, request_bytes: bytes, code: int
) -> None:
    reply = raw(server, request_bytes)
    assert status_of(reply) == code, reply[:300]
    assert b"Traceback" not in reply


def test_explorer_huge_request_line_is_414(server: explore.ExplorerServer) -> None:
    line = b"GET /decode?z=" + b"1," * 200_000 + b"1 HTTP/1.1\r\n\r\n"
    reply = raw(server, line)
    assert status_of(reply) == 414 and b"too long" in reply


def test_explorer_huge_payloads_are_413(server: explore.ExplorerServer) -> None:
    head = b"GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000000\r\n\r\n"
    reply = raw(server, head + b"x" * 200_000)
    assert status_of(reply) == 413 and b"too large" in reply
    chunked = b"GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert status_of(raw(server, chunked + b"ffffff\r\n" + b"y" * 50_000)) == 413
    status, _, body = get(server, "/decode", "POST", body=b"z=" + b"0," * 100_000)
    assert_4xx(status, body, 405, "use GET")


def test_explorer_bad_content_length_is_400(server: explore.ExplorerServer) -> None:
    reply = raw(server, b"GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n")
    assert status_of(reply) == 400 and b"Content-Length" in reply


def test_explorer_stalled_clients_time_out(explorer: explore.Explorer) -> None:
    srv = start(explorer)
    srv.RequestHandlerClass.timeout = 0.5  # type: ignore[attr-defined]
    try:
        started = time.monotonic()
        for partial in (
            b"GET /info HT",
            b"GET /info HTTP/1.1\r\nHost: 127",
            b"GET /info HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc",
        ):
            reply = raw(srv, partial, wait=5)  # sends part of a request, then nothing
            assert status_of(reply) == 408, reply
        assert time.monotonic() - started < 6
        assert get(srv, "/info")[0] == 200
    finally:
        srv.shutdown()
        srv.server_close()


def test_explorer_connections_beyond_the_cap_get_503_and_cost_no_thread(
    explorer: explore.Explorer,
) -> None:
    srv = explore.make_server(explorer, "127.0.0.1", 0, max_connections=2)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    idle = [socket.create_connection(srv.server_address[:2], timeout=5) for _ in range(2)]
    try:
        time.sleep(0.2)  # both accepted: their handler threads wait for a request line
        threads = threading.active_count()
        replies = [raw(srv, b"GET /info HTTP/1.1\r\nHost: localhost\r\n\r\n") for _ in range(5)]
        for reply in replies:
            assert status_of(reply) == 503, reply
            assert b"2 connections" in reply and b"Traceback" not in reply
        assert threading.active_count() <= threads  # refused in the accepting thread
        for s in idle:
            s.close()
        deadline = time.monotonic() + 5
        while get(srv, "/info")[0] != 200:  # the slots come back as the idle ones close
            assert time.monotonic() < deadline, "slots never released"
            time.sleep(0.05)
    finally:
        for s in idle:
            s.close()
        srv.shutdown()
        srv.server_close()


def test_ctrl_c_while_a_handler_starts_still_stops_the_explorer(
    explorer: explore.Explorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C can land while the accepting thread waits for a handler's thread to start,
    after that thread has served its request and given its slot back. The interrupt must
    come through: a second release of the slot raised ValueError in its place, which
    serve_forever reported and went on serving (seen as `vaekit explore` ignoring Ctrl-C)."""
    srv = explore.make_server(explorer, "127.0.0.1", 0, max_connections=2)
    start_thread = socketserver.ThreadingMixIn.process_request

    def served_then_interrupted(self: Any, request: Any, client_address: Any) -> None:
        start_thread(self, request, client_address)
        deadline = time.monotonic() + 10
        while request in self._holding:  # the handler has served it and let go of the slot
            assert time.monotonic() < deadline, "the request was never served"
            time.sleep(0.01)
        raise KeyboardInterrupt

    monkeypatch.setattr(socketserver.ThreadingMixIn, "process_request", served_then_interrupted)
    client = threading.Thread(target=raw, args=(srv, b"GET /info HTTP/1.0\r\n\r\n"))
    client.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            srv.handle_request()
        # every slot is there, once: two connections at a time, not three
        assert srv._slots.acquire(blocking=False) and srv._slots.acquire(blocking=False)
        assert not srv._slots.acquire(blocking=False)
    finally:
        client.join(10)
        srv.server_close()


def test_explorer_internal_errors_are_500_without_traceback(
    server: explore.ExplorerServer, explorer: explore.Explorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> bytes:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(explorer, "decode", broken)
    status, _, body = get(server, "/decode?z=0,0,0,0")
    assert status == 500 and b"RuntimeError" in body
    assert b"Traceback" not in body and b"secret detail" not in body


def test_explorer_binds_loopback_by_default_and_refuses_foreign_hosts(
    explorer: explore.Explorer, server: explore.ExplorerServer
) -> None:
    import inspect

    assert inspect.signature(explore.make_server).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(explore.serve).parameters["host"].default == "127.0.0.1"
    assert server.server_address[0] == "127.0.0.1" and server.loopback_only
    status, _, body = get(server, "/info", headers={"Host": "attacker.example:8000"})
    assert_4xx(status, body, 421, "attacker.example")
    assert get(server, "/info", headers={"Host": "localhost:1234"})[0] == 200


def test_explorer_head_and_keeps_serving_after_abuse(server: explore.ExplorerServer) -> None:
    status, _, body = get(server, "/", "HEAD")
    assert status == 200 and body == b""
    assert get(server, "/info")[0] == 200


def test_explorer_port_in_use_is_a_clear_error(explorer: explore.Explorer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(VaekitError, match="is in use"):
            explore.make_server(explorer, "127.0.0.1", s.getsockname()[1])


def test_explorer_conditional_model_takes_a_label(tmp_path: Path) -> None:
    run = vaekit.train(tiny_config(tmp_path / "cond", **{"model.conditional": True}))
    model = vaekit.load(run)
    data = load_data(model.run_config.data, seed=0, progress=False)
    srv = start(explore.Explorer(model, data.x_test, data.y_test, data.class_names))
    try:
        a = get(srv, "/decode?z=0,0,0,0&label=1")
        b = get(srv, "/decode?z=0,0,0,0&label=7")
        assert a[0] == b[0] == 200 and a[2] != b[2]
        assert_4xx(*[get(srv, "/decode?z=0,0,0,0&label=10")[i] for i in (0, 2)], 400, "'label'")
        assert json.loads(get(srv, "/encode?index=0")[2])["label"] == int(data.y_test[0])
    finally:
        srv.shutdown()
        srv.server_close()


# -- the command ----------------------------------------------------------------------------
def test_explorer_command_serves_until_interrupted(trained_run: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaekit", "explore", str(trained_run), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert "http://127.0.0.1:" in line, line + proc.stderr.read()  # type: ignore[union-attr]
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/info")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)  # a generous bound on a loaded 2-core CI
    assert proc.returncode == 130 and "Traceback" not in err, err


def test_a_reply_whose_socket_the_server_closed_is_no_internal_error(
    explorer: explore.Explorer,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Ctrl-C can land while the accepting thread starts a request's thread; socketserver
    then closes that request's socket under the reply (EBADF). That is the server stopping,
    not a bug: no traceback, no "internal error" in the log."""
    from vaekit.viz.explore import server as server_module

    reply = server_module.Handler._reply

    def closed_under_the_reply(self: Any, body: bytes, content_type: str) -> None:
        self.connection.close()  # what socketserver's shutdown_request does
        reply(self, body, content_type)

    monkeypatch.setattr(server_module.Handler, "_reply", closed_under_the_reply)
    srv = start(explorer)
    try:
        with pytest.raises((http.client.HTTPException, OSError)):
            get(srv, "/info")
    finally:
        srv.shutdown()
        srv.server_close()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "internal error" not in err and "error serving" not in err


def test_explorer_command_refuses_a_bad_port(
    trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:  # argparse's own one-line usage error
        main(["explore", str(trained_run), "--port", "70000"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --port: must be from 0 to 65,535" in err


# -- the page, end to end -------------------------------------------------------------------
def test_explorer_page_slider_moves_the_decoded_image(
    server: explore.ExplorerServer,
    browser: Browser,  # noqa: F811 (the fixture imported above)
) -> None:
    host, port = server.server_address[:2]
    browser.get(f"http://{host}:{port}/")
    ready = (
        'const i = document.getElementById("decoded"); return window.explorer && '
        'window.explorer.decodes > 0 && i.dataset.state === "ready" && i.naturalWidth > 0'
    )
    browser.wait_for(ready)
    dims = browser.execute(
        'return Array.from(document.querySelectorAll("#sliders input")).map(s => s.dataset.dim)'
    )
    info = json.loads(get(server, "/info")[2])
    assert [int(d) for d in dims] == info["shown"]  # one slider each, most active first
    before = Image.open(io.BytesIO(browser.element_screenshot("#decoded"))).convert("L")
    dim = browser.execute(
        'const s = document.querySelector("#sliders input"); s.value = "3.5";'
        's.dispatchEvent(new Event("input")); return Number(s.dataset.dim)'
    )
    browser.wait_for(
        f'const i = document.getElementById("decoded"); return i.dataset.state '
        f'=== "ready" && i.dataset.z.slice(2).split("&")[0].split(",")[{dim}] '
        f'=== "3.5000"'
    )
    after = Image.open(io.BytesIO(browser.element_screenshot("#decoded"))).convert("L")
    assert before.size == after.size and before.width >= 200  # drawn large, pixelated
    assert ImageChops.difference(before, after).getbbox() is not None  # the image changed
    # the button encodes a test image: the sliders take its posterior mean
    decodes = browser.execute("return window.explorer.decodes")
    browser.execute('document.getElementById("encode").click()')
    browser.wait_for(
        f"return window.explorer.decodes > {decodes} && "
        'document.getElementById("decoded").dataset.state === "ready"'
    )
    caption = browser.execute('return document.getElementById("encoded-caption").textContent')
    index = int(caption.split()[2])
    z = json.loads(get(server, f"/encode?index={index}")[2])["z"]
    shown = browser.execute(f"return {json.dumps(info['shown'])}.map(d => window.explorer.z[d])")
    assert shown == pytest.approx([z[d] for d in info["shown"]], abs=1e-4)
    # the interpolation strip rendered, and the page shows no error
    browser.wait_for(
        'const s = document.getElementById("strip"); return s.dataset.state === '
        '"ready" && s.naturalWidth === 10 * 28'
    )
    assert browser.execute('return document.getElementById("error").textContent') == ""
