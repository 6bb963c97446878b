"""Hostile data files (issue 15, cases 4, 9 and 11): huge labels, npz members that expand
past the memory limit, lying .npy headers, FIFOs and devices named like images, a folder
cache fooled by a same-size rewrite, labels for one split only, and other malformed arrays.
Each ends in one line naming the file, or works correctly; never a traceback, a hang or an
allocation of what a header claims. Every file here is written by the test itself."""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vaekit
from conftest import TINY_FLAGS, assert_clean_error, run_cli
from vaekit.config import DataConfig
from vaekit.data import load_data
from vaekit.data.files.folder import load_folder
from vaekit.data.files.idx import read_idx, write_idx
from vaekit.errors import DataError

MEMORY = 2 << 30  # address space of the CLI runs below: vaekit's own memory limit is then 1 GiB
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="FIFOs and rlimits are POSIX")


def npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def npy_bytes(shape: tuple[int, ...], payload: bytes, descr: str = "|u1") -> bytes:
    """An .npy file whose header says `shape` whatever `payload` holds."""
    buf = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + payload


def zipped(path: Path, **members: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name + ".npy", data)
    return path


def train(data: Path | str, out: Path, *extra: str, **kw: object):  # noqa: ANN201
    return run_cli("train", "--data", str(data), *TINY_FLAGS, *extra, "--out", str(out), **kw)


def load(path: Path, **kw: object) -> vaekit.data.Dataset:
    return load_data(DataConfig(name=str(path), **kw))  # type: ignore[arg-type]


# -- case 4: small inputs must not become huge memory or a hang --------------------------------
@posix_only
def test_case04_labels_of_a_trillion_are_refused_before_any_class_list(tmp_path: Path) -> None:
    path = npz(
        tmp_path / "labels.npz",
        x_train=np.zeros((300, 8, 8), np.uint8),
        y_train=np.full(300, 10**12, np.int64),
    )
    result = train(path, tmp_path / "r", memory=MEMORY)
    assert_clean_error(result, "labels.npz:y_train", "1000000000000", "65536")
    assert not (tmp_path / "r" / "state.pt").exists()


@posix_only
def test_case04_npz_member_over_the_memory_limit_is_refused_before_decompressing(
    tmp_path: Path,
) -> None:
    # A zip bomb as vaekit sees it before decompressing: an x_train of 1.4M 28x28 images
    # (1.1 GiB) claimed by its .npy header and by the zip's size field, with only the header
    # stored. The check reads nothing else, so this stands for a real 7 MB bomb of zeros.
    rows = 1_400_000
    header = npy_bytes((rows, 28, 28), b"")
    path = zipped(tmp_path / "bomb.npz", x_train=header)
    raw = bytearray(path.read_bytes())
    central = raw.index(b"PK\x01\x02")  # the central directory entry: file size at +24
    raw[central + 24 : central + 28] = struct.pack("<I", len(header) + rows * 28 * 28)
    path.write_bytes(bytes(raw))
    result = train(path, tmp_path / "r", memory=MEMORY)
    assert_clean_error(result, "bomb.npz", "x_train", "1.02 GiB", "over the limit of 1 GiB")


