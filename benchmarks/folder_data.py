"""Folder data: the first run decodes every image once; later runs and epochs decode none.

    python benchmarks/folder_data.py [--images 3000] [--size 64] [--epochs 2]

Writes a folder of PNGs with scripts/make_shapes.py, then twice, each time in a fresh
process as a user's run would be: load the folder (`load_data`, what `vaekit train
--data FOLDER` does first) and train `--epochs` epochs of a small MLP VAE on it. Each
process counts the images PIL opens while loading and while training, and times both.
The first run decodes every image and writes the uint8 cache; the second reads the
cache: no image is opened, and no epoch ever opens one (batches are gathered from the
in-memory uint8 array, or the memory-mapped cache when it is larger than RAM).

Writes benchmarks/results/folder_data.json and folder_data.md.
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
from common import ROOT, machine, write_results  # noqa: E402


def child(folder: Path, size: int, epochs: int, threads: int) -> None:
    """One user run, instrumented: how many images PIL opens while loading and training."""
    from PIL import Image

    import vaekit
    from vaekit.data import load_data

    opened = [0]
    original = Image.open

    def counting_open(*args, **kwargs):  # type: ignore[no-untyped-def]
        opened[0] += 1
        return original(*args, **kwargs)

    Image.open = counting_open  # type: ignore[assignment]
    cfg = vaekit.load_config(
        None,
        {
            "data.name": str(folder),
            "data.image_size": size,
            "model.hidden": [256],
            "model.latent_dim": 16,
            "train.epochs": epochs,
            "train.batch_size": 128,
            "train.progress": False,
            "train.threads": threads,
            "train.out": tempfile.mkdtemp(prefix="vaekit-folder-"),
        },
    )
    started = time.perf_counter()
    data = load_data(cfg.data, progress=False)
    load_seconds, load_opened = time.perf_counter() - started, opened[0]
    run = vaekit.train(cfg, data=data)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    print(
        json.dumps(
            {
                "load_seconds": load_seconds,
                "images_opened_loading": load_opened,
                "images_opened_training": opened[0] - load_opened,
                "epoch_seconds": [r["seconds"] for r in records],
                "cache": data.info.get("cache"),
                "train_images": int(data.x_train.shape[0]),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.size, args.epochs, args.threads)
        return
    info = machine()
    folder = Path(tempfile.mkdtemp(prefix="vaekit-shapes-")) / "shapes"
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_shapes import make_shapes

    make_shapes(folder, n=args.images, size=args.size)
    runs = []
    for name in ("first run", "second run"):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(folder),
                "--size",
                str(args.size),
                "--epochs",
                str(args.epochs),
                "--threads",
                str(args.threads),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if out.returncode:
            raise SystemExit(out.stderr[-3000:])
        runs.append({"run": name, **json.loads(out.stdout.strip().splitlines()[-1])})
        print(runs[-1], flush=True)
    info["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    info["torch_threads"] = args.threads or info["torch_threads"]
    result = {
        "machine": info,
        "images": args.images,
        "size": args.size,
        "epochs": args.epochs,
        "runs": runs,
    }
    table = [
        ["", "load (s)", "images decoded loading", "images decoded in epochs", "epoch time (s)"]
    ]
    for r in runs:
        table.append(
            [
                r["run"],
                f"{r['load_seconds']:.2f}",
                f"{r['images_opened_loading']:,}",
                f"{r['images_opened_training']}",
                ", ".join(f"{s:.2f}" for s in r["epoch_seconds"]),
            ]
        )
    notes = [
        f"{args.images:,} PNGs ({args.size}x{args.size} RGB) from scripts/make_shapes.py; "
        "each run is a fresh process (load the folder, then train a 12288-256-16 MLP VAE "
        f"for {args.epochs} epochs); images decoded = calls to PIL.Image.open."
    ]
    md = write_results("folder_data", result, table, notes)
    print(md.read_text())


if __name__ == "__main__":
    main()
