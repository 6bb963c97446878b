"""`vaekit encode` / `vaekit score` speed against a plain DataLoader loop, and their memory
on a folder larger than the memory budget.

    python benchmarks/encode_speed.py [--rounds 3] [--batch-size 1000] [--limit-train 10000]
                                      [--folder-images 20000] [--ram-budget-mib 16]

Speed: the demo model's architecture (the fashion-mlp preset, 784-512-16, trained for one
epoch on `--limit-train` images: encoding costs the same whatever the weights) encodes
and scores all 70,000 Fashion-MNIST images (train, validation and test splits), in one
process, the two sides taking turns each round:
- reference: `torch.utils.data.DataLoader(TensorDataset(images), batch_size)` under
  `torch.no_grad()`, calling `model.posterior(model.prepare(xb))` (score: `model.elbo_terms`)
  and concatenating the results in memory;
- vaekit: `vaekit.encode(model, data, split="all", out="z.npy")` and `vaekit.score(...,
  out="s.npy")`, the library calls behind the commands, writing the files;
- floor: the model alone on batches made float beforehand (nothing read, converted or
  written), the bound on what any loop over this model can reach.
Both start from the dataset in memory; `vaekit encode ... --data fashion-mnist` is also
timed once as a command, start-up and loading included.

Memory: a folder of PNGs (scripts/make_shapes.py, 32x32 RGB) whose decoded cache is
larger than the folder RAM budget, lowered to `--ram-budget-mib` (the cache is then
memory-mapped and split on disk, as a folder larger than memory is); `vaekit encode`
runs in a fresh process per setting, and a thread samples the process's anonymous
resident memory (RssAnon: what the process allocated, not the page cache of the
memory-mapped file, which the kernel can drop) every 5 ms; reported above the level
after start-up. It should grow with --batch-size, not with the number of examples.

Writes benchmarks/results/encode_speed.json and encode_speed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, median, write_results  # noqa: E402

PY = [sys.executable]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def vaekit_cli(*args: str) -> float:
    """Run `vaekit ARGS` in a fresh process; its wall time in seconds."""
    started = time.perf_counter()
    subprocess.run([*PY, "-m", "vaekit", *args], check=True, env=ENV, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def speed(run: Path, work: Path, rounds: int, batch_size: int) -> dict:
    import torch

    import vaekit
    from vaekit.data import load_data
    from vaekit.data.core.dataset import to_float

    model = vaekit.load(run).eval()
    cfg = model.training_config()
    data = load_data(
        type(cfg.data)(**{**vars(cfg.data), "limit_train": 0, "limit_test": 0}), progress=False
    )
    parts = [data.x_train, data.x_val, data.x_test]
    x = torch.cat([p for p in parts if p is not None])  # (70000, 1, 28, 28) uint8
    n = len(x)

    def reference_encode() -> None:
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size)
        out = []
        with torch.no_grad():
            for (xb,) in loader:
                mu, logvar = model.posterior(model.prepare(xb))
                out.append((mu, logvar))
        torch.cat([m for m, _ in out])

    def reference_score() -> None:
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size)
        g = torch.Generator().manual_seed(0)
        out = []
        with torch.no_grad():
            for (xb,) in loader:
                terms, _ = model.elbo_terms(model.prepare(xb), generator=g)
                out.append(terms.nelbo)
        torch.cat(out)

    # the floor: the model alone, on batches made float once beforehand (nothing read,
    # converted or written): no loop over this model can be faster than this
    floats = [to_float(xb) for xb in x.split(batch_size)]

    def floor_encode() -> None:
        with torch.inference_mode():
            for xb in floats:
                model.posterior(model.prepare(xb))

    def floor_score() -> None:
        g = torch.Generator().manual_seed(0)
        with torch.inference_mode():
            for xb in floats:
                model.elbo_terms(model.prepare(xb), generator=g)

    sides = {
        "floor_encode": floor_encode,
        "floor_score": floor_score,
        "reference_encode": reference_encode,
        "vaekit_encode": lambda: vaekit.encode(
            model, data, split="all", out=work / "z.npy", batch_size=batch_size
        ),
        "reference_score": reference_score,
        "vaekit_score": lambda: vaekit.score(
            model, data, split="all", out=work / "s.npy", batch_size=batch_size
        ),
    }
    times: dict[str, list[float]] = {k: [] for k in sides}
    for r in range(rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for name in order:
            started = time.perf_counter()
            sides[name]()
            times[name].append(time.perf_counter() - started)
    rates = {k: n / median(v) for k, v in times.items()}
    return {"examples": n, "seconds": times, "examples_per_s": rates}


CHILD = """
import json, sys, threading, time
def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
import vaekit.data.files.folder as folder
from vaekit import cli
folder.load_folder.__kwdefaults__["ram_budget"] = int(sys.argv[1])  # the budget we set
base, peak, done = anon(), [0], [False]
def sample():
    while not done[0]:
        peak[0] = max(peak[0], anon())
        time.sleep(0.005)
