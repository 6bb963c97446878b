"""Where datasets come from: named datasets (found locally or downloaded), .npz files
(read by files/npz.py), folders of images (files/folder.py), Hugging Face datasets
(rows/hf.py), noise."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..errors import DataError, DownloadError
from ..io.download import download as download_file
from .core import augment
from .core.dataset import Dataset, as_labels
from .core.validation import carve_validation
from .files.idx import read_idx
from .files.npz import load_npz
from .files.single_array import SUFFIXES, load_file

DEBIAN_DIR = Path("/usr/share/datasets")


@dataclass(frozen=True)
class NamedDataset:
    name: str
    urls: tuple[str, ...]  # mirrors, tried in order
    sha256: dict[str, str]  # file name -> SHA-256 of the file as distributed
    class_names: tuple[str, ...]
    debian_package: str | None
    citation: str

    files = (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    )


NAMED = {
    "mnist": NamedDataset(
        "mnist",
        (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        dict(
            zip(
                NamedDataset.files,
                (
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                ),
                strict=True,
            )
        ),
        tuple(str(d) for d in range(10)),
        None,
        "LeCun, Cortes & Burges, The MNIST database of handwritten digits",
    ),
    "fashion-mnist": NamedDataset(
        "fashion-mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        dict(
            zip(
                NamedDataset.files,
                (
                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                ),
                strict=True,
            )
        ),
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        "dataset-fashion-mnist",
        "Xiao, Rasul & Vollgraf (2017), Fashion-MNIST",
    ),
}

DATASET_NAMES = (*NAMED, "noise")


def default_root(cfg_root: str = "") -> Path:
    if cfg_root:
        return Path(cfg_root).expanduser()
    if os.environ.get("VAEKIT_DATA"):
        return Path(os.environ["VAEKIT_DATA"]).expanduser()
    return Path.home() / ".cache" / "vaekit"


def search_dirs(name: str, cfg_root: str = "") -> list[Path]:
    """Every directory a named dataset is looked for in, in order."""
    dirs = []
    if cfg_root:
        dirs.append(Path(cfg_root).expanduser() / name)
    if os.environ.get("VAEKIT_DATA"):
        dirs.append(Path(os.environ["VAEKIT_DATA"]).expanduser() / name)
    dirs.append(Path.home() / ".cache" / "vaekit" / name)
    dirs.append(DEBIAN_DIR / name)
    return list(dict.fromkeys(dirs))


def _find_file(directory: Path, file: str) -> Path | None:
    for candidate in (directory / file, directory / file.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def find_local(name: str, cfg_root: str = "") -> Path | None:
    """The first directory holding all four files of `name` (gzipped or not)."""
    spec = NAMED[name]
    for directory in search_dirs(name, cfg_root):
        if all(_find_file(directory, f) for f in spec.files):
            return directory
    return None


def _missing_message(name: str, cfg_root: str) -> str:
    spec = NAMED[name]
    where = default_root(cfg_root) / name
    hint = (
        f"install the Debian package {spec.debian_package} (apt-get install "
        f"{spec.debian_package}) or "
        if spec.debian_package
        else ""
    )
    return (
        f"dataset {name} was not found locally and could not be downloaded; {hint}"
        f"put {', '.join(spec.files)} in {where}"
    )


def fetch(name: str, cfg_root: str = "", download: bool = True, progress: bool = True) -> Path:
    """Return a directory holding the dataset's four IDX files, downloading them if needed."""
    if name not in NAMED:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(NAMED)}")
    found = find_local(name, cfg_root)
    if found is not None:
        return found
    if not download:
        raise DataError(_missing_message(name, cfg_root))
    spec = NAMED[name]
    target = default_root(cfg_root) / name
    for file in spec.files:
        if _find_file(target, file):
            continue
        errors = []
        for base in spec.urls:
            try:
                if progress:
                    print(f"downloading {base}{file}", file=sys.stderr)
                download_file(base + file, target / file, spec.sha256[file], show_progress=progress)
                break
            except DownloadError as e:
                errors.append(str(e))
        else:
            raise DataError(f"{_missing_message(name, cfg_root)} ({'; '.join(errors)})")
    return target


def load_named(name: str, cfg: DataConfig, progress: bool = True) -> Dataset:
    directory = fetch(name, cfg.root, cfg.download, progress)
    spec = NAMED[name]
    arrays = [read_idx(_find_file(directory, f)) for f in spec.files]  # type: ignore[arg-type]
    x_train, y_train, x_test, y_test = arrays
    checked = []  # int64 labels, in range
    for images, labels, file, label_file in (
        (x_train, y_train, spec.files[0], spec.files[1]),
        (x_test, y_test, spec.files[2], spec.files[3]),
    ):
        if images.ndim != 3 or images.dtype != np.uint8 or labels.shape != images.shape[:1]:
            raise DataError(
                f"{directory / file} does not match its labels (images "
                f"{images.shape}, labels {labels.shape}); fetch the dataset again"
            )
        labels = as_labels(labels, len(images), str(directory / label_file))
        if len(labels) and labels.max() >= len(spec.class_names):
            raise DataError(
                f"{directory / label_file}: label {labels.max()} is out of range for the "
                f"{len(spec.class_names)} classes of {name}; fetch the dataset again"
            )
        checked.append(labels)
    return Dataset(
        name,
        torch.from_numpy(x_train[:, None]),  # read_idx's arrays are fresh and writable
        torch.from_numpy(x_test[:, None]),
        torch.from_numpy(checked[0]),
        torch.from_numpy(checked[1]),
        list(spec.class_names),
        {"source": "named", "path": str(directory)},
    )


