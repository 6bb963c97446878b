"""The numbered cases of issue 23 (hard to break, round 3): the Python API, torch data
objects, nested and huge files and the 0.2 features' edges, each as the sweep found it:
memory spent before a refusal (1), deep nesting (2), an endless IterableDataset (3),
labels that depended on data.stream (4), raw exceptions from the Python API (5),
non-finite values read from files (6), options that do not apply to a model kind (7),
misleading refusals (8), and caches written into a run's data folder (9). The generated
sweep of the Python API and the file formats is tests/test_hostile_api.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import IterableDataset

import vaekit
from conftest import ROOT, assert_clean_error, run_cli, tiny_config
from vaekit.config import DataConfig, ModelConfig
from vaekit.data import from_torch, load_data
from vaekit.errors import CheckpointError, ConfigError, DataError, VaekitError
from vaekit.models import VAE

DEEP = "[" * 100_000 + "]" * 100_000  # 200 kB of JSON nested 100,000 levels


def python(code: str, memory: int | None = None, timeout: float = 120) -> Any:
    """Run `code` in a fresh Python (with `memory` bytes of address space, if given)."""

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "VAEKIT_OFFLINE": "1"},
        preexec_fn=limit if memory else None,
    )


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def edit_architecture(folder: Path, **changes: Any) -> None:
    meta = json.loads((folder / "config.json").read_text())
    meta["architecture"].update(changes)
    (folder / "config.json").write_text(json.dumps(meta))


class Cheap(TorchDataset):
    """n examples, each the same 1x2x2 image (and, with labels, class i % 2)."""

    def __init__(self, n: int, labels: bool = False) -> None:
        self.n, self.labelled = n, labels

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        image = torch.full((1, 2, 2), 0.5)
        return (image, i % 2) if self.labelled else image


# -- case 1: memory spent before the refusal -------------------------------------------------
def test_case01_a_torch_dataset_of_a_billion_examples_is_refused_before_indexing() -> None:
    code = (
        "import torch, vaekit.data\n"
        "class D(torch.utils.data.Dataset):\n"
        "    def __len__(self): return 10**9\n"
        "    def __getitem__(self, i): return torch.zeros(1, 2, 2)\n"
        "try:\n"
        "    vaekit.data.from_torch(D(), stream=True)\n"
        "except vaekit.VaekitError as e:\n"
        "    print('refused:', e)\n"
    )
    result = python(code, memory=3 * 2**30)  # the permutation alone took 7.45 GiB
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused: D has 1,000,000,000 examples" in result.stdout, result.stdout


def test_case01_an_edited_input_shape_is_refused_without_allocating_the_image(
    tmp_path: Path,
) -> None:
    code = f"""
import json, resource
from pathlib import Path
import vaekit
from vaekit.config import ModelConfig
from vaekit.models import VAE
cases = {{
    "mlp": (ModelConfig(hidden=[8], latent_dim=2), (1, 8, 8), [1, 30000, 30000]),
    "conv": (ModelConfig(arch="conv", channels=[4, 8], latent_dim=2), (3, 8, 8),
             [3, 16000, 16000]),
    "autoencoderkl": (ModelConfig(arch="autoencoderkl", channels=[4, 8], latent_channels=2,
                      likelihood="laplace"), (3, 16, 16), [3, 8192, 8192]),
}}
for name, (cfg, shape, huge) in cases.items():
    folder = VAE.from_config(cfg, shape).save_pretrained(Path({str(tmp_path)!r}) / name)
    meta = json.loads((folder / "config.json").read_text())
    meta["architecture"]["input_shape"] = huge
    (folder / "config.json").write_text(json.dumps(meta))
    try:
        VAE.from_pretrained(folder)
    except vaekit.VaekitError as e:
        print(name, "refused:", str(e)[:80])
