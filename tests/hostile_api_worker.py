"""The Python API sweep's worker (tests/test_hostile_api.py): calls one public function,
constructor or method of vaekit per stdin line with one argument made hostile, under a
memory limit and a per-case timeout, and reports how the call ended.

Started as `python hostile_api_worker.py MEMORY_BYTES WORK_DIR`. Each stdin line is a
JSON case {"id", "target", "param", "kind"} (or {"id", "file", "mutation"} for a file
format); each stdout line a JSON result {"id", "outcome", "detail", "seconds"}:

- "ok": the call returned; or it raised a VaekitError whose message is one line; or, for
  a value of a plainly wrong type (WRONG_TYPE kinds), a one-line TypeError (Python's own
  convention, see docs/guarantees.md); or the user's own object raised its own exception
  (UserCodeError), which vaekit lets through unchanged;
- "raw": any other exception escaped (a RuntimeError, IndexError, RecursionError ...),
  or an error message of more than one line;
- "hang": the case ran past its timeout;
- "memory": MemoryError (memory was asked for before its size was checked).

The values are built here, by name: `good_value` gives each parameter a value that works
(a parameter without one fails the sweep's coverage test), `hostile_value` the hostile
ones, from the good value's type.
"""

from __future__ import annotations

import inspect
import json
import os
import resource
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import IterableDataset

SHAPE = (1, 8, 8)  # the sweep's images: small, so that what succeeds is fast
KINDS = (
    "none",  # None where a value goes
    "str",  # a string where something else goes (for a string: garbage text)
    "object",  # an arbitrary object
    "nan",
    "inf",
    "negative",
    "zero",
    "huge",  # 10**12 (a count, a size)
    "empty",  # an empty tensor, string, list or dict
    "wrong_shape",  # a tensor of another shape
    "nan_tensor",  # a tensor full of NaN
    "lying",  # an object whose methods lie (a dataset whose length is not its length)
    "raising",  # an object whose methods raise (its own exception, which may pass)
    "absent_device",  # a device this machine lacks
)
# optional parameters always given their good value: no upload, no download, and a tiny
# training configuration rather than the default one
ALWAYS = ("dry_run", "download", "config")
# kinds that are a plainly wrong type for the parameter: TypeError is an answer for them
WRONG_TYPE = {"none", "str", "object", "lying", "raising"}


class CaseTimeout(BaseException):
    """Raised by SIGALRM: a BaseException, so that no `except Exception` can swallow it."""


def _alarm(signum: int, frame: Any) -> None:
    raise CaseTimeout


class UserCodeError(Exception):
    """What the user's own hostile objects raise: vaekit may let it through unchanged."""


class Raising(TorchDataset):
    """A dataset (and object) whose every method raises its own error."""

    def __len__(self) -> int:
        raise UserCodeError("__len__ of the user's object")

    def __getitem__(self, i: int) -> Any:
        raise UserCodeError("__getitem__ of the user's object")

    def __iter__(self) -> Any:
        raise UserCodeError("__iter__ of the user's object")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UserCodeError("__call__ of the user's object")


class Lying(TorchDataset):
    """A dataset that lies: it claims 10**6 examples, holds 3, the third of another shape,
    its __getitems__ returns one fewer than asked, its targets disagree, its __call__
    returns a string."""

    targets = list(range(40))

    def __len__(self) -> int:
        return 10**6

    def __getitem__(self, i: int) -> Any:
        if i >= 3:
            raise IndexError(i)
        return torch.rand(*SHAPE) if i < 2 else torch.rand(3, 5, 5), 1

    def __getitems__(self, indices: list[int]) -> list[Any]:
        return [self[i % 2] for i in indices][:-1]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return "a distance"


class Endless(IterableDataset):
    def __iter__(self) -> Any:
        while True:
            yield torch.rand(*SHAPE), 0


class Cheap(TorchDataset):
    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> Any:
        return torch.full(SHAPE, (i % 5) / 5), i % 2


