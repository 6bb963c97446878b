"""`vaekit encode` and `vaekit.encode`: the posterior of every example of every kind of data
source, in every output format, with labels, ids and file names carried through."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vaekit
from conftest import TINY_FLAGS, assert_one_line_error
from vaekit import cli
from vaekit.config import ModelConfig
from vaekit.models import VAE

pd = pytest.importorskip("pandas")


def images(n: int, seed: int = 0) -> np.ndarray:
    """n smooth uint8 images (N, 1, 28, 28), different from one another."""
    coarse = np.random.default_rng(seed).integers(0, 256, size=(n, 1, 7, 7), dtype=np.uint8)
    return np.kron(coarse, np.ones((1, 1, 4, 4), dtype=np.uint8))


def posterior(model: VAE, x: np.ndarray) -> np.ndarray:
    """The posterior means of x computed directly, for comparison."""
    with torch.no_grad():
        mu, _ = model.posterior(model.prepare(torch.from_numpy(np.array(x))))
    return mu.numpy()


def encode(*args: str) -> None:
    assert cli.main(["encode", *args]) == 0


def test_every_format_holds_the_same_means_with_ids_and_labels(
    trained_run: Path, tmp_path: Path
) -> None:
    model = vaekit.load(trained_run)
    data = model.training_config()
    test = vaekit.data.load_data(data.data, seed=data.train.seed, progress=False)
    direct = posterior(model, test.x_test.numpy())
    for suffix in ("npy", "npz", "csv", "parquet"):
        encode(str(trained_run), "--out", str(tmp_path / f"z.{suffix}"), "--batch-size", "7")
    assert np.allclose(np.load(tmp_path / "z.npy"), direct, atol=1e-6)  # .npy: the means
    npz = np.load(tmp_path / "z.npz")
    assert sorted(npz.files) == ["class", "id", "label", "logvar", "mu"]
    assert np.array_equal(npz["mu"], np.load(tmp_path / "z.npy"))
    assert np.array_equal(npz["label"], test.y_test.numpy())
    assert np.array_equal(npz["id"], np.arange(len(direct)))
    for table in (pd.read_csv(tmp_path / "z.csv"), pd.read_parquet(tmp_path / "z.parquet")):
        assert list(table.columns[:7]) == ["id", "label", "class", "z0", "z1", "z2", "z3"]
        assert np.allclose(table[["z0", "z1", "z2", "z3"]].to_numpy(), direct, atol=1e-6)
        assert np.allclose(table[[f"logvar{i}" for i in range(4)]], npz["logvar"], atol=1e-6)
        assert np.array_equal(table["label"], test.y_test.numpy())
    memory = vaekit.encode(model, test, split="test", batch_size=7)
    assert np.array_equal(memory["mu"], npz["mu"]) and np.array_equal(memory["id"], npz["id"])


def test_a_smaller_chunk_gives_identical_output(trained_run: Path, tmp_path: Path) -> None:
    model = vaekit.load(trained_run)
    x = images(50)
    whole = vaekit.encode(model, x, samples=3, seed=5, batch_size=1000)
    small = vaekit.encode(model, x, samples=3, seed=5, batch_size=7)
    for key in ("mu", "logvar", "z"):  # the same up to the rounding of batched matmuls
        assert np.allclose(whole[key], small[key], rtol=0, atol=1e-6), key
    out = vaekit.encode(model, x, samples=3, seed=5, batch_size=7, out=tmp_path / "z.npz")
    assert np.array_equal(np.load(out)["z"], small["z"])


def test_samples_are_drawn_a_chunk_of_draws_at_a_time(
    trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --samples K the draws held at once follow --batch-size, not batch x K: each
    piece written holds about batch / K examples' K draws (one example's at least)."""
    from vaekit.io import records

    pieces: list[tuple[int, tuple[int, ...]]] = []
    write = records.Records.write

    def spy(self: records.Records, start: int, chunk: dict[str, np.ndarray]) -> None:
        pieces.append((start, chunk["z"].shape))
        write(self, start, chunk)

    monkeypatch.setattr(records.Records, "write", spy)
    model, x = vaekit.load(trained_run), images(50)
    got = vaekit.encode(model, x, samples=5, seed=3, batch_size=20, out=tmp_path / "z.npz")
    assert all(shape[1:] == (5, 4) and shape[0] * 5 <= 20 for _, shape in pieces), pieces
    assert [start for start, _ in pieces] == list(range(0, 50, 4))  # in order, every example
    pieces.clear()
    vaekit.encode(model, x[:3], samples=200, batch_size=20)  # K > batch: one example at a time
    assert [shape for _, shape in pieces] == [(1, 200, 4)] * 3
    whole = vaekit.encode(model, x, samples=5, seed=3, batch_size=1000)
    assert np.allclose(np.load(got)["z"], whole["z"], rtol=0, atol=1e-6)


