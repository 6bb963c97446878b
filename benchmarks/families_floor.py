"""How much of pythae's time is its trainer, for the families table's plain VAE?

`families.py` gives vaekit's Trainer 1.31x pythae's BaseTrainer on the same MLP VAE
(784-512-512-16, Bernoulli, Adam 1e-3, batch 128, one thread, fp32). This measures, in one
process and taking turns, the same two trainers and a bare PyTorch loop over the same
network: the batch taken from a float tensor already in memory, the encoder, the
reparameterisation, the decoder, BCE-with-logits + the closed-form KL, backward, an Adam
step; no validation, logging or checks. The bare loop's rate over pythae's is what pythae's
trainer costs beyond the network's own step written plainly; vaekit's over the bare loop's
is what vaekit's step gains on that plain step (its fused kernels and flushed denormals;
the bare loop and pythae run after vaekit's trainer in the process, so with denormals
flushed too).

    make bench-families-deps
    python benchmarks/families_floor.py [--budget-s 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import families as fam  # noqa: E402
import families_pythae as pyt  # noqa: E402
from common import machine, write_results  # noqa: E402


def bare_loop(model: Any, x: torch.Tensor, budget_s: float) -> dict[str, Any]:
    """The network's training step alone, until `budget_s` CPU seconds."""
    opt = torch.optim.Adam(model.parameters(), lr=fam.BASE["optim.lr"])
    batch, steps = fam.BASE["train.batch_size"], 0
    data = x.float().div_(255.0)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data), generator=g)
    t0 = time.process_time()
    while time.process_time() - t0 < budget_s:
        i = (steps * batch) % (len(data) - batch)
        xb = data[order[i : i + batch]]
        h = model.encoder(xb)
        mu, logvar = model.mu_head(h), model.logvar_head(h)
        z = mu + torch.randn(mu.shape, generator=g) * (0.5 * logvar).exp()
        logits = model.decoder(z).view_as(xb)
        recon = F.binary_cross_entropy_with_logits(logits, xb, reduction="sum")
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum()
        loss = (recon + kl) / batch
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    return {"steps": steps, "samples": steps * batch, "cpu_s": time.process_time() - t0}


def one_round(args: argparse.Namespace, x: torch.Tensor, work: Path) -> dict[str, float]:
    family = fam.FAMILIES["VAE"]
    _, init, vaekit_stats = fam.train_vaekit(family, args.budget_s, work / "vaekit")
    twin, _ = fam.twin_of(family, init, work / "twin")
    pythae_stats = fam.train_pythae("VAE", family, twin, args.budget_s, x, work / "pythae")
    pythae_stats.pop("pythae_model")
    bare, _ = fam.twin_of(family, init, work / "bare")
    bare_stats = bare_loop(bare.train(), x, args.budget_s)
    return {
        side: s["samples"] / s["cpu_s"]
        for side, s in (("vaekit", vaekit_stats), ("pythae", pythae_stats), ("bare", bare_stats))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-s", type=float, default=10.0, help="CPU seconds per side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--name", default="families_floor")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    pyt.import_pythae()
    from vaekit.data import load_data

    info = machine()
    x = load_data(fam.config(fam.FAMILIES["VAE"], Path("unused")).data, progress=False).x_train
    work = Path(tempfile.mkdtemp(prefix="vaekit-bench-floor-"))
    try:
        rounds = [one_round(args, x, work / str(r)) for r in range(args.rounds)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {s: statistics.median(r[s] for r in rounds) for s in ("vaekit", "pythae", "bare")}
    ratio = {  # within each round, then the median
        k: statistics.median(r[a] / r[b] for r in rounds)
        for k, (a, b) in {
            "vaekit/pythae": ("vaekit", "pythae"),
            "bare/pythae": ("bare", "pythae"),
            "vaekit/bare": ("vaekit", "bare"),
        }.items()  # fmt: skip
    }
    rows = [["side", "samples / CPU-s (median)", "per round"]]
    rows += [[s, f"{med[s]:,.0f}", ", ".join(f"{r[s]:,.0f}" for r in rounds)] for s in med]
    rows += [[k, f"{v:.2f}x", ""] for k, v in ratio.items()]
    info["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    result = {"machine": info, "settings": vars(args), "rounds": rounds, "ratio_median": ratio}
    notes = [
        f"{args.rounds} rounds, each side {args.budget_s} CPU-s (time.process_time, one thread, "
        "fp32) from the same initial weights, the three sides taking turns in one process; "
        "ratios are taken within a round. bare: the network's step written plainly in PyTorch "
        "(see the script's docstring); bare/pythae is what pythae's trainer costs beyond it."
    ]
    print(write_results(args.name, result, rows, notes))


if __name__ == "__main__":
    main()