def test_npz_over_the_limit_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same bound on an honest compressed npz, with the limit lowered to 64 KiB."""
    monkeypatch.setattr("vaekit.data.files.npz.memory_limit", lambda: 64 << 10)
    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, x_train=np.zeros((100, 28, 28), np.float32))  # 314 KB, 3x to scale
    assert path.stat().st_size < 8 << 10
    with pytest.raises(DataError, match=r"zeros.npz \(x_train 306 KiB\).*919 KiB.*64 KiB"):
        load(path)


@posix_only
def test_case04_fifo_named_png_is_skipped_and_never_opened(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(12):
        Image.new("L", (8, 8), 20 * i).save(folder / f"{i:02d}.png")
    os.mkfifo(folder / "pipe.png")  # opening it for reading would block until a writer comes
    result = train(folder, tmp_path / "r", "--data.image_size", "8", timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"{folder / 'pipe.png'}: not a regular file (a FIFO)" in result.stderr
    assert "skipped 1 unreadable image" in result.stderr

    os.mkfifo(tmp_path / "data.npz")
    result = train(tmp_path / "data.npz", tmp_path / "r2", timeout=60)
    assert_clean_error(result, "data.npz", "not a regular file (a FIFO)")


def test_device_named_like_an_image_is_skipped(tmp_path: Path) -> None:
    for i in range(4):
        Image.new("L", (8, 8), 50 * i).save(tmp_path / f"{i}.png")
    (tmp_path / "null.png").symlink_to(os.devnull)
    ds = load_folder(tmp_path, DataConfig(name=str(tmp_path), image_size=8, test_fraction=0.25))
    assert ds.info["skipped"] == [str(tmp_path / "null.png")] and ds.info["images"] == 4


@posix_only
def test_a_folder_of_only_empty_files_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    for i in range(1000):
        (folder / f"{i:04d}.png").touch()
    result = train(folder, tmp_path / "r", "--data.image_size", "8")
    assert_clean_error(result, "none of the 1000 images", "0000.png", "empty file")


def test_many_unreadable_images_are_named_up_to_ten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Image.new("L", (8, 8), 9).save(tmp_path / "a.png")
    Image.new("L", (8, 8), 99).save(tmp_path / "b.png")
    for i in range(30):
        (tmp_path / f"c{i:02d}.png").write_bytes(b"junk")
    ds = load_folder(tmp_path, DataConfig(name=str(tmp_path), image_size=8, test_fraction=0.5))
    assert len(ds.info["skipped"]) == 30  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert err.count("vaekit: skipping") == 10 and "c09.png" in err and "c10.png" not in err
    assert "skipped 30 unreadable images" in err and "the first 10 named above" in err


def test_idx_header_claiming_more_than_the_memory_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "bomb-idx3-ubyte.gz"  # 2^31 images of 28x28 claimed, 10 bytes held
    path.write_bytes(
        gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**31, 28, 28) + b"x" * 10)
    )
    with pytest.raises(DataError, match=r"bomb-idx3-ubyte.gz.*1.53 TiB.*over the limit"):
        read_idx(path)
    write_idx(tmp_path / "ok.idx.gz", np.arange(6, dtype=np.uint8).reshape(2, 3))
    extra = gzip.decompress((tmp_path / "ok.idx.gz").read_bytes()) + b"more"
    (tmp_path / "long.idx").write_bytes(extra)
    with pytest.raises(DataError, match="long.idx holds more than 6 data bytes"):
        read_idx(tmp_path / "long.idx")


# -- case 9: a lying .npy header ---------------------------------------------------------------
@posix_only
def test_case09_lying_npy_header_in_an_npz_is_one_line(tmp_path: Path) -> None:
    path = zipped(tmp_path / "lie.npz", x_train=npy_bytes((10**9, 28, 28), b"\0" * 100))
    result = train(path, tmp_path / "r", memory=MEMORY)
    assert_clean_error(result, "lie.npz:x_train", "784000000000 bytes", "holds 100")


@pytest.mark.parametrize(
    "member, needle",
    [
        (npy_bytes((4, 8, 8), b"\0" * 255), "claims 256 bytes"),  # one byte short
        (npy_bytes((-4, 8, 8), b"\0" * 256), "impossible shape"),
        (b"\x93NUMPY\x01\x00\x08\x00{'a': 1}", "not a valid .npy array"),
        (b"not an npy file at all", "not a valid .npy array"),
        (npy_bytes((4, 8, 8), b"\0" * 2048, descr="|O"), "Python objects"),
    ],
)
def test_lying_or_garbled_npz_members_name_the_array(
    tmp_path: Path, member: bytes, needle: str
) -> None:
    path = zipped(tmp_path / "m.npz", x_train=member)
    with pytest.raises(DataError, match="m.npz:x_train") as err:
        load(path)
    assert needle in str(err.value)


def test_lying_folder_cache_header_is_rebuilt_not_allocated(tmp_path: Path) -> None:
    for i in range(6):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / f"{i}.png")
    cfg = DataConfig(name=str(tmp_path), image_size=8, test_fraction=0.5)
    first = load_folder(tmp_path, cfg, progress=False)
    (cache,) = (tmp_path / ".vaekit-cache").glob("*.npy")
    data = cache.read_bytes()  # a fixed 128-byte header, padded with spaces
    header = data[:128].decode("latin1")
    lie = header.replace("(6, 3, 8, 8)", "(1000000000000, 3, 8, 8)").rstrip().ljust(127) + "\n"
    assert lie != header and len(lie) == 128
    cache.write_bytes(lie.encode("latin1") + data[128:])  # claims 192 TB, holds 1152 bytes
    again = load_folder(tmp_path, cfg, progress=False)
    assert again.info["cache_hit"] is False
    assert (again.x_train == first.x_train).all()


# -- case 11: silent wrong results -------------------------------------------------------------
def test_case11_folder_cache_notices_a_same_size_rewrite_with_mtime_restored(
    tmp_path: Path,
) -> None:
    for i in range(6):
        Image.new("RGB", (8, 8), (30 * i, 0, 0)).save(tmp_path / f"{i}.bmp")  # fixed size
    cfg = DataConfig(name=str(tmp_path), image_size=8, test_fraction=0.5)
    before = load_folder(tmp_path, cfg, progress=False)
    target = tmp_path / "3.bmp"
    st = target.stat()
    Image.new("RGB", (8, 8), (0, 0, 250)).save(target)  # new content, same size
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (target.stat().st_size, target.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    after = load_folder(tmp_path, cfg, progress=False)
    assert after.info["cache_hit"] is False
    blue = [int(x[2].max()) for x in (*after.x_train, *after.x_test)]
    assert 250 in blue and 250 not in [int(x[2].max()) for x in (*before.x_train, *before.x_test)]


@pytest.mark.parametrize(
    "labels, needle",
    [
        (np.full(40, 2**64 - 1, np.uint64), "largest label is 18446744073709551615"),
        (np.full(40, 2**63, np.uint64), "largest label is 9223372036854775808"),
        (np.arange(40, dtype=np.int64) - 3, "labels must be >= 0; found -3"),
        (np.full(40, 70_000, np.int32), "largest label is 70000, over the limit of 65536"),
    ],
)
def test_case11_labels_that_do_not_fit_are_named_not_wrapped(
    tmp_path: Path, labels: np.ndarray, needle: str
) -> None:
    path = npz(tmp_path / "u.npz", x_train=np.zeros((40, 8, 8), np.uint8), y_train=labels)
    with pytest.raises(DataError, match="u.npz:y_train") as err:
        load(path)
    assert needle in str(err.value)


def test_large_but_valid_labels_still_load(tmp_path: Path) -> None:
    y = np.array([0, 65535] * 20, np.uint64)
    data = load(npz(tmp_path / "ok.npz", x_train=np.zeros((40, 8, 8), np.uint8), y_train=y))
    assert data.num_classes == 65536 and int(data.y_train.max()) == 65535  # type: ignore[union-attr]


@pytest.mark.parametrize("given", ["y_train", "y_test"])
def test_case11_labels_for_one_split_only_are_refused(tmp_path: Path, given: str) -> None:
    x = np.zeros((40, 8, 8), np.uint8)
    sizes = {"y_train": 40, "y_test": 10}
    arrays = {"x_train": x, "x_test": x[:10], given: np.zeros(sizes[given], np.int64)}
    path = npz(tmp_path / "half.npz", **arrays)
    other = "y_test" if given == "y_train" else "y_train"
    with pytest.raises(DataError, match=f"half.npz has {given} but no {other}"):
        load(path)
    path = npz(tmp_path / "nox.npz", x_train=x, y_test=np.zeros(10, np.int64))
    with pytest.raises(DataError, match="nox.npz has y_test but no x_test"):
        load(path)
    data = load(npz(tmp_path / "split.npz", x_train=x, y_train=np.arange(40) % 4))
    assert data.y_test is not None and data.num_classes == 4  # one array split consistently


def test_case11_batch_larger_than_the_data_reports_the_samples_it_trained_on(tiny) -> None:  # noqa: ANN001
    run = vaekit.train(tiny("big", **{"data.noise_examples": 64, "train.batch_size": 100_000}))
    (record,) = [
        json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()
    ]
    assert record["step"] == 1  # one short batch of all 64 examples per epoch
    assert record["samples_per_s"] * record["seconds"] == pytest.approx(64)


# -- more hostile arrays and files: one line each, or correct ----------------------------------
@pytest.mark.parametrize(
    "arrays, needle",
    [
        ({"x_train": np.array(3)}, "(shape (), dtype int64) is not an array of examples"),
        ({"x_train": np.zeros((4, 0), np.uint8)}, "hold no values"),
        ({"x_train": np.zeros((40, 8, 0), np.uint8)}, "hold no values"),
        ({"x_train": np.zeros((40, 0, 8, 8), np.uint8)}, "hold no values"),
        ({"x_train": np.full((4, 8, 8), np.nan, np.float32)}, "NaN or infinite"),
        ({"x_train": np.full((4, 8, 8), np.inf, np.float64)}, "NaN or infinite"),
        ({"x_train": np.zeros((4, 8, 8), np.complex64)}, "does not hold plain numbers"),
        ({"x_train": np.zeros((4, 8, 8), np.uint8), "y_train": np.zeros(4)}, "must be integers"),
        ({"y_train": np.zeros(4, np.int64)}, "no array 'x_train' (found: y_train)"),
        ({}, "no array 'x_train' (found: nothing)"),
    ],
)
def test_malformed_arrays_name_the_file(tmp_path: Path, arrays: dict, needle: str) -> None:
    path = npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match="bad.npz") as err:
        load(path)
    assert needle in str(err.value)


def test_files_that_are_not_npz_name_the_problem(tmp_path: Path) -> None:
    np.save(tmp_path / "one.npy", np.zeros((4, 8, 8), np.uint8))
    (tmp_path / "one.npy").rename(tmp_path / "one.npz")
    with pytest.raises(DataError, match="one.npz is a single .npy array, not an .npz"):
        load(tmp_path / "one.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(DataError, match="text.npz is truncated or not a valid .npz"):
        load(tmp_path / "text.npz")
    (tmp_path / "folder.npz").mkdir()
    with pytest.raises(DataError, match="folder.npz holds no images"):
        load(tmp_path / "folder.npz")


def test_unreadable_npz_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = npz(tmp_path / "locked.npz", x_train=np.zeros((40, 8, 8), np.uint8))
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: refuse this one file as the OS would
        real_open = os.open

        def fake_open(p: object, *args: object, **kwargs: object) -> int:
            if Path(str(p)) == path:
                raise PermissionError(13, "Permission denied", str(p))
            return real_open(p, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "open", fake_open)
    with pytest.raises(DataError, match="cannot read .*locked.npz: Permission denied"):
        load(path)