def test_samples_are_seeded_draws_from_the_posterior(trained_run: Path, tmp_path: Path) -> None:
    model = vaekit.load(trained_run)
    x = images(8)
    got = vaekit.encode(model, x, samples=4000, seed=1)
    assert got["z"].shape == (8, 4000, 4)
    std = np.exp(0.5 * got["logvar"])
    assert np.abs(got["z"].mean(1) - got["mu"]).max() < 0.1 * std.max()
    assert np.allclose(got["z"].std(1), std, rtol=0.1)
    again = vaekit.encode(model, x, samples=4000, seed=1)["z"]
    other = vaekit.encode(model, x, samples=4000, seed=2)["z"]
    assert np.array_equal(again, got["z"]) and not np.allclose(again, other)
    encode(str(trained_run), "--data", "noise", "--split", "test", "--samples", "2",
           "--out", str(tmp_path / "z.csv"))  # fmt: skip
    table = pd.read_csv(tmp_path / "z.csv")
    assert {"sample0_z0", "sample1_z3"} <= set(table.columns)


def test_an_npz_source_in_its_own_order_with_its_labels(trained_run: Path, tmp_path: Path) -> None:
    model = vaekit.load(trained_run)
    x, y = images(60, seed=3), np.arange(60) % 10
    np.savez(tmp_path / "mine.npz", x_train=x, y_train=y)
    out = tmp_path / "z.npz"
    encode(str(trained_run), "--data", str(tmp_path / "mine.npz"), "--out", str(out))
    got = np.load(out)
    assert np.array_equal(got["id"], np.arange(60)) and np.array_equal(got["label"], y)
    assert set(got["split"]) == {"train", "val", "test"}  # all of it, by default
    assert np.allclose(got["mu"], posterior(model, x), atol=1e-6)
    parts = {}
    for split in ("train", "val", "test"):
        encode(str(trained_run), "--data", str(tmp_path / "mine.npz"), "--split", split,
               "--out", str(tmp_path / f"{split}.npz"))  # fmt: skip
        parts[split] = np.load(tmp_path / f"{split}.npz")
        assert np.allclose(parts[split]["mu"], got["mu"][parts[split]["id"]], atol=1e-6)
        assert np.array_equal(parts[split]["label"], y[parts[split]["id"]])
    ids = np.concatenate([p["id"] for p in parts.values()])
    assert sorted(ids.tolist()) == list(range(60))
    # the splits are the ones training would have made of this file (its carve included)
    cfg = model.training_config().data
    loaded = vaekit.data.load_data(dataclasses.replace(cfg, name=str(tmp_path / "mine.npz")))
    for split, x_split in (
        ("train", loaded.x_train),
        ("val", loaded.x_val),
        ("test", loaded.x_test),
    ):
        assert np.allclose(parts[split]["mu"], posterior(model, x_split.numpy()), atol=1e-6)


def test_an_npy_source_and_a_named_dataset(trained_run: Path, tmp_path: Path) -> None:
    model = vaekit.load(trained_run)
    x = images(30, seed=4)
    np.save(tmp_path / "mine.npy", x)
    encode(str(trained_run), "--data", str(tmp_path / "mine.npy"), "--out", str(tmp_path / "a.npz"))
    got = np.load(tmp_path / "a.npz")
    assert "label" not in got.files and np.allclose(got["mu"], posterior(model, x), atol=1e-6)
    # the noise dataset by name, test split: the run's own test set (the run trained on it)
    encode(str(trained_run), "--data", "noise", "--split", "test", "--out", str(tmp_path / "n.npy"))
    encode(str(trained_run), "--out", str(tmp_path / "own.npy"))
    assert np.allclose(np.load(tmp_path / "n.npy"), np.load(tmp_path / "own.npy"), atol=1e-6)


