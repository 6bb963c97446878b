"""Weight files (LPIPS's, and the Inception network's for FID) download for real, from a
local HTTP server on 127.0.0.1 that serves files this test writes: a good file lands in the
cache, a wrong hash or a cut-off transfer leaves nothing there, offline is one line with the
URL. Nothing reaches the internet."""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from vaekit.errors import ConfigError, DownloadError
from vaekit.evaluation import inception, perceptual
from vaekit.io.download import download


class Files(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    cut: set[str] = set()  # paths whose transfer stops halfway
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.hits.append(self.path)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.path in self.cut else body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, type[Files]]]:
    for variable in ("VAEKIT_OFFLINE", "HF_HUB_OFFLINE"):  # the suite runs offline
        monkeypatch.delenv(variable, raising=False)
    handler = type("Handler", (Files,), {"files": {}, "cut": set(), "hits": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_good_file_lands_in_the_cache_once(server, tmp_path: Path) -> None:  # noqa: ANN001
    base, files = server
    files.files["/w.pth"] = body = b"weights" * 1000
    dest = tmp_path / "cache" / "w.pth"
    assert download(base + "/w.pth", dest, sha(body), show_progress=False) == dest
    assert dest.read_bytes() == body
    assert download(base + "/w.pth", dest, sha(body)[:8], show_progress=False) == dest
    assert files.hits == ["/w.pth"]  # the second call found it cached
    assert [p.name for p in dest.parent.iterdir()] == ["w.pth"]


@pytest.mark.parametrize("case", ["wrong hash", "cut off", "missing"])
def test_a_bad_transfer_leaves_nothing_in_the_cache(server, tmp_path: Path, case: str) -> None:  # noqa: ANN001
    base, files = server
    body = b"x" * 100_000
    if case != "missing":
        files.files["/w.pth"] = body
    if case == "cut off":
        files.cut.add("/w.pth")
    digest = "0" * 64 if case == "wrong hash" else sha(body)
    dest = tmp_path / "cache" / "w.pth"
    with pytest.raises(DownloadError) as err:
        download(base + "/w.pth", dest, digest, show_progress=False)
    message = str(err.value)
    assert base + "/w.pth" in message and "\n" not in message
    needle = {"wrong hash": "has SHA-256", "cut off": "stopped after", "missing": "HTTP 404"}[case]
    assert needle in message
    assert list(dest.parent.iterdir()) == []  # no partial file, no temporary file


def test_offline_names_the_url_and_the_place(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("VAEKIT_OFFLINE", "1")
    dest = tmp_path / "w.pth"
    with pytest.raises(DownloadError) as err:
        download("http://127.0.0.1:9/w.pth", dest, "0" * 8, fix="copy it there by hand")
    assert "http://127.0.0.1:9/w.pth" in str(err.value) and str(tmp_path) in str(err.value)
    assert "copy it there by hand" in str(err.value) and not dest.exists()


def test_lpips_downloads_its_weights_on_first_use(
    server,  # noqa: ANN001
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, files = server
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setitem(sys.modules, "lpips", None)  # the lpips package is not installed
    g = torch.Generator().manual_seed(0)
    source = perceptual.LPIPS("alex")
    backbone = {
        f"features.{k}": torch.randn(v.shape, generator=g)
        for k, v in source.features.state_dict().items()
    }
    lins = {
        f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g)
        for i, c in enumerate((64, 192, 384, 256, 256))
    }
    blobs = {}
    for name, state in (("backbone.pth", backbone), ("lins.pth", lins)):
        torch.save(state, tmp_path / name)
        blobs[name] = (tmp_path / name).read_bytes()
        files.files["/" + name] = blobs[name]
    monkeypatch.setitem(
        perceptual.BACKBONE_URLS, "alex", (base + "/backbone.pth", sha(blobs["backbone.pth"])[:8])
    )
    monkeypatch.setitem(perceptual.LIN_URLS, "alex", (base + "/lins.pth", sha(blobs["lins.pth"])))
    model = perceptual.build_perceptual("lpips-alex", "cpu")
    assert torch.equal(model.features[0].weight, backbone["features.0.weight"])
    assert torch.equal(model.lins[2].weight, lins["lin2.model.1.weight"])
    assert perceptual.hub_checkpoint("alex").read_bytes() == blobs["backbone.pth"]
    assert perceptual.lin_checkpoint("alex").read_bytes() == blobs["lins.pth"]
    perceptual.build_perceptual("lpips-alex", "cpu")  # from the cache, no second download
    assert sorted(files.hits) == ["/backbone.pth", "/lins.pth"]


def test_inception_weights_download_once_hash_checked(
    server,  # noqa: ANN001
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, files = server
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    state = {"fc.weight": torch.randn(1008, 2048), "fc.bias": torch.zeros(1008)}
    torch.save(state, tmp_path / "inception.pth")
    files.files["/inception.pth"] = body = (tmp_path / "inception.pth").read_bytes()
    monkeypatch.setattr(inception, "URL", base + "/inception.pth")
    monkeypatch.setattr(inception, "SHA256", sha(body)[:8])  # a prefix, like the real pin
    path = inception.weights_file()
    assert path == tmp_path / "torch" / "hub" / "checkpoints" / inception.FILE
    assert path.read_bytes() == body
    assert inception.weights_file() == path  # from the cache, no second download
    assert files.hits == ["/inception.pth"]


def test_an_inception_download_with_a_wrong_hash_leaves_nothing(
    server,  # noqa: ANN001
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, files = server
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "inception.pth")
    files.files["/inception.pth"] = body = (tmp_path / "inception.pth").read_bytes()
    monkeypatch.setattr(inception, "URL", base + "/inception.pth")
    wrong = "0" * 8 if not sha(body).startswith("0" * 8) else "f" * 8
    monkeypatch.setattr(inception, "SHA256", wrong)
    with pytest.raises(DownloadError, match="has SHA-256"):
        inception.weights_file()
    assert list(inception.checkpoint().parent.iterdir()) == []


def test_inception_weights_offline_name_the_url(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(DownloadError) as err:  # conftest keeps the suite offline
        inception.weights_file()
    message = str(err.value)
    assert inception.URL in message and "--fid-weights" in message and "\n" not in message
    assert inception.URL.endswith(inception.FILE) and inception.FILE.endswith("-6726825d.pth")


class _RunsCode:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this file ran code",))


def test_inception_weights_that_would_run_code_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / inception.FILE
    torch.save({"fc.weight": torch.zeros(1), "payload": _RunsCode()}, path)
    with pytest.raises(ConfigError, match="not a plain torch weights file"):
        inception.weights_file(str(path))
    assert "ran code" not in capsys.readouterr().out
    torch.save({"conv": torch.zeros(1)}, path)
    with pytest.raises(ConfigError, match="no fc.weight"):
        inception.weights_file(str(path))
    with pytest.raises(ConfigError, match="does not exist"):
        inception.weights_file(str(tmp_path / "missing.pth"))
    path.write_bytes(b"hi\n")  # junk the unpickler answers with a KeyError
    with pytest.raises(ConfigError, match="not a plain torch weights file"):
        inception.weights_file(str(path))
