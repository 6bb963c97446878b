"""Every file format vaekit reads, damaged the ways issue 23 found that hurt (nesting
100,000 levels deep, nesting past the depth limit but not Python's, sizes declared huge in
tiny files, NaN and infinite tensors, wrong dtypes, files too large to be what they claim),
for the Python API sweep (tests/test_hostile_api.py; run by tests/hostile_api_worker.py).

FORMATS maps each format to (how a damaged copy is made from a good one, the call that
reads it); MUTATIONS lists which damages apply to which kind of file.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

DEEP = 100_000
# the damages of each kind of file
MUTATIONS = {
    "json": ["deep", "deep_500", "big", "nan", "wrong_type"],
    "yaml": ["deep", "deep_500", "big", "nan", "wrong_type"],
    "torch": ["nan", "inf", "wrong_dtype", "deep_200"],
    "safetensors": ["nan", "inf", "wrong_dtype", "huge_declared", "deep"],
    "npz": ["nan", "inf", "wrong_dtype", "huge_declared"],
    "jsonl": ["deep", "big", "nan"],
}


def deep_json(levels: int) -> str:
    return "[" * levels + "]" * levels


def nested(levels: int) -> Any:
    value: Any = []
    for _ in range(levels):
        value = [value]
    return value


def non_finite(value: Any, count: list[int] | None = None) -> Any:
    """`value` with its numbers made NaN, +inf and -inf in turn."""
    count = [0] if count is None else count
    if isinstance(value, dict):
        return {k: non_finite(v, count) for k, v in value.items()}
    if isinstance(value, list):
        return [non_finite(v, count) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        count[0] += 1
        return (float("nan"), float("inf"), float("-inf"))[count[0] % 3]
    return value


def damage_json(path: Path, mutation: str) -> None:
    good = json.loads(path.read_text()) if path.is_file() else {}
    if mutation == "deep":
        path.write_text(deep_json(DEEP))
    elif mutation == "deep_500":
        key = next(iter(good), "x") if isinstance(good, dict) else "x"
        path.write_text(json.dumps({**good, key: nested(500)}) if isinstance(good, dict) else "[]")
    elif mutation == "big":
        path.write_text("{" + " " * (20 * 2**20) + "}")
    elif mutation == "nan":  # every number NaN or infinite (json.dumps writes them)
        path.write_text(json.dumps(non_finite(good)))
    elif mutation == "wrong_type":
        path.write_text(json.dumps([good]))


def damage_yaml(path: Path, mutation: str) -> None:
    text = {
        "deep": "model: " + "[" * DEEP + "]" * DEEP + "\n",
        "deep_500": "model:\n  hidden: " + "[" * 500 + "]" * 500 + "\n",
        "big": "# " + "x" * (2 * 2**20) + "\n",
        "nan": "train:\n  epochs: .nan\noptim:\n  lr: .inf\n",
        "wrong_type": "- a\n- b\n",
    }[mutation]
    path.write_text(text)


def damage_tensors(tensors: dict[str, torch.Tensor], mutation: str) -> dict[str, Any]:
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    out: dict[str, Any] = dict(tensors)
    if mutation in ("nan", "inf"):
        out[name] = torch.full_like(tensors[name], float(mutation))
    elif mutation == "wrong_dtype":
        out[name] = tensors[name].to(torch.int8)
    elif mutation == "deep_200":
        out["extra"] = nested(200)  # torch.save itself recurses past ~300
    return out


def damage_state(path: Path, mutation: str) -> None:
    state = torch.load(path, weights_only=True)
    state["model"] = damage_tensors(state["model"], mutation)
    torch.save(state, path)


def damage_safetensors(path: Path, mutation: str) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    if mutation in ("nan", "inf", "wrong_dtype"):
        save_file(damage_tensors(tensors, mutation), str(path))
        return
    name = next(iter(tensors))
    if mutation == "huge_declared":  # a header claiming 10^12 x 10^6 floats, in a tiny file
        header = {name: {"dtype": "F32", "shape": [10**12, 10**6], "data_offsets": [0, 4]}}
        data = json.dumps(header).encode()
    else:  # a header nested DEEP levels
        data = ('{"a": ' + deep_json(DEEP) + "}").encode()
    path.write_bytes(struct.pack("<Q", len(data)) + data + b"\0" * 8)


def damage_npz(path: Path, mutation: str) -> None:
    x = np.random.default_rng(0).random((20, 1, 8, 8)).astype(np.float32)
    if mutation in ("nan", "inf"):
        x[3, 0, 2, 2] = float(mutation)
    if mutation == "wrong_dtype":
        np.savez(path, x_train=x.astype(np.complex64))
        return
    np.savez(path, x_train=x)
    if mutation == "huge_declared":  # the .npy header of x_train claims 10^13 rows
        import zipfile

        raw = path.read_bytes()
        with zipfile.ZipFile(path) as z:
            member = z.read("x_train.npy")
        lied = member.replace(b"(20, 1, 8, 8)", b"(10000000000000, 1, 8, 8)", 1)
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("x_train.npy", lied)
        assert raw != path.read_bytes()


def damage_jsonl(path: Path, mutation: str) -> None:
    line = {"deep": deep_json(DEEP), "big": "{" + " " * (20 * 2**20) + "}",
            "nan": '{"epoch": 1, "loss": NaN, "val_nelbo": Infinity}'}[mutation]  # fmt: skip
    with path.open("a") as f:
        f.write(line + "\n")


# -- the formats: a damaged copy, and the call that reads it ---------------------------------
def _run_copy(fx: Any) -> Path:
    if not hasattr(fx, "trained"):
        import vaekit

        fx.trained = vaekit.train(fx.config())
    return Path(shutil.copytree(fx.trained, fx.fresh("copy")))


def _resume(fx: Any, run: Path) -> Any:
    import vaekit

    config = fx.config()
    config.train.out, config.train.epochs = str(run), 2
    return vaekit.train(config, resume=True)


def _hf_folder(fx: Any) -> Path:
    import datasets

    folder = fx.fresh("hf")
    rows = {"image": np.zeros((6, 1, 8, 8), dtype=np.float32).tolist(), "label": [0, 1] * 3}
    datasets.Dataset.from_dict(rows).save_to_disk(str(folder))
    return folder


def _load_hf(folder: Path) -> Any:
    from vaekit.config import DataConfig
    from vaekit.data import load_data

    return load_data(DataConfig(name=f"hf:{folder}"), progress=False)


def _lpips_weights(path: Path) -> Any:
    from vaekit.evaluation import perceptual

    return perceptual._load(path, "LPIPS backbone")


FORMATS: dict[str, tuple[str, Callable[[Any, str], Any]]] = {}


def fmt(name: str, kind: str) -> Callable[[Callable[[Any, str], Any]], Callable[[Any, str], Any]]:
    def add(function: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
        FORMATS[name] = (kind, function)
        return function

    return add


@fmt("run/config.json", "json")
def _config_json(fx: Any, mutation: str) -> Any:
    import vaekit

    run = _run_copy(fx)
    damage_json(run / "config.json", mutation)
    return vaekit.load(run)


@fmt("run/config.yaml", "yaml")
def _config_yaml(fx: Any, mutation: str) -> Any:
    import vaekit

    path = fx.fresh("config").with_suffix(".yaml")
    damage_yaml(path, mutation)
    return vaekit.load_config(str(path))


@fmt("run/state.pt", "torch")
def _state_pt(fx: Any, mutation: str) -> Any:
    run = _run_copy(fx)
    damage_state(run / "state.pt", mutation)
    return _resume(fx, run)


@fmt("run/model.safetensors", "safetensors")
def _model_safetensors(fx: Any, mutation: str) -> Any:
    import vaekit

    run = _run_copy(fx)
    damage_safetensors(run / "model.safetensors", mutation)
    return vaekit.load(run)


@fmt("run/metrics.jsonl", "jsonl")
def _metrics_jsonl(fx: Any, mutation: str) -> Any:
    from vaekit.tracking import read_metrics

    run = _run_copy(fx)
    damage_jsonl(run / "metrics.jsonl", mutation)
    return read_metrics(run)


@fmt("run/.vaekit.lock", "json")
def _lock(fx: Any, mutation: str) -> Any:
    run = _run_copy(fx)
    damage_json(run / ".vaekit.lock", mutation)
    return _resume(fx, run)


@fmt("data.npz", "npz")
def _npz(fx: Any, mutation: str) -> Any:
    from vaekit.config import DataConfig
    from vaekit.data import load_data

    path = fx.fresh("data").with_suffix(".npz")
    damage_npz(path, mutation)
    return load_data(DataConfig(name=str(path)), progress=False)


@fmt("hf/state.json", "json")
def _hf_state(fx: Any, mutation: str) -> Any:
    folder = _hf_folder(fx)
    damage_json(folder / "state.json", mutation)
    return _load_hf(folder)


@fmt("hf/dataset_info.json", "json")
def _hf_info(fx: Any, mutation: str) -> Any:
    folder = _hf_folder(fx)
    damage_json(folder / "dataset_info.json", mutation)
    return _load_hf(folder)


@fmt("folder/.vaekit-cache/KEY.json", "json")
def _folder_cache(fx: Any, mutation: str) -> Any:
    from PIL import Image

    from vaekit.config import DataConfig
    from vaekit.data.files.folder import load_folder

    folder = fx.fresh("images")
    folder.mkdir()
    for i in range(6):
        Image.new("L", (8, 8), 40 * i).save(folder / f"{i}.png")
    cfg = DataConfig(name=str(folder), image_size=8)
    load_folder(folder, cfg, progress=False)
    for meta in (folder / ".vaekit-cache").glob("*.json"):
        damage_json(meta, mutation)
    return load_folder(folder, cfg, progress=False)


@fmt("lpips-weights.pth", "torch")
def _lpips(fx: Any, mutation: str) -> Any:
    path = fx.fresh("vgg").with_suffix(".pth")
    torch.save({"features.0.weight": torch.rand(64, 3, 3, 3)}, path)
    state = torch.load(path, weights_only=True)
    torch.save(damage_tensors(state, mutation), path)
    return _lpips_weights(path)


@fmt("inception-weights.pth", "torch")
def _inception(fx: Any, mutation: str) -> Any:
    from vaekit.evaluation import inception

    path = fx.fresh("inception").with_suffix(".pth")
    torch.save(damage_tensors({"fc.weight": torch.rand(4, 4)}, mutation), path)
    return inception.check(path)


def file_cases() -> list[dict[str, Any]]:
    """One case per format and damage."""
    return [
        {"id": f"file {name} {mutation}", "file": name, "mutation": mutation}
        for name, (kind, _) in FORMATS.items()
        for mutation in MUTATIONS[kind]
    ]


def run_file_case(case: dict[str, Any], fx: Any) -> Any:
    _, read = FORMATS[case["file"]]
    return read(fx, case["mutation"])
