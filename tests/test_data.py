"""Data sources: IDX files, .npz files, named datasets (found or downloaded), noise."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.config import DataConfig
from vaekit.data import sources
from vaekit.data.core.dataset import batch_indices, epoch_permutation, num_batches
from vaekit.data.files.idx import read_idx, write_idx
from vaekit.errors import DataError


def write_fake_named(directory: Path, n_train: int = 50, n_test: int = 20) -> None:
    """The four IDX files of an MNIST-like dataset, small and gzipped."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    write_idx(
        directory / "train-images-idx3-ubyte.gz",
        rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
    )
    write_idx(
        directory / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, n_train, dtype=np.uint8)
    )
    write_idx(
        directory / "t10k-images-idx3-ubyte.gz",
        rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
    )
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, n_test, dtype=np.uint8))


@pytest.fixture
def no_system_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Hide Debian's copy, $VAEKIT_DATA and ~/.cache so only the test's files count."""
    monkeypatch.setattr(sources, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.delenv("VAEKIT_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VAEKIT_OFFLINE", raising=False)  # the test's mirrors are local files
    return tmp_path


def test_idx_round_trip_gz_and_raw(tmp_path: Path) -> None:
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.idx", "a.idx.gz"):
        write_idx(tmp_path / name, a)
        assert np.array_equal(read_idx(tmp_path / name), a)
    f = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    write_idx(tmp_path / "f.idx", f)
    assert np.array_equal(read_idx(tmp_path / "f.idx"), f)


def test_truncated_and_malformed_idx_name_the_file(tmp_path: Path) -> None:
    write_idx(tmp_path / "a.idx", np.zeros((10, 28, 28), dtype=np.uint8))
    raw = (tmp_path / "a.idx").read_bytes()
    (tmp_path / "short.idx").write_bytes(raw[:-100])
    with pytest.raises(DataError, match="short.idx.*truncated"):
        read_idx(tmp_path / "short.idx")
    (tmp_path / "magic.idx").write_bytes(b"\x01\x02" + raw[2:])
    with pytest.raises(DataError, match="magic.idx is not an IDX file"):
        read_idx(tmp_path / "magic.idx")
    (tmp_path / "cut.idx.gz").write_bytes(gzip.compress(raw)[:50])
    with pytest.raises(DataError, match="cut.idx.gz"):
        read_idx(tmp_path / "cut.idx.gz")
    (tmp_path / "head.idx").write_bytes(raw[:6])
    with pytest.raises(DataError, match="head.idx is truncated inside its header"):
        read_idx(tmp_path / "head.idx")


def test_named_dataset_found_in_vaekit_data(
    no_system_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = no_system_data / "vdata"
    write_fake_named(root / "fashion-mnist")
    monkeypatch.setenv("VAEKIT_DATA", str(root))
    data = sources.load_data(DataConfig(name="fashion-mnist", download=False, val_fraction=0))
    assert data.x_train.shape == (50, 1, 28, 28) and data.x_train.dtype == torch.uint8
    assert data.x_test.shape == (20, 1, 28, 28) and data.y_train.dtype == torch.int64
    assert data.class_names[0] == "T-shirt/top"


def test_offline_without_files_says_what_to_install(no_system_data: Path) -> None:
    with pytest.raises(DataError) as err:
        sources.fetch("fashion-mnist", str(no_system_data / "root"), download=False)
    message = str(err.value)
    assert "dataset-fashion-mnist" in message and "train-images-idx3-ubyte.gz" in message
    assert "\n" not in message


def test_download_verifies_sha256(no_system_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = no_system_data / "mirror"
    write_fake_named(mirror)
    digests = {
        f: hashlib.sha256((mirror / f).read_bytes()).hexdigest() for f in sources.NamedDataset.files
    }
    spec = sources.NAMED["mnist"]
    good = sources.NamedDataset(
        "mnist", (mirror.as_uri() + "/",), digests, spec.class_names, None, spec.citation
    )
    monkeypatch.setitem(sources.NAMED, "mnist", good)
    root = no_system_data / "root"
    directory = sources.fetch("mnist", str(root), progress=False)
    assert directory == root / "mnist"
    assert (directory / "t10k-labels-idx1-ubyte.gz").read_bytes() == (
        mirror / "t10k-labels-idx1-ubyte.gz"
    ).read_bytes()
    assert not list(directory.glob(".tmp-*"))

    bad = sources.NamedDataset(
        "mnist",
        (mirror.as_uri() + "/",),
        {f: "0" * 64 for f in digests},
        spec.class_names,
        None,
        "",
    )
    monkeypatch.setitem(sources.NAMED, "mnist", bad)
    with pytest.raises(DataError, match="SHA-256"):
        sources.fetch("mnist", str(no_system_data / "root2"), progress=False)
    assert not (no_system_data / "root2" / "mnist" / "train-images-idx3-ubyte.gz").exists()


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_npz_uint8_and_float_with_and_without_test_split(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 256, (40, 8, 8), dtype=np.uint8)
    data = sources.load_data(
        DataConfig(name=str(_npz(tmp_path / "a.npz", x_train=x)), val_fraction=0)
    )
    assert data.x_train.shape[0] + data.x_test.shape[0] == 40 and data.x_test.shape[0] == 4
    assert data.info["split"]["seed"] == 0
    xf = x.astype(np.float32) / 255
    data = sources.load_data(
        DataConfig(
            name=str(
                _npz(
                    tmp_path / "b.npz",
                    x_train=xf,
                    x_test=xf[:5],
                    y_train=np.arange(40),
                    y_test=np.arange(5),
                )
            ),
            val_fraction=0,
        )
    )
    # float data are kept as they are, never rounded to 8 bits
    assert data.x_train.dtype == torch.float32
    assert torch.equal(data.x_train[:, 0], torch.from_numpy(xf))
    assert data.y_test.tolist() == [0, 1, 2, 3, 4] and data.num_classes == 40


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: _npz(p, x_train=np.full((4, 8, 8), 300, dtype=np.int16)), "0..255"),
        (
            lambda p: _npz(p, x_train=np.zeros((4, 2, 2, 2, 2), np.uint8)),
            "not an array of examples",
        ),
        (lambda p: _npz(p, y_train=np.zeros(4)), "no array 'x_train'"),
        (
            lambda p: _npz(
                p, x_train=np.zeros((4, 8, 8), np.uint8), x_test=np.zeros((2, 9, 9), np.uint8)
            ),
            "must match",
        ),
        (
            lambda p: _npz(p, x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.zeros(3, np.int64)),
            "3 labels for 4 images",
        ),
        (lambda p: _npz(p, x_train=np.array([None, 1], dtype=object)), "Python objects"),
    ],
)
def test_bad_npz_files_are_clear_errors(tmp_path: Path, make, needle: str) -> None:
    path = make(tmp_path / "bad.npz")
    with pytest.raises(DataError) as err:
        sources.load_data(DataConfig(name=str(path)))
    assert needle in str(err.value) and "bad.npz" in str(err.value)


def test_truncated_npz_is_a_clear_error(tmp_path: Path) -> None:
    path = _npz(tmp_path / "t.npz", x_train=np.zeros((100, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="t.npz"):
        sources.load_data(DataConfig(name=str(path)))


def test_unknown_data_name_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a dataset name"):
        sources.load_data(DataConfig(name=str(tmp_path / "nothing-here")))


def test_noise_is_seeded_and_learnable_shape() -> None:
    a = sources.load_data(DataConfig(name="noise", noise_examples=64), seed=1)
    b = sources.load_data(DataConfig(name="noise", noise_examples=64), seed=1)
    assert torch.equal(a.x_train, b.x_train) and a.x_train.shape == (64, 1, 28, 28)
    assert torch.equal(
        a.x_train[:, :, ::4, ::4].repeat_interleave(4, 2).repeat_interleave(4, 3), a.x_train
    )  # 7x7 structure upsampled


def test_epoch_order_is_a_pure_function_of_seed_and_epoch() -> None:
    assert torch.equal(epoch_permutation(100, 3, 5), epoch_permutation(100, 3, 5))
    assert not torch.equal(epoch_permutation(100, 3, 5), epoch_permutation(100, 3, 6))
    batches = batch_indices(epoch_permutation(100, 0, 0), 32)
    assert [len(b) for b in batches] == [32, 32, 32]  # the ragged last batch is dropped
    assert len(set(torch.cat(batches).tolist())) == 96


@pytest.mark.parametrize("n", [0, 1, 7, 31, 32, 33, 96, 100])
@pytest.mark.parametrize("drop_last", [True, False])
def test_num_batches_counts_what_batch_indices_makes(n: int, drop_last: bool) -> None:
    made = batch_indices(torch.arange(n), 32, drop_last)
    assert num_batches(n, 32, drop_last) == len(made)
    assert torch.equal(torch.cat([torch.arange(0), *made]), torch.arange(sum(map(len, made))))
    assert sum(map(len, made)) == (n if not drop_last or n < 32 else n // 32 * 32)