def test_a_folder_carries_its_file_names(trained_run: Path, tmp_path: Path) -> None:
    model = vaekit.load(trained_run)
    x = images(12, seed=5)
    folder = tmp_path / "pics"
    names = []
    for i, image in enumerate(x):
        name = f"{['cats', 'dogs'][i % 2]}/img{i:02d}.png"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0]).save(folder / name)
        names.append(name)
    out = tmp_path / "z.parquet"
    encode(str(trained_run), "--data", str(folder), "--out", str(out))
    table = pd.read_parquet(out)
    assert list(table["file"]) == sorted(names)
    assert list(table["class"]) == [n.split("/")[0] for n in sorted(names)]
    order = [names.index(n) for n in sorted(names)]
    direct = posterior(model, x[order])
    assert np.allclose(table[[f"z{i}" for i in range(4)]].to_numpy(), direct, atol=1e-5)
    got = vaekit.encode(model, str(folder), split="test")  # Python: a source by name
    assert set(got["file"]) < set(names) and len(got["file"]) == len(got["mu"])


def test_tables_encode_from_csv_and_parquet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(80, 5)), columns=list("abcde"))
    frame.to_csv(tmp_path / "rows.csv", index=False)
    frame.to_parquet(tmp_path / "rows.parquet")
    run = tmp_path / "run"
    args = ["train", "--data", str(tmp_path / "rows.csv"), *TINY_FLAGS, "--out", str(run)]
    assert cli.main(args) == 0
    encode(str(run), "--data", str(tmp_path / "rows.parquet"), "--out", str(tmp_path / "z.csv"))
    table = pd.read_csv(tmp_path / "z.csv")
    model = vaekit.load(run)
    rows = frame.to_numpy(dtype=np.float32)
    assert np.array_equal(table["id"], np.arange(80))
    assert np.allclose(table[[f"z{i}" for i in range(4)]], posterior(model, rows), atol=1e-5)
    scored = tmp_path / "s.csv"  # score reads the same table source
    assert (
        cli.main(["score", str(run), "--data", str(tmp_path / "rows.csv"), "--out", str(scored)])
        == 0
    )
    scores = pd.read_csv(scored)
    assert np.array_equal(scores["id"], np.arange(80))
    assert np.allclose(scores["nelbo"], vaekit.score(model, rows)["nelbo"], rtol=1e-6)
    # columns are read by position: a reordered table would be encoded silently wrong
    frame[list("bacde")].to_csv(tmp_path / "reordered.csv", index=False)
    for command in ("encode", "score", "evaluate"):
        flags = ["--data", str(tmp_path / "reordered.csv")]
        flags += [] if command == "evaluate" else ["--out", str(tmp_path / "r.csv")]
        code = cli.main([command, str(run), *flags])
        assert_one_line_error(code, capsys.readouterr().err, "b, a, c, d, e", "in that order")
    assert not (tmp_path / "r.csv").exists()


def test_a_spatial_latent_keeps_its_shape(tmp_path: Path) -> None:
    model = VAE.from_config(ModelConfig(arch="conv", channels=[4], latent_channels=2), (1, 8, 8))
    x = np.random.default_rng(0).integers(0, 256, size=(5, 1, 8, 8), dtype=np.uint8)
    got = vaekit.encode(model, x, samples=3)
    assert got["mu"].shape == (5, 2, 4, 4) and got["z"].shape == (5, 3, 2, 4, 4)
    assert np.array_equal(np.load(vaekit.encode(model, x, out=tmp_path / "z.npy")), got["mu"])
    table = vaekit.encode(model, x, out=tmp_path / "z.csv")
    assert f"z{2 * 4 * 4 - 1}" in pd.read_csv(table).columns  # flattened, C order