def make_noise(cfg: DataConfig, seed: int = 0) -> Dataset:
    """Smooth random images (7x7 noise upsampled to 28x28) with 10 random labels.

    The structure is low-dimensional on purpose: a VAE can learn it in seconds, so the
    noise demo shows the loss falling and exercises every part of the pipeline. Its
    validation set (with data.val_fraction > 0) is drawn after the other two, like the
    test set: `noise_examples` stays the training set's size, and the training and test
    images are those of a run without one.
    """
    rng = np.random.default_rng(seed)
    n_train = cfg.noise_examples
    n_test = max(1, int(round(n_train * cfg.test_fraction)))
    images, labels = _noise_images(rng, n_train + n_test)
    data = Dataset(
        "noise",
        torch.from_numpy(images[:n_train].copy()),
        torch.from_numpy(images[n_train:].copy()),
        torch.from_numpy(labels[:n_train].copy()),
        torch.from_numpy(labels[n_train:].copy()),
        [str(i) for i in range(10)],
        {"source": "noise", "seed": seed},
    )
    if cfg.val_fraction > 0:
        x_val, y_val = _noise_images(rng, max(1, int(round(n_train * cfg.val_fraction))))
        data.x_val, data.y_val = torch.from_numpy(x_val), torch.from_numpy(y_val)
        data.info["validation"] = {"source": "generated", "train": n_train, "val": len(x_val)}
    return data


def _noise_images(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n smooth random images (N, 1, 28, 28) uint8 and their labels, from `rng`."""
    coarse = rng.integers(0, 256, size=(n, 1, 7, 7), dtype=np.uint8)
    images = np.kron(coarse, np.ones((1, 1, 4, 4), dtype=np.uint8))  # (N, 1, 28, 28)
    return images, rng.integers(0, 10, size=n).astype(np.int64)


def _image_extensions() -> frozenset[str]:
    from .files.images import EXTENSIONS  # Pillow, only when a path is looked at

    return EXTENSIONS


def load_data(
    cfg: DataConfig, seed: int = 0, progress: bool = True, *, own_folder: bool = False
) -> Dataset:
    """Resolve `cfg.name` to a dataset: a named one, noise, an .npz/.npy/.csv/.parquet file,
    a folder or a Hugging Face dataset (hf:...); limited to `cfg.limit_train` /
    `cfg.limit_test` examples, then with its validation set (its own, or
    `cfg.val_fraction` of the training examples: core/validation.py). A folder's decoded cache
    is written beside it only for `own_folder` (train's --data), else into vaekit's cache
    directory (a run's config.json may name any folder)."""
    name = cfg.name
    if name.startswith("hf:"):
        from .rows.read import load_hf  # the datasets library, only when asked for

        data = load_hf(name, cfg, progress)
    elif name in NAMED:
        data = load_named(name, cfg, progress)
    elif name == "noise":
        data = make_noise(cfg, seed)
    else:
        path = Path(name).expanduser()
        try:
            is_dir, exists = path.is_dir(), path.exists()
        except OSError as e:  # a name too long, a symlink loop
            raise DataError(f"--data {name[:100]!r} cannot be used ({e.strerror or e})") from None
        if is_dir:
            from .files.folder import load_folder

            data = load_folder(path, cfg, progress=progress, own=own_folder)
        elif path.suffix.lower() in SUFFIXES:  # t.CSV is a table too
            data = load_file(path, cfg)
        elif path.suffix.lower() in _image_extensions():
            raise DataError(
                f"--data {name[:100]!r} is one image; --data takes a folder of images: put "
                f"it in a folder and pass the folder ({path.parent / 'my-images'}/ say)"
            )
        elif path.suffix.lower() == ".npz" or exists:  # a FIFO or device is refused there
            data = load_npz(path, cfg)
        else:
            raise DataError(
                f"--data {name!r} is not a dataset name ({', '.join(DATASET_NAMES)}),"
                " an .npz, .npy, .csv or .parquet file, a folder or hf:OWNER/NAME"
            )
    data = data.limit(cfg.limit_train, cfg.limit_test)
    data.info["loaded_as"] = name  # provenance.record: the config's own data, reloadable
    data = carve_validation(data, cfg.val_fraction, cfg.split_seed)
    if "crop" in cfg.augment:  # decoded with a margin (files/folder.py): the centres, and the rest
        data = augment.centred(data, cfg.image_size)
    return data
