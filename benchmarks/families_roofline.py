"""How fast could the families table's MLP VAE train here at all? A roofline for its step.

`families_floor.py` found pythae's trainer only 1.13x slower than the network's step
written plainly in PyTorch, and vaekit's 1.11x faster than that plain step. This measures
what bounds all three: the matrix products of one training step (forward and backward) of
the VAE family's network (784-512-512-16 and back, batch 128, fp32, one thread). It

- counts the step's FLOPs from the Linear layers' shapes (2 B in out for the forward
  product, the same for the weight's gradient, and for the input's gradient of every layer
  but the first, whose input is the data), and checks the count against
  torch.utils.flop_counter.FlopCounterMode on the plain step's forward and backward;
- times each of those products alone, at its own shapes (torch.addmm for the forward,
  torch.mm for the two gradients, as autograd calls them), and a large square product
  (this CPU's peak for fp32 on one thread);
- trains vaekit's Trainer, pythae's BaseTrainer and the plain step as families_floor.py
  does (the same function, taking turns), and gives each side's achieved GFLOP/s as a
  fraction of what the same products reach alone.

The products alone give the step's floor: a step that did nothing but them, at their
measured speed, would train `batch / (their time)` images per second; that over pythae's
rate is the most any implementation of the same step at the same precision can gain on
pythae here.

    make bench-families-deps
    python benchmarks/families_roofline.py [--budget-s 10] [--rounds 3]
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
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import vaekit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import families as fam  # noqa: E402
import families_floor as floor  # noqa: E402
import families_pythae as pyt  # noqa: E402
from common import machine, write_results  # noqa: E402

SIDES = ("vaekit", "pythae", "bare")


def linear_shapes(model: nn.Module) -> list[tuple[str, int, int]]:
    """(name, in, out) of each Linear layer of the model."""
    return [(n, m.in_features, m.out_features) for n, m in model.named_modules()
            if isinstance(m, nn.Linear)]  # fmt: skip


def step_flops(shapes: list[tuple[str, int, int]], batch: int, first: str) -> dict[str, int]:
    """The matrix products' FLOPs of one step: forward, the weights' and the inputs'
    gradients (none for layer `first`, whose input is the data)."""
    fwd = sum(2 * batch * i * o for _, i, o in shapes)
    grad_input = sum(2 * batch * i * o for n, i, o in shapes if n != first)
    return {"forward": fwd, "grad_weight": fwd, "grad_input": grad_input,
            "total": 2 * fwd + grad_input}  # fmt: skip


def counted_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FlopCounterMode's count of the plain step's forward and backward on batch x."""
    with FlopCounterMode(display=False) as counter:
        h = model.encoder(x)
        mu, logvar = model.mu_head(h), model.logvar_head(h)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        logits = model.decoder(z).view_as(x)
        loss = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        loss = loss - 0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum()
        loss.backward()
    return int(counter.get_total_flops())


def cpu_seconds(fn: Any, min_s: float = 0.3) -> float:
    """Process CPU seconds per call of fn, over at least `min_s` after a warm-up."""
    for _ in range(3):
        fn()
    calls, t0 = 0, time.process_time()
    while (elapsed := time.process_time() - t0) < min_s:
        fn()
        calls += 1
    return elapsed / calls


def product_times(shapes: list[tuple[str, int, int]], batch: int, first: str) -> dict[str, Any]:
    """CPU seconds of each layer's products alone, at its shapes; their sum per step."""
    g = torch.Generator().manual_seed(0)
    per_layer, total = {}, 0.0
    for name, i, o in shapes:
        x, w = torch.randn(batch, i, generator=g), torch.randn(o, i, generator=g)
        b, grad = torch.randn(o, generator=g), torch.randn(batch, o, generator=g)
        times = {
            "forward": cpu_seconds(lambda x=x, w=w, b=b: torch.addmm(b, x, w.t())),
            "grad_weight": cpu_seconds(lambda x=x, grad=grad: torch.mm(grad.t(), x)),
        }
        if name != first:
            times["grad_input"] = cpu_seconds(lambda w=w, grad=grad: torch.mm(grad, w))
        per_layer[name] = {k: v * 1e6 for k, v in times.items()}  # microseconds
        total += sum(times.values())
    return {"per_layer_us": per_layer, "step_s": total}


def peak_gflops(n: int) -> float:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    return 2 * n**3 / cpu_seconds(lambda: torch.mm(a, b), 1.0) / 1e9


