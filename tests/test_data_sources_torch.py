"""Any data a user has: torch Datasets and DataLoaders, Hugging Face datasets (in Python
and as `--data hf:...`, offline), streamed or read into memory in the same seeded order,
resumed mid-epoch bit-identically, and one line for what vaekit cannot use."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, TensorDataset
from torch.utils.data import Dataset as TorchDataset

import vaekit
from conftest import TINY_FLAGS, assert_clean_error, run_cli, tiny_config
from vaekit import cli
from vaekit.data import from_torch
from vaekit.data.core.dataset import split_indices
from vaekit.data.core.streaming import LazyRows
from vaekit.data.core.validation import carve_validation
from vaekit.errors import ConfigError, DataError, VaekitError
from vaekit.training import objective

datasets = pytest.importorskip("datasets")

N = 200  # examples: 180 train, 20 test at test_fraction 0.1; 2 steps of 64 an epoch


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Never the internet, and the datasets cache in the test's own directory: here (the
    libraries read their settings once, at import) and in child processes (returned)."""
    from huggingface_hub import constants

    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf" / "datasets")
    return env


def images(n: int = N, shape: tuple[int, ...] = (1, 8, 8), seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, *shape), np.uint8))


def floats(n: int = N, shape: tuple[int, ...] = (1, 8, 8), seed: int = 0) -> torch.Tensor:
    """Standardised-looking float32 images: outside [0, 1], not exact in float16."""
    return torch.from_numpy(np.random.default_rng(seed).normal(0.5, 2.0, (n, *shape))).float()


def labels(n: int = N) -> torch.Tensor:
    return torch.arange(n) % 3