print("peak MiB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""
    result = python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("mlp", "conv", "autoencoderkl"):
        assert f"{name} refused:" in result.stdout, result.stdout
    peak = int(result.stdout.split("peak MiB")[1])
    assert peak < 1024, result.stdout  # the images alone are 3.4, 2.9 and 0.8 GiB


# -- case 2: deep nesting --------------------------------------------------------------------
def test_case02_a_config_json_nested_100000_levels_is_one_line(run_copy: Path) -> None:
    (run_copy / "config.json").write_text(DEEP)
    for command in (["sample", str(run_copy), "--out", str(run_copy / "s.png")],
                    ["evaluate", str(run_copy)]):  # fmt: skip
        assert_clean_error(run_cli(*command), "config.json", "nests 100,000 levels deep")
    with pytest.raises(CheckpointError, match="nests 100,000 levels deep"):
        VAE.from_pretrained(run_copy)
    inner = {"architecture": json.loads("[" * 200 + "]" * 200)}  # past the limit, not Python's
    (run_copy / "config.json").write_text(json.dumps(inner))
    with pytest.raises(CheckpointError, match="nests 201 levels deep"):
        vaekit.load(run_copy)


@pytest.mark.parametrize("name", ["state.json", "dataset_info.json"])
def test_case02_an_hf_folder_with_deeply_nested_metadata_is_one_line(
    tmp_path: Path, name: str
) -> None:
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "saved"
    rows = {"image": np.zeros((4, 1, 2, 2), dtype=np.float32).tolist(), "label": [0, 1, 0, 1]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(folder))
    (folder / name).write_text(DEEP)
    with pytest.raises(DataError, match=f"{name} nests 100,000 levels deep"):
        load_data(DataConfig(name=f"hf:{folder}"), progress=False)


def test_case02_a_deep_yaml_config_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("model: " + "[" * 100 + "]" * 100 + "\n")  # below Python's limit
    with pytest.raises(ConfigError, match="nests more than 64 levels"):
        vaekit.load_config(str(path))


# -- case 3: an endless IterableDataset ------------------------------------------------------
def test_case03_an_endless_iterable_stops_at_the_row_count_the_limit_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vaekit.data.rows import iterable

    drawn = []

    class Endless(IterableDataset):
        def __iter__(self) -> Any:
            while True:
                drawn.append(1)
                yield torch.zeros(1, 2, 2), 0  # 16 bytes a row

    monkeypatch.setattr(iterable, "memory_limit", lambda: 100_000)
    with pytest.raises(DataError, match="more than the 1,086 examples that fit"):
        from_torch(Endless())
    assert len(drawn) <= 100_000 // (16 + iterable.ROW_OVERHEAD) + 1  # not a chunk past it


# -- case 4: labels do not depend on data.stream ---------------------------------------------
@pytest.mark.parametrize("stream", [True, False])
def test_case04_targets_that_disagree_with_the_examples_are_one_line(stream: bool) -> None:
    data = Cheap(200, labels=True)  # __getitem__ gives i % 2, as a target_transform would
    data.targets = list(range(40)) * 5  # type: ignore[attr-defined]
    with pytest.raises(DataError, match=r"targets\[1\] is 1 but Cheap\[1\] carries label 1|"
                       r"targets\[2\] is 2 but Cheap\[2\] carries label 0"):  # fmt: skip
        from_torch(data, stream=stream)


@pytest.mark.parametrize("stream", [True, False])
def test_case04_targets_that_agree_give_the_same_labels_streamed_or_not(stream: bool) -> None:
    data = Cheap(200, labels=True)
    data.targets = [i % 2 for i in range(200)]  # type: ignore[attr-defined]
    got = from_torch(data, stream=stream, test_fraction=0.5)
    assert got.class_names == ["0", "1"]
    assert sorted(set(got.y_train.tolist())) == [0, 1]


# -- case 5: raw exceptions from the Python API ----------------------------------------------
@pytest.mark.parametrize("device", ["cuda", "mps", 5, "cuda:3", "meta", None, "gpu"])
def test_case05_an_absent_device_is_one_line(trained_run: Path, device: Any) -> None:
    if device in ("cuda", "cuda:3") and torch.cuda.device_count() > 3:
        pytest.skip("this machine has that GPU")
    with pytest.raises(ConfigError, match="device"):
        vaekit.load(trained_run, device=device)
    with pytest.raises(ConfigError, match="device"):
        VAE.from_pretrained(trained_run, device=device)


def spatial() -> VAE:
    cfg = ModelConfig(arch="conv", channels=[4, 8], latent_channels=2, likelihood="gaussian")
    return VAE.from_config(cfg, (1, 8, 8))


@pytest.mark.parametrize("shape", [(3, 5), (3, 2, 3, 3), (3,), (3, 2, 2, 2, 2)])
def test_case05_latent_codes_of_the_wrong_size_are_one_line(shape: tuple[int, ...]) -> None:
    model = spatial()
    assert model.latent_shape == (2, 2, 2)
    for method in (model.latents, model.decode, model.decode_images):
        with pytest.raises(DataError, match=r"latent codes .*\(\w, 8\)"):
            method(torch.zeros(shape))
    assert model.decode(torch.zeros(3, 8)).shape == (3, 1, 8, 8)  # the right size still works
    assert model.decode(torch.zeros(3, 2, 2, 2)).shape == (3, 1, 8, 8)


@pytest.mark.parametrize(
    "distance, needle",
    [
        (lambda a, b: (a - b).abs().mean(), "returned a tensor ()"),
        (lambda a, b: (a - b).abs().mean(dim=(2, 3)).repeat(1, 3), "returned a tensor (4, 3)"),
        (lambda a, b: (a - b).abs().flatten(1).mean(1) * float("nan"), "non-finite"),
        (lambda a, b: [0.0] * a.shape[0], "returned list"),
    ],
)
def test_case05_an_lpips_distance_of_the_wrong_shape_is_one_line(
    trained_run: Path, distance: Any, needle: str
) -> None:
    model = vaekit.load(trained_run)
    x = torch.rand(4, 1, 28, 28)
    with pytest.raises(ConfigError, match="LPIPS distance") as err:
        vaekit.evaluate(model, x, lpips=distance, image_metrics=False, latent_metrics=False)
    assert needle in str(err.value)
    with pytest.raises(ConfigError, match="lpips must be"):
        vaekit.evaluate(model, x, lpips=5)  # type: ignore[arg-type]


def test_case05_a_negative_length_or_a_short_getitems_is_one_line() -> None:
    class Negative(Cheap):
        def __len__(self) -> int:
            return -1

    class Short(Cheap):
        def __getitems__(self, indices: list[int]) -> list[Any]:
            return [self[i] for i in indices][:-1]

    with pytest.raises(DataError, match="__len__ must return a count >= 0"):
        from_torch(Negative(10))
    with pytest.raises(DataError, match=r"__getitems__ returned \d+ examples for \d+ indices"):
        from_torch(Short(100, labels=True), stream=False)


# -- case 6: non-finite values read from files -----------------------------------------------
def test_case06_a_state_pt_holding_nan_names_the_file(trained_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    state = torch.load(run / "state.pt", weights_only=True)
    name = next(iter(state["model"]))
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    torch.save(state, run / "state.pt")
    config = vaekit.load_config(
        str(run / "config.yaml"), {"train.epochs": 3, "train.out": str(run)}
    )
    with pytest.raises(CheckpointError, match=f"state.pt holds NaN or infinite values .*{name}"):
        vaekit.train(config, resume=True)


def test_case06_lpips_weights_full_of_nan_name_the_file(tmp_path: Path) -> None:
    from vaekit.evaluation import perceptual

    path = tmp_path / "vgg16.pth"
    torch.save({"features.0.weight": torch.full((64, 3, 3, 3), float("nan"))}, path)
    with pytest.raises(CheckpointError, match=f"{path} holds NaN or infinite values"):
        perceptual._load(path, "LPIPS backbone")


@pytest.mark.parametrize("scale", [1e-300, 1e300, 1e-13])
def test_case06_a_normalisation_that_overflows_float32_is_refused(
    run_copy: Path, scale: float
) -> None:
    record = {"kind": "standardize", "shift": [0.0], "scale": [scale], "bounded": False}
    edit_architecture(run_copy, normalization=record, likelihood="gaussian")
    with pytest.raises(VaekitError, match="normalization 'scale' values must lie in"):
        vaekit.load(run_copy)


# -- case 7: options that do not apply to a model kind ---------------------------------------
def table_model() -> VAE:
    return VAE.from_config(ModelConfig(hidden=[8], latent_dim=2), (5, 1, 1))


@pytest.mark.parametrize(
    "option",
    [
        {"fid": "random"},
        {"fid": "random", "fid_samples": 2},
        {"rfid": "random"},
        {"lpips": "lpips-vgg"},
    ],  # fmt: skip
)
def test_case07_image_metrics_on_a_table_model_are_refused_before_any_work(
    option: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from vaekit.evaluation import evaluate as evaluate_module

    def no_work(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("work started before the refusal")

    monkeypatch.setattr(evaluate_module, "elbo_stats", no_work)
    monkeypatch.setattr(evaluate_module.metrics, "fid", no_work)
    with pytest.raises(ConfigError, match="this model's data are table rows"):
        vaekit.evaluate(table_model(), torch.rand(20, 5), **option)


# -- case 8: refusals that say what is wrong -------------------------------------------------
def table(tmp_path: Path, name: str = "t.csv") -> Path:
    path = tmp_path / name
    rows = np.random.default_rng(0).normal(size=(60, 5))
    np.savetxt(path, rows, delimiter=",", header="a,b,c,d,e", comments="")
    return path


@pytest.mark.parametrize(
    "overrides, asked",
    [
        ({"model.arch": "conv"}, "model.arch conv"),
        (
            {"model.arch": "autoencoderkl", "model.likelihood": "laplace"},
            "model.arch autoencoderkl",
        ),
        ({"model.arch": "conv", "model.latent_channels": 2}, "model.arch conv"),
    ],
)
def test_case08_a_table_with_an_image_model_says_tables_train_mlp_models(
    tmp_path: Path, overrides: dict[str, Any], asked: str
) -> None:
    pytest.importorskip("pandas")
    config = tiny_config(tmp_path / "run", **{"data.name": str(table(tmp_path)), **overrides})
    with pytest.raises(ConfigError, match=f"tables train MLP models; {asked} needs images"):
        vaekit.train(config)


def test_case08_data_suffixes_are_case_insensitive(tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    data = load_data(DataConfig(name=str(table(tmp_path, "T.CSV"))), progress=False)
    assert tuple(data.x_train.shape[1:]) == (5, 1, 1)


# -- case 9: caches and learned scales -------------------------------------------------------
def test_case09_evaluating_a_run_from_elsewhere_writes_nothing_into_its_data_folder(
    tmp_path: Path,
) -> None:
    from PIL import Image

    folder = tmp_path / "their-images"
    folder.mkdir()
    for i in range(8):
        Image.new("L", (8, 8), 30 * i).save(folder / f"{i}.png")
    run = vaekit.train(tiny_config(tmp_path / "run", **{"data.name": str(folder),
                                                        "data.image_size": 8}))  # fmt: skip
    assert (folder / ".vaekit-cache").is_dir()  # train's own --data: the cache is beside it
    shutil.rmtree(folder / ".vaekit-cache")
    home = tmp_path / "home"
    result = run_cli("evaluate", str(run), env={"HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert not (folder / ".vaekit-cache").exists()
    assert list((home / ".cache" / "vaekit" / "folders").glob("*/*.npy"))
    # the folder the user names with --data is theirs: its cache goes beside it, as train's
    for command in ("evaluate", "encode"):
        out = ["--out", str(tmp_path / "z.npz")] if command == "encode" else []
        fresh = {"HOME": str(tmp_path / f"home-{command}")}  # no cache of it anywhere yet
        result = run_cli(command, str(run), "--data", str(folder), *out, env=fresh)
        assert result.returncode == 0, result.stderr
        assert (folder / ".vaekit-cache").is_dir(), command
        shutil.rmtree(folder / ".vaekit-cache")


def test_case09_autoencoderkl_with_learn_scale_and_likelihood_auto_is_refused() -> None:
    cfg = ModelConfig(arch="autoencoderkl", channels=[4, 8], latent_channels=2, learn_scale=True)
    with pytest.raises(ConfigError, match="set model.learn_scale false"):
        VAE.from_config(cfg, (3, 16, 16))