class _CountOneStep(vaekit.Callback):
    """A vaekit Callback counting the FLOPs of the run's second step (FlopCounterMode)."""

    def __init__(self) -> None:
        super().__init__()
        self.steps, self.mode = 0, FlopCounterMode(display=False)

    def on_step_end(self, trainer: Any) -> bool:
        self.steps += 1
        if self.steps == 1:
            self.mode.__enter__()
        if self.steps == 2:
            self.mode.__exit__(None, None, None)
        return self.steps >= 2


def factorvae_flops(work: Path) -> dict[str, Any]:
    """The products' FLOPs of one FactorVAE step (families.py's settings; Kim & Mnih's
    discriminator, 6 x 1000): vaekit's, from the discriminator's shapes and counted on its
    Trainer's second step, and pythae's, counted on its model's forward and its
    AdversarialTrainer's two backward passes (the autoencoder's, then the discriminator's)."""
    from vaekit.models.discriminator import LatentDiscriminator

    family, batch = fam.FAMILIES["FactorVAE"], fam.BASE["train.batch_size"]
    cfg = fam.config(family, work / "vaekit")
    d = LatentDiscriminator(cfg.model.latent_dim, cfg.loss.factorvae_hidden,
                            cfg.loss.factorvae_layers)  # fmt: skip
    d_shapes = linear_shapes(d)
    per_row = 2 * sum(i * o for _, i, o in d_shapes)  # one row's forward through D
    first = 2 * d_shapes[0][1] * d_shapes[0][2]  # the first layer's share of it
    vae, _ = fam.twin_of(family, None, work / "twin")
    vae_shapes = linear_shapes(vae)
    parts = {
        "vae_step": step_flops(vae_shapes, batch, vae_shapes[0][0])["total"],
        # the VAE's TC term: D's forward on the batch's z, and its input gradient back to z
        "tc_forward": batch * per_row,
        "tc_backward": batch * per_row,
        # D's update on z (again) and the permuted z, stacked: forward, weight gradients,
        # input gradients of all but the first layer (its input is detached)
        "d_forward": 2 * batch * per_row,
        "d_grad_weight": 2 * batch * per_row,
        "d_grad_input": 2 * batch * (per_row - first),
    }
    counter = _CountOneStep()
    vaekit.Trainer(None, cfg, callbacks=[counter], overwrite=True).fit()
    twin, _ = fam.twin_of(family, None, work / "pythae_twin")
    assert family.pythae is not None
    model, _, _ = pyt.build("FactorVAE", twin, family.pythae, batch, 1e-3, work / "pythae")
    with FlopCounterMode(display=False) as pythae_counter:
        out = model({"data": torch.rand(batch, *twin.input_shape)})
        out.autoencoder_loss.backward(retain_graph=True)
        out.discriminator_loss.backward()
    return {
        "vaekit_parts": parts,
        "vaekit_from_shapes": sum(parts.values()),
        "vaekit_counted": int(counter.mode.get_total_flops()),
        "pythae_counted": int(pythae_counter.get_total_flops()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-s", type=float, default=10.0, help="CPU seconds per side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peak-n", type=int, default=2048, help="the square product's side")
    parser.add_argument("--name", default="families_roofline")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    pyt.import_pythae()
    from vaekit.data import load_data

    info = machine()
    batch = fam.BASE["train.batch_size"]
    model, _ = fam.twin_of(fam.FAMILIES["VAE"], None, Path(tempfile.gettempdir()))
    shapes = linear_shapes(model)
    first = shapes[0][0]  # the encoder's first layer: its input is the data
    flops = step_flops(shapes, batch, first)
    flops["flop_counter"] = counted_flops(model, torch.rand(batch, 784))
    assert flops["flop_counter"] == flops["total"], flops  # the count is the products'

    x = load_data(fam.config(fam.FAMILIES["VAE"], Path("unused")).data, progress=False).x_train
    work = Path(tempfile.mkdtemp(prefix="vaekit-bench-roofline-"))
    rounds, products = [], []
    try:
        factor = factorvae_flops(work / "factorvae")
        for r in range(args.rounds):  # the products alone between the trainers' turns
            products.append(product_times(shapes, batch, first))
            rounds.append(floor.one_round(args, x, work / str(r)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    peak = peak_gflops(args.peak_n)
    alone_s = statistics.median(p["step_s"] for p in products)
    alone_gflops = flops["total"] / alone_s / 1e9
    rate = {s: statistics.median(r[s] for r in rounds) for s in SIDES}
    ceiling = batch / alone_s  # images / CPU-s of a step that were its products alone
    rows = [["step", "images / CPU-s", "ms / step", "GFLOP/s (products)",
             "of the products alone", "of the peak", "x pythae"]]  # fmt: skip
    for side, label in (("vaekit", "vaekit's Trainer"), ("pythae", "pythae's BaseTrainer"),
                        ("bare", "plain PyTorch step")):  # fmt: skip
        gf = flops["total"] * rate[side] / batch / 1e9
        rows.append([label, f"{rate[side]:,.0f}", f"{1000 * batch / rate[side]:.2f}",
                     f"{gf:.1f}", f"{gf / alone_gflops:.0%}", f"{gf / peak:.0%}",
                     f"{rate[side] / rate['pythae']:.2f}x"])  # fmt: skip
    rows.append(["its products alone", f"{ceiling:,.0f}", f"{1000 * alone_s:.2f}",
                 f"{alone_gflops:.1f}", "100%", f"{alone_gflops / peak:.0%}",
                 f"{ceiling / rate['pythae']:.2f}x"])  # fmt: skip
    info["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    result = {"machine": info, "settings": vars(args), "shapes": shapes, "flops": flops,
              "peak_gflops": peak, "products": products, "rounds": rounds,
              "rate_median": rate, "products_alone_gflops": alone_gflops,
              "factorvae": factor}  # fmt: skip
    layers = ", ".join(f"{i}-{o}" for _, i, o in shapes)
    notes = [
        f"One training step of the VAE family's network (Linear layers {layers}; batch "
        f"{batch}, fp32, one thread) does {flops['total'] / 1e9:.3f} GFLOP in matrix "
        f"products: forward {flops['forward'] / 1e9:.3f}, weight gradients "
        f"{flops['grad_weight'] / 1e9:.3f}, input gradients {flops['grad_input'] / 1e9:.3f} "
        "(none for the first layer). torch.utils.flop_counter.FlopCounterMode counts "
        f"{flops['flop_counter'] / 1e9:.3f} GFLOP for the plain step's forward and backward. "
        "Elementwise work (bias, ReLU, the loss, Adam) is not counted in any row.",
        f"The products alone: each timed by itself at its shapes (median over {args.rounds} "
        f"measurements, one between each round's trainers), {1000 * alone_s:.2f} ms per step. "
        f"Peak: a {args.peak_n}x{args.peak_n} product, {peak:.1f} GFLOP/s.",
        f"Trainers: families_floor.py's rounds ({args.rounds}, each side {args.budget_s:g} "
        "CPU-s from the same initial weights, taking turns; medians). GFLOP/s (products): "
        "the step's product FLOPs x steps per CPU-s. The last row is the step's floor: a "
        "step that did nothing but its products, at their speed alone; its x pythae is the "
        "most any implementation of the same step at the same precision could reach here.",
    ]
    f, parts = factor, factor["vaekit_parts"]
    notes.append(
        f"FactorVAE (families.py's settings), the products of one step: vaekit's "
        f"{f['vaekit_counted'] / 1e9:.3f} GFLOP counted by FlopCounterMode on its Trainer's "
        f"second step ({f['vaekit_from_shapes'] / 1e9:.3f} from the shapes: the VAE "
        f"{parts['vae_step'] / 1e9:.3f}; the discriminator's pass for the TC term "
        f"{parts['tc_forward'] / 1e9:.3f} forward and {parts['tc_backward'] / 1e9:.3f} back "
        f"to z; its update on z and the permuted z stacked, "
        f"{parts['d_forward'] / 1e9:.3f} forward, {parts['d_grad_weight'] / 1e9:.3f} weight "
        f"and {parts['d_grad_input'] / 1e9:.3f} input gradients), the VAE trained on all "
        f"{batch}; pythae's {f['pythae_counted'] / 1e9:.3f} GFLOP (its model's forward and its "
        f"AdversarialTrainer's two backward passes), the VAE trained on {batch // 2} of its "
        f"{batch}. Per image drawn, vaekit's step does "
        f"{f['vaekit_counted'] / f['pythae_counted']:.2f}x pythae's products. The update's "
        f"forward on z repeats the TC term's ({parts['tc_forward'] / f['vaekit_counted']:.1%} "
        "of vaekit's step)."
    )
    print(write_results(args.name, result, rows, notes))


if __name__ == "__main__":
    main()