class Counting(TorchDataset):
    """A map-style dataset of dict examples that counts the examples it is asked for."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        self.x, self.y, self.reads = x, y, 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        self.reads += 1
        example = {"pixels": self.x[i], "caption": f"image {i}"}
        if self.y is not None:
            example["label"] = int(self.y[i])
        return example


def config(tmp_path: Path, name: str, **overrides: Any) -> vaekit.Config:
    return tiny_config(tmp_path / name, **overrides)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return vaekit.load(run).state_dict()


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def record_batches(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Every training batch the objective sees, in order."""
    seen: list[torch.Tensor] = []
    original = objective.compute

    def spy(model: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        seen.append(x.detach().clone())
        return original(model, x, *args, **kwargs)

    monkeypatch.setattr(objective, "compute", spy)
    return seen


# -- torch datasets ------------------------------------------------------------------------
def test_a_tensor_dataset_trains_the_same_in_memory_and_streamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = TensorDataset(images(), labels())
    seen, batches, runs = record_batches(monkeypatch), {}, {}
    for stream in ("false", "true"):
        cfg = config(tmp_path, stream, **{"data.stream": stream, "train.epochs": 2})
        trainer = vaekit.Trainer(None, cfg, data=data)
        kind = LazyRows if stream == "true" else torch.Tensor
        assert isinstance(trainer.data.x_train, kind) and trainer.data.info["streamed"] == (
            stream == "true"
        )
        assert trainer.data.class_names == ["0", "1", "2"]
        result = trainer.fit()
        assert "val_nelbo" in result.history[-1]
        batches[stream], runs[stream] = list(seen), result.run_dir
        seen.clear()
    assert len(batches["true"]) == 4  # 162 training rows (18 for validation): 2 batches of 64
    assert all(torch.equal(a, b) for a, b in zip(batches["false"], batches["true"], strict=True))
    assert same(weights(runs["false"]), weights(runs["true"]))
    # the batches are the rows of vaekit's seeded splits and epoch order, nothing else
    x = carve_validation(from_torch(data, stream=False), 0.1, 0).x_train
    order = vaekit.data.epoch_permutation(162, 0, 0)[:64]
    assert torch.equal(batches["true"][0], x[order].float() / 255)


def test_a_dataloader_trains_on_its_dataset_in_vaekits_order(tmp_path: Path) -> None:
    data = TensorDataset(images(), labels())
    loader = DataLoader(data, batch_size=7, shuffle=True)  # neither is used
    a = vaekit.train(config(tmp_path, "loader"), data=loader)
    b = vaekit.train(config(tmp_path, "dataset"), data=data)
    assert same(weights(a), weights(b))


def test_dict_examples_take_the_column_named_or_found(tmp_path: Path) -> None:
    data = Counting(images(), labels())  # pixels (array), caption (str), label (int)
    found = from_torch(data)
    assert found.shape == (1, 8, 8) and found.y_train is not None

    class TwoColumns(Counting):
        def __getitem__(self, i: int) -> dict[str, Any]:
            return {**super().__getitem__(i), "mask": torch.zeros(4, 4)}

    two = TwoColumns(images(), labels())
    with pytest.raises(DataError, match=r"'pixels', 'mask' could each hold the images.*column"):
        from_torch(two)
    cfg = config(tmp_path, "dict", **{"data.column": "pixels", "data.label_column": "none"})
    trainer = vaekit.Trainer(None, cfg, data=two)
    assert trainer.data.y_train is None
    trainer.fit()


def test_pil_images_become_uint8_rows_and_float_tensors_stay_float(tmp_path: Path) -> None:
    x = images(40, (8, 8, 3))

    class Pictures(TorchDataset):
        def __len__(self) -> int:
            return 40

        def __getitem__(self, i: int) -> tuple[Image.Image]:
            return (Image.fromarray(x[i].numpy()).convert("RGBA"),)  # RGBA: read as RGB

    data = from_torch(Pictures(), stream=False, test_fraction=0.25)
    assert data.shape == (3, 8, 8) and data.x_train.dtype == torch.uint8 and data.y_train is None
    scaled = TensorDataset(x.permute(0, 3, 1, 2).float() / 255)  # (C, H, W) in [0, 1]
    float_rows = from_torch(scaled, stream=False, test_fraction=0.25).x_train
    assert float_rows.dtype == torch.float32  # not rounded to 8 bits
    assert torch.equal(float_rows, data.x_train.float() / 255)
    half = TensorDataset(torch.rand(8, 1, 4, 4).bfloat16())  # no numpy dtype: read as float
    assert from_torch(half, test_fraction=0.25).x_train.dtype == torch.float32


@pytest.mark.parametrize("stream", [False, True])
def test_float_examples_round_trip_exactly_as_float32(stream: bool) -> None:
    train_rows, test_rows, _ = split_indices(N, 0.1, 0)
    for x in (floats(), floats().double(), floats().half()):  # float16: stored as float32
        data = from_torch(TensorDataset(x, labels()), stream=stream)
        assert isinstance(data.x_train, LazyRows) == stream
        assert data.x_train.dtype == data.x_test.dtype == torch.float32
        assert data.x_train.element_size() == 4
        assert torch.equal(data.x_train[:], x[train_rows].float())
        assert torch.equal(data.x_test[:], x[test_rows].float())
    limited = from_torch(TensorDataset(floats()), stream=stream, limit_train=10)
    rows = limited.x_train.index_select(0, torch.tensor([7, 2]))
    assert torch.equal(rows, floats()[train_rows[[7, 2]]])


def test_normalised_floats_train_with_a_gaussian(tmp_path: Path) -> None:
    """Once refused (floats had to lie in [0, 1]); the 'auto' likelihood now takes them."""
    data = TensorDataset(torch.full((40, 1, 8, 8), -0.5))
    result = vaekit.Trainer(None, config(tmp_path, "norm"), data=data).fit()
    assert result.model.likelihood == "gaussian" and result.model.learn_scale
    assert np.isfinite(result.history[-1]["val_nelbo"])


def test_streamed_rows_are_read_only_when_a_batch_needs_them(tmp_path: Path) -> None:
    data = Counting(images())
    dataset = from_torch(data, stream=True, limit_train=100)  # the split and limit: by index
    assert data.reads == 1 and dataset.x_train.shape == (100, 1, 8, 8)
    rows = dataset.x_train.index_select(0, torch.tensor([5, 2]))
    assert data.reads == 3 and rows.shape == (2, 1, 8, 8)
    assert torch.equal(rows, from_torch(data, stream=False, limit_train=100).x_train[[5, 2]])


def test_the_validation_split_of_streamed_rows_is_carved_by_index_reading_nothing() -> None:
    data = Counting(images())
    dataset = from_torch(data, stream=True, limit_train=100)
    reads = data.reads
    carved = carve_validation(dataset, 0.2, seed=0)
    assert isinstance(carved.x_train, LazyRows) and isinstance(carved.x_val, LazyRows)
    assert data.reads == reads  # views by index: no image read
    assert carved.x_train.shape[0] == 80 and carved.x_val.shape[0] == 20
    in_memory = carve_validation(from_torch(data, stream=False, limit_train=100), 0.2, seed=0)
    assert torch.equal(carved.x_val[:], in_memory.x_val)  # the same rows, streamed or not
    assert torch.equal(carved.x_train[:], in_memory.x_train)


def test_an_iterable_dataset_is_read_into_memory_within_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = images()

    class Stream(IterableDataset):
        def __iter__(self) -> Any:
            for i in range(len(x)):
                yield x[i], i % 3

    run = vaekit.train(config(tmp_path, "iterable"), data=DataLoader(Stream(), batch_size=5))
    assert (run / "model.safetensors").is_file()

    class Endless(IterableDataset):
        def __iter__(self) -> Any:
            while True:
                yield x[0]

    from vaekit.data.rows import iterable

    monkeypatch.setattr(iterable, "memory_limit", lambda: 100_000)
    with pytest.raises(DataError, match="iterable dataset.*the limit of 97.7 KiB"):
        from_torch(Endless())


# -- streaming: resume mid-epoch -----------------------------------------------------------
class Crash(Exception):
    pass


PIXELS = {"uint8": images, "float": floats}


@pytest.mark.parametrize("kind", PIXELS)
@pytest.mark.parametrize("how", ["stop", "crash"])
def test_a_streamed_run_cut_mid_epoch_resumes_bit_identically(
    tmp_path: Path, how: str, kind: str
) -> None:
    """Stopped by a callback (saved there) and resumed streamed; or killed after a
    checkpoint_every save and resumed with the rows in memory: the weights of an
    uninterrupted run, bit for bit, for uint8 and float32 rows."""
    pixels = PIXELS[kind]

    class CutAt(vaekit.Callback):
        def on_step_end(self, trainer: vaekit.Trainer) -> None:
            if trainer.state.global_step == 3:  # epoch 2, step 1 of 2
                if how == "crash":
                    raise Crash  # after the step's checkpoint; nothing else is saved
                trainer.stop()

    overrides = {"train.epochs": 2, "data.stream": "true", "optim.ema": 0.9}
    full = vaekit.train(config(tmp_path, "full", **overrides), data=Counting(pixels()))
    cut = config(tmp_path, "cut", **overrides, **{"train.checkpoint_every": 1})
    data = Counting(pixels())
    trainer = vaekit.Trainer(None, cut, data=data, callbacks=[CutAt()])
    assert isinstance(trainer.data.x_train, LazyRows)
    assert trainer.data.x_train.dtype == {"uint8": torch.uint8, "float": torch.float32}[kind]
    with pytest.raises(Crash) if how == "crash" else contextlib.nullcontext():
        trainer.fit()
    state = torch.load(tmp_path / "cut" / "state.pt", weights_only=True)
    assert (state["epoch"], state["step_in_epoch"]) == (1, 1)
    # streamed again, or in memory this time: the same rows in the same order
    cut.data.stream = "true" if how == "stop" else "false"
    vaekit.Trainer(None, cut, data=Counting(pixels()), resume=True).fit()
    assert same(weights(full), weights(tmp_path / "cut"))
    # other data are refused by the fingerprint, not silently trained on
    cut.train.epochs = 3
    with pytest.raises(ConfigError, match="training data differ"):
        vaekit.Trainer(None, cut, data=Counting(pixels(seed=1)), resume=True).fit()


# -- Hugging Face datasets -----------------------------------------------------------------
def hf_dataset(n: int = N, seed: int = 0) -> Any:
    x = images(n, (8, 8), seed).numpy()
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=["circle", "square", "triangle"]),
            "caption": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_dict(
        {
            "image": [Image.fromarray(a) for a in x],
            "label": [i % 3 for i in range(n)],
            "caption": [f"image {i}" for i in range(n)],
        },
        features=features,
    )