t = threading.Thread(target=sample, daemon=True)
t.start()
code = cli.main(sys.argv[2:])
done[0] = True
t.join()
print(json.dumps({"code": code, "base": base, "peak": max(peak[0], anon())}))
"""


def memory(run: Path, folder: Path, work: Path, budget: int, batch_sizes: list[int]) -> list:
    def child(split: str, batch_size: int) -> dict:
        args = ["encode", str(run), "--data", str(folder), "--split", split,
                "--batch-size", str(batch_size), "--out", str(work / "m.npy")]  # fmt: skip
        out = subprocess.run(
            [*PY, "-c", CHILD, str(budget), *args],
            check=True, env=ENV, capture_output=True, text=True,
        ).stdout  # fmt: skip
        record = json.loads(out.strip().splitlines()[-1])
        examples = len(__import__("numpy").load(work / "m.npy", mmap_mode="r"))
        mib = (record["peak"] - record["base"]) / 2**20
        return {"split": split, "batch_size": batch_size, "examples": examples,
                "peak_anon_above_start_mib": round(mib, 1)}  # fmt: skip

    child("all", 1000)  # builds the folder's cache and its on-disk split: not measured
    rows = [child(split, b) for b in batch_sizes for split in ("test", "train", "all")]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--limit-train", type=int, default=10000)
    parser.add_argument("--folder-images", type=int, default=20000)
    parser.add_argument("--ram-budget-mib", type=int, default=16)
    args = parser.parse_args()
    info = machine()
    work = Path(tempfile.mkdtemp(prefix="vaekit-encode-speed-"))
    run = work / "fashion"
    vaekit_cli("train", "--config", "fashion-mlp", "--epochs", "1", "--train.progress", "false",
               "--data.limit_train", str(args.limit_train), "--out", str(run))  # fmt: skip
    result = speed(run, work, args.rounds, args.batch_size)
    cli_s = vaekit_cli("encode", str(run), "--data", "fashion-mnist", "--out", str(work / "c.npy"))
    result["cli_encode_all_seconds"] = cli_s
    folder = work / "shapes"
    subprocess.run([*PY, str(ROOT / "scripts" / "make_shapes.py"), str(folder), "--n",
                    str(args.folder_images), "--size", "32"], check=True, env=ENV)  # fmt: skip
    small = work / "small"
    vaekit_cli("train", "--data", str(folder), "--data.image_size", "32", "--model.hidden", "64",
               "--latent-dim", "8", "--epochs", "1", "--data.limit_train", "512",
               "--train.progress", "false", "--out", str(small))  # fmt: skip
    budget = args.ram_budget_mib * 2**20
    cache_mib = args.folder_images * 3 * 32 * 32 / 2**20
    result["memory"] = memory(small, folder, work, budget, [100, 1000, 4000])
    result.update(
        machine=info,
        folder_cache_mib=round(cache_mib, 1),
        ram_budget_mib=args.ram_budget_mib,
        batch_size=args.batch_size,
        limit_train=args.limit_train,
    )
    rate = result["examples_per_s"]
    table = [
        ["70,000 Fashion-MNIST images", "examples/s (median)", "x reference (same run)"],
        *[
            [name, f"{rate[name]:,.0f}", f"{rate[name] / rate[ref]:.2f}x"]
            for name, ref in (
                ("reference_encode", "reference_encode"),
                ("vaekit_encode", "reference_encode"),
                ("floor_encode", "reference_encode"),
                ("reference_score", "reference_score"),
                ("vaekit_score", "reference_score"),
                ("floor_score", "reference_score"),
            )  # fmt: skip
        ],
    ]
    mem = "; ".join(
        f"batch {m['batch_size']}, {m['split']} ({m['examples']:,} examples): "
        f"+{m['peak_anon_above_start_mib']} MiB"
        for m in result["memory"]
    )
    notes = [
        f"Median of {args.rounds} rounds, batch {args.batch_size}, sides taking turns in one "
        "process; vaekit writes z.npy / s.npy, the reference keeps its results in memory. "
        "floor: the model alone (posterior / elbo_terms under inference_mode) on batches made "
        "float once beforehand, nothing read, converted or written: no loop over this model "
        "runs faster, so floor / reference bounds what any encode or score can reach. "
        f"`vaekit encode RUN --data fashion-mnist --out z.npy` as a command: {cli_s:.1f} s "
        "(start-up and loading included).",
        f"Memory: a {args.folder_images:,}-image folder (32x32 RGB, {cache_mib:.0f} MiB "
        f"decoded) with the folder RAM budget set to {args.ram_budget_mib} MiB (memory-mapped); "
        f"peak anonymous memory of `vaekit encode` above its start: {mem}.",
    ]
    print(json.dumps(result, indent=2))
    write_results("encode_speed", result, table, notes)


if __name__ == "__main__":
    main()