# -- good values ----------------------------------------------------------------------------
class Fixtures:
    """The objects good values are made of, built once per worker."""

    def __init__(self, work: Path) -> None:
        from vaekit.config import ModelConfig
        from vaekit.models import VAE

        self.work = work
        self.model = VAE.from_config(ModelConfig(hidden=[8], latent_dim=2), SHAPE)
        spatial = ModelConfig(arch="conv", channels=[4, 8], latent_channels=2)
        self.spatial = VAE.from_config(spatial, SHAPE)
        quantised = ModelConfig(**{**vars(spatial), "posterior": "vq", "codebook_size": 8})
        self.vq = VAE.from_config(quantised, SHAPE)  # a VQVAE with a 2x2 map of codes
        ladder = ModelConfig(hidden=[8], posterior="ladder", latent_dims=[2, 1])
        self.ladder = VAE.from_config(ladder, SHAPE)  # a LadderVAE of two layers
        self.folder = self.model.save_pretrained(work / "model")
        self.count = 0

    def fresh(self, name: str) -> Path:
        self.count += 1
        return self.work / f"{name}-{self.count}"

    def config(self) -> Any:
        from vaekit.config import load_config

        return load_config(None, {
            "data.name": "noise", "data.noise_examples": 32, "data.image_size": 8,
            "model.hidden": [4], "model.latent_dim": 2, "train.epochs": 1,
            "train.batch_size": 16, "train.progress": False,
            "train.out": str(self.fresh("run")),
        })  # fmt: skip


def good_values(fx: Fixtures, target: str) -> dict[str, Any]:
    """A value that works for each parameter name of `target` (those not here keep their
    defaults; a required one missing here fails the coverage test)."""
    from vaekit.config import DataConfig, ModelConfig
    from vaekit.models import builtin
    from vaekit.models.code_prior import CodePrior
    from vaekit.normalize import Normalization

    x = torch.rand(4, *SHAPE)
    halves = builtin.build(ModelConfig(hidden=[8], latent_dim=2), SHAPE)
    model = fx.spatial if target.startswith("spatial.") else fx.model
    model = fx.vq if target.startswith("vq.") else model
    model = fx.ladder if target.startswith("ladder.") else model
    z = torch.zeros(4, model.latent_dim)
    values: dict[str, Any] = {
        "encoder": halves.encoder, "decoder": halves.decoder, "latent_dim": 2,
        "input_shape": SHAPE, "model": fx.model, "x": x, "x1": x[:2], "x2": x[2:],
        "z": z, "n": 3, "steps": 3, "k": 2, "params": model.decode(z).detach(),
        "path": str(fx.folder), "path_or_repo_id": str(fx.folder), "folder": fx.folder,
        "source": str(fx.folder),
        "architecture": model.architecture(), "name_or_path": "noise-demo",
        "normalization": Normalization(), "save_directory": fx.fresh("saved"),
        "repo_id": "someone/tiny-vae", "dry_run": True, "name": "hostile-sweep",
        "x_train": torch.randint(0, 255, (20, *SHAPE), dtype=torch.uint8),
        "x_test": torch.randint(0, 255, (5, *SHAPE), dtype=torch.uint8),
        "train": Cheap(), "data": None, "seed": 0, "epoch": 0,
        "perm": torch.arange(10), "batch_size": 3, "history": [], "run_dir": fx.work,
        "download": False, "progress": False, "latent_dims": [2, 1],
    }  # fmt: skip
    if target in ("vaekit.train", "vaekit.Trainer"):
        values["config"] = fx.config()
    if target == "vaekit.Trainer":
        values["model"] = None
    if target in ("vaekit.data.load_data", "vaekit.data.as_dataset"):
        values["cfg"] = DataConfig(name="noise", noise_examples=32, image_size=8)
    if target == "VAE.from_config":
        values.update(cfg=ModelConfig(hidden=[8], latent_dim=2), input_shape=SHAPE)
    if target == "vaekit.data.as_dataset":
        values["data"] = Cheap()
    if target == "vaekit.data.from_arrays":
        values["x_train"] = np.random.default_rng(0).random((20, *SHAPE), dtype=np.float32)
    if target == "vaekit.data.epoch_permutation":
        values["n"] = 10
    if target == "vaekit.data.fetch":
        values["name"] = "mnist"
    if target in ("vaekit.encode", "vaekit.score"):
        values["data"] = x
    if target == "vaekit.TrainResult":
        values["model"] = fx.model
    if target.startswith("vq."):  # a VQ-VAE's integer codes, as encode_codes gives them
        values["z"] = values["codes"] = fx.vq.encode_codes(x)
        values["prior"] = CodePrior(8, (2, 2), channels=4, layers=1)  # fits fx.vq's codes
    if target == "vaekit.train_prior":  # a prior over fx.vq's codes of noise, small and short
        values.update(run=fx.vq, data="noise", epochs=1, channels=4, layers=1)
    if target == "vaekit.PriorResult":
        values.update(model=fx.vq, saved_in=None)
    return values


