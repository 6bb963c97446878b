"""What each shipped preset is and reaches: the numbers of the README's preset table.

For every preset: its parameter count and latent shape (built, not trained, at the
preset's own image size). Presets whose data this machine has (Fashion-MNIST, noise) are
also trained as `vaekit train --config NAME` would (MNIST presets on Fashion-MNIST, as
MNIST is not installed here) and evaluated on the test set: the test -ELBO in nats per
example, one seeded z per example (`vaekit evaluate`'s first number). The folder presets
(`shapes64`, `faces128`, `kl-f8-128`, `vq-f8-128`, the factor-set presets) need a folder of
images (and LPIPS weights), so they are counted, not trained here; the factor-set presets
are trained and scored (MIG, DCI) by benchmarks/factor_presets.py, which generates their
folder. A VQ-VAE has no ELBO: its row
gives its test objective (reconstruction + codebook + commitment, nats), the PSNR of its
reconstructions and its codebook's perplexity.

    python benchmarks/presets.py                     # every preset
    python benchmarks/presets.py --only noise-demo   # these rows again (comma-separated)
    python benchmarks/presets.py --no-train          # sizes only (seconds)

The test -ELBO does not depend on the machine's load (the runs are seeded); the training
time does: read `load_average_1min` in the JSON before quoting it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, write_results  # noqa: E402

import vaekit  # noqa: E402
from vaekit.config import load_config, preset_names  # noqa: E402
from vaekit.data import load_data  # noqa: E402

TRAINABLE = {"fashion-mnist", "mnist", "noise"}  # data this machine has (mnist -> fashion)


def size(name: str) -> dict[str, Any]:
    """The preset's model built at its own input size: parameters and latent shape."""
    cfg = load_config(name)
    if cfg.data.name in ("mnist", "fashion-mnist", "noise"):
        shape = (1, 28, 28)
    else:  # a folder preset: RGB at data.image_size
        shape = (3, cfg.data.image_size, cfg.data.image_size)
    model = vaekit.VAE.from_config(cfg.model, shape)  # the family's class (VQ-VAE, ...)
    latent = model.latent_shape or (model.latent_dim,)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "latent": "x".join(str(s) for s in latent),
        "input": "x".join(str(s) for s in shape),
    }


def train(name: str, out: Path) -> dict[str, Any]:
    """Train the preset as the CLI would, then its test -ELBO."""
    overrides: dict[str, Any] = {"train.out": str(out), "train.progress": False}
    if load_config(name).data.name == "mnist":
        overrides["data.name"] = "fashion-mnist"
    cfg = load_config(name, overrides)
    start = time.perf_counter()
    result = vaekit.Trainer(None, cfg).fit()
    seconds = time.perf_counter() - start
    model = vaekit.load(result.run_dir)
    data = load_data(cfg.data, seed=cfg.train.seed, progress=False)
    stats = vaekit.evaluate(model, data.x_test, seed=0, progress=False)
    row = {
        "data": cfg.data.name,
        "epochs": cfg.train.epochs,
        "train_seconds": round(seconds, 1),
        "test_examples": int(data.x_test.shape[0]),
    }
    if "nelbo" in stats:
        row["test_nelbo"] = round(float(stats["nelbo"]), 2)
    else:  # a VQ-VAE: no density; its objective, reconstructions and codebook instead
        for key in ("objective", "psnr", "perplexity"):
            row[f"test_{key}"] = round(float(stats[key]), 2)
    return row


def quality(r: dict[str, Any]) -> str:
    """The table's quality cell: the test -ELBO, or a VQ-VAE's numbers, or why neither."""
    if "test_nelbo" in r:
        return f"{r['test_nelbo']:.2f}"
    if "test_objective" in r:
        return (
            f"no density: objective {r['test_objective']:.2f}, PSNR {r['test_psnr']:.2f} dB, "
            f"codebook perplexity {r['test_perplexity']:.1f}"
        )
    return "not trained here"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated preset names")
    parser.add_argument("--no-train", action="store_true", help="sizes only")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or preset_names()
    info = machine()
    rows: dict[str, dict[str, Any]] = {}
    previous = RESULTS / "presets.json"
    if args.only and previous.exists():  # --only updates those rows, keeps the others
        rows = json.loads(previous.read_text())["presets"]
    for name in names:
        row = size(name)
        if not args.no_train and load_config(name).data.name in TRAINABLE:
            with tempfile.TemporaryDirectory() as tmp:
                row.update(train(name, Path(tmp) / "run"))
        rows[name] = row
        print(name, row, flush=True)
    table = [["preset", "input", "latent", "parameters", "test -ELBO (nats)", "data, epochs"]]
    for name, r in rows.items():
        trained = f"{r['data']}, {r['epochs']}" if "data" in r else "a folder of images"
        table.append(
            [f"`{name}`", r["input"], r["latent"], f"{r['parameters']:,}", quality(r), trained]
        )
    notes = [
        "Test -ELBO: one seeded z per test example, as `vaekit evaluate` prints first. "
        "MNIST presets trained on Fashion-MNIST (MNIST is not installed here)."
    ]
    write_results("presets", {"machine": info, "presets": rows}, table, notes)


if __name__ == "__main__":
    main()