def test_a_hugging_face_dataset_on_disk(trained_run: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    x, y = images(20, seed=6), np.arange(20) % 3
    features = datasets.Features(
        {"image": datasets.Array3D((1, 28, 28), "uint8"), "label": datasets.Value("int64")}
    )
    ds = datasets.Dataset.from_dict({"image": list(x), "label": list(y)}, features=features)
    ds.save_to_disk(str(tmp_path / "hf"))
    encode(str(trained_run), "--data", f"hf:{tmp_path / 'hf'}", "--out", str(tmp_path / "z.npz"))
    got = np.load(tmp_path / "z.npz")
    assert np.array_equal(got["id"], np.arange(20)) and np.array_equal(got["label"], y)
    assert np.allclose(got["mu"], posterior(vaekit.load(trained_run), x), atol=1e-6)


def test_user_errors_are_one_line(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = str(trained_run)
    small = tmp_path / "small.npy"
    np.save(small, np.zeros((20, 1, 14, 14), dtype=np.uint8))
    cases = [
        (["--out", str(tmp_path / "z.txt")], ("z.txt", ".npz", "got .txt")),
        (["--out", str(tmp_path / "z.npy"), "--samples", "2"], ("means only", ".npz")),
        (["--data", str(small), "--out", str(tmp_path / "z.npz")], ("small", "(1, 28, 28)")),
        (["--data", "no-such-thing", "--out", str(tmp_path / "z.npz")], ("no-such-thing",)),
        (["--data", "", "--out", str(tmp_path / "z.npz")], ("data source is empty",)),
    ]
    for flags, needles in cases:
        code = cli.main(["encode", run, *flags])
        assert_one_line_error(code, capsys.readouterr().err, *needles)
    assert not list(tmp_path.glob("z.*")) and not list(tmp_path.glob(".tmp-*"))
    with pytest.raises(SystemExit) as exit_:  # argparse's one line
        cli.main(["encode", run, "--split", "dev", "--out", "z.npz"])
    assert_one_line_error(int(exit_.value.code or 0), capsys.readouterr().err, "dev")
    with pytest.raises(vaekit.VaekitError, match="unknown split 'dev'"):
        vaekit.encode(vaekit.load(run), "noise", split="dev")


def test_wrong_python_arguments_are_one_clear_error(trained_run: Path, tmp_path: Path) -> None:
    model = vaekit.load(trained_run)
    x = images(4)
    cases = [
        (vaekit.encode, {"y": "abc"}, "y must be whole numbers"),
        (vaekit.encode, {"y": ["cat", "dog", "cat", "dog"]}, "y must be whole numbers"),
        (vaekit.score, {"y": [0.5, 1.0, 2.0, 3.0]}, "y must be whole numbers"),  # not cast to 0
        (vaekit.encode, {"out": 5}, "out must be a path"),
        (vaekit.score, {"out": tmp_path / "s.json"}, "got .json"),
        (vaekit.score, {"sort": "yes"}, "sort must be bool"),
        (vaekit.encode, {"split": "dev"}, "unknown split 'dev'"),
    ]
    for function, kwargs, needle in cases:
        with pytest.raises(vaekit.VaekitError, match=needle) as error:
            function(model, x, **kwargs)
        assert "\n" not in str(error.value)


def test_one_image_as_data_is_told_to_use_a_folder(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "cat.png"
    Image.fromarray(images(1)[0, 0]).save(image)
    code = cli.main(["encode", str(trained_run), "--data", str(image), "--out", "z.npz"])
    assert_one_line_error(code, capsys.readouterr().err, "is one image", "folder of images")


def test_a_source_of_one_example_is_used_whole_and_other_splits_name_split_all(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One example cannot be split into train and test: all of it (encode's and score's
    default for --data) reads it whole; another split is one line naming --split all."""
    model = vaekit.load(trained_run)
    x = images(1, seed=6)
    np.save(tmp_path / "one.npy", x)
    folder = tmp_path / "one-image"
    folder.mkdir()
    Image.fromarray(x[0, 0]).save(folder / "only.png")
    for source in (tmp_path / "one.npy", folder):
        encode(str(trained_run), "--data", str(source), "--out", str(tmp_path / "z.npz"))
        got = np.load(tmp_path / "z.npz")
        assert np.array_equal(got["id"], [0]) and np.allclose(got["mu"], posterior(model, x))
        assert cli.main(["score", str(trained_run), "--data", str(source), "--out",
                         str(tmp_path / "s.npz")]) == 0  # fmt: skip
        assert len(np.load(tmp_path / "s.npz")["nelbo"]) == 1
        capsys.readouterr()
        code = cli.main(["evaluate", str(trained_run), "--data", str(source), "--json"])
        assert_one_line_error(code, capsys.readouterr().err, "1 example", "--split all")
        args = ["evaluate", str(trained_run), "--data", str(source), "--split", "all"]
        assert cli.main(args) == 0
    assert len(vaekit.encode(model, str(tmp_path / "one.npy"))["mu"]) == 1  # Python: all


def test_the_validation_split_of_noise_is_the_one_it_draws(
    trained_run: Path, tmp_path: Path
) -> None:
    """noise draws its validation set (it is not carved from the training rows)."""
    model = vaekit.load(trained_run)
    config = model.training_config()
    data = vaekit.data.load_data(config.data, seed=config.train.seed, progress=False)
    assert data.x_val is not None and data.info["validation"]["source"] == "generated"
    for split, x in (("val", data.x_val), ("train", data.x_train)):
        encode(str(trained_run), "--split", split, "--out", str(tmp_path / f"{split}.npy"))
        got = np.load(tmp_path / f"{split}.npy")
        assert np.allclose(got, posterior(model, x.numpy()), atol=1e-6)