def test_a_hugging_face_dataset_trains_with_its_class_names(tmp_path: Path) -> None:
    ds = hf_dataset()
    streamed = from_torch(ds, stream=True)
    memory = from_torch(ds, stream=False)
    assert streamed.class_names == memory.class_names == ["circle", "square", "triangle"]
    assert torch.equal(streamed.x_train[:], memory.x_train) and memory.shape == (1, 8, 8)
    train_rows, _, _ = split_indices(N, 0.1, 0)  # the seeded split, by index
    expected = np.asarray(ds[int(train_rows[3])]["image"])
    assert torch.equal(memory.x_train[3, 0], torch.tensor(expected))
    assert streamed.fingerprint() == memory.fingerprint()
    result = vaekit.Trainer(None, config(tmp_path, "hf"), data=ds).fit()
    assert result.model.class_names == ["circle", "square", "triangle"]


def hf_floats(n: int = N) -> Any:
    """Float images in an Array3D column, as a dataset of measurements would hold them."""
    features = datasets.Features(
        {
            "image": datasets.Array3D(shape=(1, 8, 8), dtype="float32"),
            "label": datasets.ClassLabel(names=["a", "b", "c"]),
        }
    )
    x = list(floats(n).numpy())
    return datasets.Dataset.from_dict(
        {"image": x, "label": [i % 3 for i in range(n)]}, features=features
    )


