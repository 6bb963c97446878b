"""Out-of-distribution detection and compare-by-latents, as docs/scoring.md shows them, at
full size: the numbers that page quotes.

    python benchmarks/ood_fashion.py [--epochs 5] [--iw-samples 16] [--neighbours 5]

1. `vaekit train --config fashion-mlp --epochs E` (the demo preset, shortened);
2. the Fashion-MNIST test images, and the same images inverted (255 - x) as the shifted
   set, each scored by `vaekit score` (-ELBO, and log p(x) with K importance samples);
3. AUROC of telling the two apart by the score (torchmetrics' binary_auroc; the shifted
   images are the positives, higher -ELBO / lower log p(x) = more anomalous);
4. `vaekit encode` of the training and test splits, and the label agreement of each test
   image's `--neighbours` nearest training images by Euclidean distance between posterior
   means (a k-nearest-neighbour classifier in latent space).

Writes benchmarks/results/ood_fashion.json and ood_fashion.md.
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

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, write_results  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def vaekit_cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "vaekit", *args], check=True, env=ENV)


def knn_agreement(train: np.ndarray, y_train: np.ndarray, test: np.ndarray,
                  y_test: np.ndarray, k: int) -> float:  # fmt: skip
    """The fraction of test points whose k nearest training points' majority label is theirs."""
    bank = torch.from_numpy(train)
    hits = 0
    for start in range(0, len(test), 1000):
        queries = torch.from_numpy(test[start : start + 1000])
        nearest = torch.cdist(queries, bank).topk(k, largest=False).indices  # (B, k)
        votes = torch.from_numpy(y_train)[nearest]
        majority = torch.mode(votes, dim=1).values.numpy()
        hits += int((majority == y_test[start : start + 1000]).sum())
    return hits / len(test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--iw-samples", type=int, default=16)
    parser.add_argument("--neighbours", type=int, default=5)
    args = parser.parse_args()
    from torchmetrics.functional.classification import binary_auroc

    import vaekit
    from vaekit.data import load_data

    info = machine()
    work = Path(tempfile.mkdtemp(prefix="vaekit-ood-"))
    run = work / "fashion"
    started = time.perf_counter()
    vaekit_cli("train", "--config", "fashion-mlp", "--epochs", str(args.epochs),
               "--train.progress", "false", "--out", str(run))  # fmt: skip
    train_s = time.perf_counter() - started
    cfg = vaekit.load(run).training_config()
    data = load_data(cfg.data, seed=cfg.train.seed, progress=False)
    np.save(work / "inverted.npy", 255 - data.x_test.numpy())
    k = ["--iw-samples", str(args.iw_samples)]
    vaekit_cli("score", str(run), *k, "--out", str(work / "in.npz"))
    vaekit_cli("score", str(run), "--data", str(work / "inverted.npy"), *k,
               "--out", str(work / "shifted.npz"))  # fmt: skip
    inside, shifted = np.load(work / "in.npz"), np.load(work / "shifted.npz")
    labels = torch.tensor([0] * len(inside["id"]) + [1] * len(shifted["id"]))

    def both(key: str, sign: int) -> torch.Tensor:
        """The scores of both sets scaled into [0, 1] (binary_auroc reads values outside
        it as logits and squashes them through a sigmoid, which rounds -ELBOs of hundreds
        of nats all to 1.0); the AUROC depends on their order only."""
        s = torch.from_numpy(sign * np.concatenate([inside[key], shifted[key]]))
        return (s - s.min()) / (s.max() - s.min())

    auroc = {  # the shifted images are the positives: higher = more anomalous
        "nelbo": float(binary_auroc(both("nelbo", 1), labels)),
        "log_px": float(binary_auroc(both("log_px", -1), labels)),
    }
    for split in ("train", "test"):
        vaekit_cli("encode", str(run), "--split", split, "--out", str(work / f"{split}.npz"))
    tr, te = np.load(work / "train.npz"), np.load(work / "test.npz")
    agreement = knn_agreement(tr["mu"], tr["label"], te["mu"], te["label"], args.neighbours)
    result = {
        "machine": info,
        "epochs": args.epochs,
        "iw_samples": args.iw_samples,
        "neighbours": args.neighbours,
        "train_seconds": train_s,
        "test_examples": int(len(inside["id"])),
        "mean_nelbo": {"test": inside["nelbo"].mean(), "inverted": shifted["nelbo"].mean()},
        "mean_log_px": {"test": inside["log_px"].mean(), "inverted": shifted["log_px"].mean()},
        "auroc": auroc,
        "knn_label_agreement": agreement,
    }  # fmt: skip
    for key in ("mean_nelbo", "mean_log_px"):
        result[key] = {k: float(v) for k, v in result[key].items()}
    table = [
        ["Fashion-MNIST test vs the same images inverted", "value"],
        ["mean -ELBO, test / inverted (nats)",
         f"{result['mean_nelbo']['test']:.1f} / {result['mean_nelbo']['inverted']:.1f}"],
        ["AUROC by -ELBO", f"{auroc['nelbo']:.4f}"],
        [f"AUROC by -log p(x), K={args.iw_samples}", f"{auroc['log_px']:.4f}"],
        [f"{args.neighbours}-NN label agreement in latent space (test vs train)",
         f"{agreement:.4f}"],
    ]  # fmt: skip
    notes = [
        f"`vaekit train --config fashion-mlp --epochs {args.epochs}` ({train_s:.0f} s here), "
        f"then `vaekit score RUN --iw-samples {args.iw_samples}` on the 10,000 test images "
        "and on `255 - x` of the same images (`--data inverted.npy`); `vaekit encode --split "
        "train|test` for the neighbours (posterior means, Euclidean distance)."
    ]
    print(json.dumps(result, indent=2))
    write_results("ood_fashion", result, table, notes)


if __name__ == "__main__":
    main()
