"""Headless Chromium for tests, driven through chromedriver's W3C WebDriver protocol.

WebDriver is plain JSON over HTTP, so a few urllib calls replace a client library.
`ensure_chromium()` installs Debian's chromium and chromium-driver when they are missing
and the tests run as root with apt-get (as on CI); elsewhere the browser tests skip and
say why. Use the `browser` fixture (import it into the test module).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

# what a closed-network machine needs: no sandbox as root, no GPU, no background traffic
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _find() -> tuple[str | None, str | None]:
    browser = os.environ.get("VAEKIT_CHROMIUM") or next(
        (p for name in BROWSERS if (p := shutil.which(name))), None
    )
    driver = os.environ.get("VAEKIT_CHROMEDRIVER") or shutil.which("chromedriver")
    return browser, driver


def _apt_install() -> str:
    """Install chromium and chromium-driver with apt-get; '' on success, else the reason."""
    cmd = [
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "chromium",
        "chromium-driver",
    ]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        if subprocess.run(cmd, capture_output=True, env=env, timeout=900).returncode == 0:
            return ""
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600)
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"apt-get failed: {e}"
    return "" if done.returncode == 0 else f"apt-get failed: {done.stderr.strip()[-300:]}"


def ensure_chromium() -> tuple[str, str]:
    """Paths of chromium and chromedriver, installing them if needed; else skip the test."""
    browser, driver = _find()
    if browser and driver:
        return browser, driver
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        reason = _apt_install()
        browser, driver = _find()
        if browser and driver:
            return browser, driver
    else:
        reason = "not root with apt-get, so they cannot be installed here"
    pytest.skip(
        "browser tests need headless Chromium: install the Debian packages chromium "
        f"and chromium-driver ({reason or 'installed, but not found on PATH'})"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WebDriverError(RuntimeError):
    pass


class Browser:
    """One headless Chromium session with a fresh profile; `close()` ends both processes."""

    def __init__(self, browser: str, driver: str, timeout: float = 30.0) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.profile = tempfile.mkdtemp(prefix="vaekit-chromium-")
        self.driver = subprocess.Popen(
            [driver, f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.session = ""
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    if self._call("GET", "/status", timeout=2).get("ready"):
                        break
                except (OSError, WebDriverError):
                    pass
                if time.monotonic() > deadline or self.driver.poll() is not None:
                    raise WebDriverError(f"chromedriver did not start on port {self.port}")
                time.sleep(0.1)
            options = {
                "binary": browser,
                "args": [*CHROMIUM_FLAGS, f"--user-data-dir={self.profile}"],
            }
            caps = {
                "capabilities": {
                    "alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}
                }
            }
            self.session = self._call("POST", "/session", caps, timeout=timeout)["sessionId"]
        except BaseException:
            self.close()
            raise

    def _call(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as e:
            detail = json.loads(e.read() or b"{}").get("value", {})
            raise WebDriverError(
                f"{method} {path}: {detail.get('error')}: {str(detail.get('message', ''))[:500]}"
            ) from None
        return payload.get("value")

    def _session(self, method: str, path: str, body: Any = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        """Load a page and wait for its load event."""
        self._session("POST", "/url", {"url": url})

    def execute(self, script: str, *args: Any) -> Any:
        """Run a JS function body in the page; `return` gives its value back."""
        return self._session("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait_for(self, script: str, timeout: float = 15.0, *args: Any) -> Any:
        """Poll a JS expression body until it returns something truthy; that value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.execute(script, *args)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout} s waiting for: {script}")
            time.sleep(0.05)

    def screenshot(self) -> bytes:
        """The visible viewport as PNG bytes."""
        return base64.b64decode(self._session("GET", "/screenshot"))

    def element_screenshot(self, css: str) -> bytes:
        """The first element matching `css`, as PNG bytes."""
        found = self._session("POST", "/element", {"using": "css selector", "value": css})
        element = next(iter(found.values()))
        return base64.b64decode(self._session("GET", f"/element/{element}/screenshot"))

    def set_window(self, width: int, height: int) -> None:
        self._session("POST", "/window/rect", {"width": width, "height": height})

    def close(self) -> None:
        if self.session:
            try:
                self._call("DELETE", f"/session/{self.session}", timeout=10)
            except (OSError, WebDriverError):
                pass
            self.session = ""
        if self.driver.poll() is None:
            self.driver.terminate()
            try:
                self.driver.wait(10)
            except subprocess.TimeoutExpired:
                self.driver.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """A headless Chromium shared by the session's browser tests."""
    paths = ensure_chromium()
    b = Browser(*paths)
    try:
        yield b
    finally:
        b.close()