def test_a_float_hugging_face_dataset_trains_streamed(tmp_path: Path) -> None:
    from vaekit.config import DataConfig
    from vaekit.data.rows.read import load_hf

    train_rows, _, _ = split_indices(N, 0.1, 0)
    ds = hf_floats()
    for data in (from_torch(ds, stream=True), from_torch(ds.to_iterable_dataset())):
        assert data.x_train.dtype == torch.float32
        assert torch.equal(data.x_train[:], floats()[train_rows])
    ds.save_to_disk(str(tmp_path / "floats"))  # and as --data hf:PATH
    streamed = load_hf(f"hf:{tmp_path / 'floats'}", DataConfig(stream="true"), progress=False)
    assert isinstance(streamed.x_train, LazyRows) and streamed.x_train.dtype == torch.float32
    assert torch.equal(streamed.x_train[:], floats()[train_rows])
    result = vaekit.Trainer(None, config(tmp_path, "hf-float"), data=streamed).fit()
    assert result.model.likelihood == "gaussian" and result.model.class_names == ["a", "b", "c"]
    assert np.isfinite(result.history[-1]["val_nelbo"])


def test_a_hugging_face_image_column_of_rgba_is_read_as_rgb_in_every_batch() -> None:
    """The first example decides the rows' shape (RGB: three channels); the column is cast
    to RGB with it, so the batches read later, in memory or streamed, are RGB too."""
    pixels = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 4), dtype=np.uint8)
    rgba = [Image.fromarray(p, "RGBA") for p in pixels]
    features = datasets.Features({"image": datasets.Image()})
    ds = datasets.Dataset.from_dict({"image": rgba}, features=features)
    expected = torch.from_numpy(np.stack([np.asarray(i.convert("RGB")) for i in rgba]))
    for stream in (True, False):
        data = from_torch(ds, ds, stream=stream)  # the test split given: train is all of ds
        assert torch.equal(data.x_train[:], expected.permute(0, 3, 1, 2))


def test_hf_on_the_command_line_offline_with_its_test_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], _offline: dict[str, str]
) -> None:
    local = tmp_path / "shapes"
    hf_dataset(160).to_parquet(str(local / "data" / "train-00000-of-00001.parquet"))
    hf_dataset(24, seed=1).to_parquet(str(local / "data" / "test-00000-of-00001.parquet"))
    out = tmp_path / "run"
    args = ["train", "--data", f"hf:{local}", *TINY_FLAGS, "--data.stream", "true"]
    assert cli.main([*args, "--out", str(out)]) == 0, capsys.readouterr().err
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["val_nelbo"] > 0 and "test_nelbo" not in record
    capsys.readouterr()
    assert cli.main(["evaluate", str(out), "--json"]) == 0  # the test split, streamed
    assert json.loads(capsys.readouterr().out)["n"] == 24
    # in a fresh process, as a user runs it: offline and not cached is one line
    missing = ["train", "--data", "hf:nobody/nothing", *TINY_FLAGS, "--out", str(out) + "-2"]
    result = run_cli(*missing, env=_offline)
    assert_clean_error(result, "hf:nobody/nothing", "not in the datasets cache", "HF_HUB_OFFLINE")


def test_hf_names_parse_and_missing_splits_say_which_exist(tmp_path: Path) -> None:
    from vaekit.config import DataConfig
    from vaekit.data.rows.read import load_hf

    saved = tmp_path / "saved"
    datasets.DatasetDict({"validation": hf_dataset(40)}).save_to_disk(str(saved))
    one = load_hf(f"hf:{saved}", DataConfig(), progress=False)  # the only split; 10% held out
    assert one.x_train.shape[0] == 36 and one.x_test.shape[0] == 4
    with pytest.raises(DataError, match=r"has no split 'train' \(splits: validation\)"):
        load_hf(f"hf:{saved}:train", DataConfig(), progress=False)