# -- hostile values -------------------------------------------------------------------------
def hostile_value(kind: str, good: Any, param: str) -> Any:
    """The hostile value of `kind` for a parameter whose good value is `good`."""
    tensor = torch.is_tensor(good) or isinstance(good, np.ndarray)
    simple = {
        "none": None, "str": "abc" if not isinstance(good, str) else "\x00;rm -rf ~",
        "object": object(), "nan": float("nan"), "inf": float("inf"), "negative": -1,
        "zero": 0, "huge": 10**12, "lying": Lying(), "raising": Raising(),
        "absent_device": "cuda:7",
    }  # fmt: skip
    if kind in simple:
        return simple[kind]
    if kind == "empty":
        if tensor:
            return good[:0]
        return type(good)() if isinstance(good, (str, list, dict, tuple)) else ""
    if kind == "wrong_shape":
        return torch.rand(3, 2, 5) if tensor else [[1, 2], [3]]
    if kind == "nan_tensor":  # the good tensor's shape, full of NaN
        shape = tuple(good.shape) if tensor else (4, *SHAPE)
        return torch.full(shape, float("nan"))
    raise ValueError(kind)


# -- running a case -------------------------------------------------------------------------
def resolve(target: str, fx: Fixtures) -> Any:
    """The callable a target names: 'vaekit.load', 'vaekit.data.from_torch', 'VAE.sample'
    (a method of the sweep's MLP model), 'spatial.decode' (of its spatial-latent model)."""
    import importlib

    owner, _, name = target.rpartition(".")
    if owner == "VAE":
        attr = inspect.getattr_static(type(fx.model), name)
        return getattr(type(fx.model) if isinstance(attr, classmethod) else fx.model, name)
    if owner == "spatial":
        return getattr(fx.spatial, name)
    if owner == "vq":
        return getattr(fx.vq, name)
    if owner == "ladder":
        return getattr(fx.ladder, name)
    return getattr(importlib.import_module(owner), name)


def call(case: dict[str, Any], fx: Fixtures) -> Any:
    function = resolve(case["target"], fx)
    goods = good_values(fx, case["target"])
    kwargs: dict[str, Any] = {}
    for p in inspect.signature(function).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name == case["param"]:
            kwargs[p.name] = hostile_value(case["kind"], goods.get(p.name, p.default), p.name)
        elif p.name in goods and (p.default is p.empty or p.name in ALWAYS):
            kwargs[p.name] = goods[p.name]
        elif p.default is p.empty:
            raise LookupError(f"no good value for {case['target']}({p.name}=...)")
    result = function(**kwargs)
    if case["target"] == "vaekit.Trainer":
        result.fit()
    return result


def run_case(case: dict[str, Any], fx: Fixtures) -> dict[str, Any]:
    from vaekit.errors import VaekitError

    started = time.perf_counter()
    outcome, detail = "ok", ""
    threads = torch.get_num_threads()
    signal.alarm(int(case.get("timeout", 20)))
    try:
        if "file" in case:
            from hostile_api_files import run_file_case

            run_file_case(case, fx)
        else:
            call(case, fx)
    except CaseTimeout:
        outcome = "hang"
    except MemoryError:
        outcome, detail = "memory", traceback.format_exc(limit=-3)
    except UserCodeError:
        pass  # the user's own object raised; vaekit let it through unchanged
    except VaekitError as e:
        if len(str(e).strip().splitlines()) != 1:
            outcome, detail = "raw", f"{type(e).__name__} of {len(str(e).splitlines())} lines"
    except TypeError as e:
        one_line = len(str(e).strip().splitlines()) == 1
        if case.get("kind") not in WRONG_TYPE or not one_line:
            outcome, detail = "raw", traceback.format_exc(limit=-4)
    except Exception:
        outcome, detail = "raw", traceback.format_exc(limit=-4)
    finally:
        signal.alarm(0)
        torch.set_num_threads(threads)
    seconds = round(time.perf_counter() - started, 3)
    return {"id": case["id"], "outcome": outcome, "detail": detail[-1500:], "seconds": seconds}


def main() -> None:
    limit, work = int(sys.argv[1]), Path(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
    signal.signal(signal.SIGALRM, _alarm)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = os.fdopen(os.dup(1), "w", buffering=1)  # the real stdout, kept for results
    sys.stdout = sys.stderr  # what the calls print goes nowhere near the results
    fx = Fixtures(work)
    for line in sys.stdin:
        if line.strip():
            results.write(json.dumps(run_case(json.loads(line), fx)) + "\n")


if __name__ == "__main__":
    main()
