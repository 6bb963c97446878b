"""Follow a data source through vaekit's code as a reader would, and count the walk.

    python scripts/data_walk.py [noise] [npz] [hf] [torch] [--all] [--show]

Each case loads a tiny dataset the script writes itself (`load_data` of noise, an .npz
and `hf:PATH` of a saved Hugging Face dataset; `as_dataset` of a torch TensorDataset,
as Trainer(data=...) reads it) under a profiler that records the vaekit module of each
function as it is first called (--all: every call). Consecutive calls in one module are
one stay; a stay in a module the walk has already left is a return. Fewer stays and
returns: a shorter path to read. Issue 24 measured the data/ package this way.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from vaekit.config import load_config
from vaekit.data import as_dataset, load_data

SKIPPED = ("<module>", "<genexpr>", "<listcomp>", "<dictcomp>", "<setcomp>", "<lambda>")


def walk(run: Callable[[], object], every_call: bool) -> list[str]:
    """The vaekit modules `run` calls into, consecutive repeats collapsed."""
    stays: list[str] = []
    seen: set[CodeType] = set()

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        code = frame.f_code
        if event != "call" or code.co_name in SKIPPED or (code in seen and not every_call):
            return
        seen.add(code)
        module = str(frame.f_globals.get("__name__", ""))
        if module.startswith("vaekit") and (not stays or stays[-1] != module):
            stays.append(module)

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return stays


def cases(folder: str) -> dict[str, Callable[[], object]]:
    def data(name: str, **options: object) -> Any:
        return load_config(None, {"data.name": name, **options}).data

    rng = np.random.default_rng(0)
    np.savez(f"{folder}/d.npz", x_train=rng.integers(0, 255, (40, 1, 8, 8), dtype=np.uint8))
    noise, npz, plain = (
        data("noise", **{"data.noise_examples": 64}),
        data(f"{folder}/d.npz"),
        data("noise"),
    )
    tensors = TensorDataset(torch.rand(40, 1, 8, 8), torch.arange(40) % 3)
    found = {
        "noise": lambda: load_data(noise),
        "npz": lambda: load_data(npz),
        "torch": lambda: as_dataset(tensors, plain),
    }
    try:
        import datasets
    except ImportError:
        return found
    datasets.disable_progress_bars()
    images = list(rng.integers(0, 255, (40, 8, 8, 1)).astype(np.uint8))
    table = datasets.Dataset.from_dict({"image": images, "label": [i % 3 for i in range(40)]})
    table.save_to_disk(f"{folder}/hf")
    hf = data(f"hf:{folder}/hf")
    found["hf"] = lambda: load_data(hf, progress=False)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="noise, npz, hf, torch (default: all)")
    parser.add_argument("--all", action="store_true", help="count every call, not the first")
    parser.add_argument("--show", action="store_true", help="print each walk")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        runs = cases(folder)
        for name in args.names or sorted(runs):
            stays = walk(runs[name], args.all)
            returns = sum(m in stays[:i] for i, m in enumerate(stays))
            print(
                f"{name}: {len(stays)} stays in {len(set(stays))} modules, "
                f"{returns} returns to modules already left"
            )
            if args.show:
                print("  " + " > ".join(m.removeprefix("vaekit.") for m in stays))


if __name__ == "__main__":
    main()