# -- what vaekit cannot use: one line ------------------------------------------------------
class Listed(TorchDataset):
    def __init__(self, examples: list[Any]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Any:
        return self.examples[i]


BAD = {
    "strings": (Listed(["a", "b"]), r"Listed\[0\] is str 'a'.*an image, a tuple"),
    "empty": (TensorDataset(torch.zeros(0, 1, 8, 8)), "TensorDataset holds no examples"),
    "ragged": (Listed([[[1, 2], [3]]] * 10), r"Listed\[0\] is a ragged list"),
    "shapes differ": (
        Listed([np.zeros((8, 8), np.uint8)] * 9 + [np.zeros((9, 8), np.uint8)]),
        r"Listed\[9\] is an image of shape \(9, 8\) and dtype uint8.*first example's is \(8, 8\)",
    ),
    "no image column": (
        Listed([{"caption": "x", "label": 1}] * 4),
        r"no column can hold the images \(columns: 'caption', 'label'\)",
    ),
    "five axes": (TensorDataset(torch.zeros(4, 1, 2, 8, 8)), "is not an array of examples"),
    "not finite": (
        TensorDataset(torch.cat([floats(9), torch.full((1, 1, 8, 8), torch.nan)])),
        r"TensorDataset\[9\] holds NaN or infinite values",
    ),
    "beyond float32": (
        Listed([np.zeros((8, 8))] * 9 + [np.full((8, 8), 1e300)]),  # float64
        r"Listed\[9\] holds NaN or infinite values \(or values beyond float32's range\)",
    ),
    "float after uint8": (
        Listed([np.zeros((8, 8), np.uint8)] * 9 + [np.zeros((8, 8), np.float32)]),
        r"Listed\[9\] is an image of dtype float32, but the first example's is uint8",
    ),
    "uint8 after float": (
        Listed([np.zeros((8, 8), np.float32)] * 9 + [np.zeros((8, 8), np.uint8)]),
        r"Listed\[9\] is an image of dtype uint8, but the first example's is float",
    ),
    "string labels": (
        Listed([{"image": np.zeros((8, 8), np.uint8), "label": "cat"}] * 4),
        "",  # a label that is not a whole number is not a label: trains without
    ),
    "huge label": (Listed([(np.zeros((8, 8), np.uint8), 10**20)] * 10), "at most 65536"),
}


@pytest.mark.parametrize("case", BAD)
def test_what_vaekit_cannot_use_is_refused_in_one_line(case: str, tmp_path: Path) -> None:
    data, message = BAD[case]
    if not message:
        assert from_torch(data, test_fraction=0.25).y_train is None
        return
    with pytest.raises(VaekitError, match=message) as err:
        vaekit.Trainer(None, config(tmp_path, "bad"), data=data).fit()
    assert "\n" not in str(err.value)


def test_other_objects_and_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="takes a vaekit.data.Dataset, a torch Dataset"):
        vaekit.Trainer(None, config(tmp_path, "x"), data=[1, 2, 3])
    with pytest.raises(ConfigError, match="is a list, not a torch Dataset or DataLoader"):
        from_torch([np.zeros((8, 8))] * 10)
    with pytest.raises(DataError, match="stream must be 'auto', 'true' or 'false'"):
        from_torch(TensorDataset(images()), stream="sometimes")
    with pytest.raises(DataError, match=r"has no column 'pixel'.*'pixels', 'caption'"):
        from_torch(Counting(images()), column="pixel")
    with pytest.raises(DataError, match=r"column 'pixels' names a column, but \w+\[0\] is tuple"):
        from_torch(TensorDataset(images()), column="pixels")
    with pytest.raises(DataError, match="holds images of shape"):
        from_torch(TensorDataset(images()), TensorDataset(images(10, (3, 8, 8))))
    with pytest.raises(DataError, match=r"test holds float32 images but \w+ holds uint8"):
        from_torch(TensorDataset(images()), TensorDataset(floats(10)))


def test_a_dataset_over_the_memory_limit_streams_or_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vaekit.data.rows import assemble

    monkeypatch.setattr(assemble, "memory_limit", lambda: 10_000)  # 200 rows: 12.5 KiB
    assert isinstance(from_torch(TensorDataset(images())).x_train, LazyRows)  # auto
    with pytest.raises(DataError, match=r"over the limit of 9.77 KiB; stream them"):
        from_torch(TensorDataset(images()), stream=False)
    # float32 rows take 4 bytes a value: 200 rows are 50 KiB
    monkeypatch.setattr(assemble, "memory_limit", lambda: 60_000)
    assert not isinstance(from_torch(TensorDataset(images())).x_train, LazyRows)
    assert isinstance(from_torch(TensorDataset(floats())).x_train, LazyRows)
    monkeypatch.setattr(assemble, "memory_limit", lambda: 40_000)
    with pytest.raises(DataError, match=r"200 float32 images of shape .* over the limit"):
        from_torch(TensorDataset(floats()), stream=False)
