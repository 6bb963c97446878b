"""What each change to the training step is worth: old way vs new way, piece by piece.

    python benchmarks/step_costs.py [--threads 1] [--rounds 7]

The `mnist-mlp` step (batch 128, 784-400-20) on Fashion-MNIST batches, one piece at a
time. Each pair runs alternately, `--rounds` times, in one process; a figure is the
best (least disturbed) round's CPU time per call in microseconds, so other processes on
the machine barely move it. One thread by default: CPU time then equals the time the
work takes on one core, and the costs add up to the step's.

Writes benchmarks/results/step_costs.json and step_costs.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_results  # noqa: E402
from reference_loop import VAE as ReferenceVAE  # noqa: E402
from reference_loop import loss_function  # noqa: E402

import vaekit  # noqa: E402
from vaekit.data import batch_indices, epoch_permutation, load_data  # noqa: E402
from vaekit.data.core.dataset import gather  # noqa: E402
from vaekit.training import objective  # noqa: E402


def cpu_us(fn: Callable[[], object], calls: int) -> float:
    started = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - started) / calls * 1e6


def compare(
    pairs: dict[str, tuple[Callable[[], object], Callable[[], object]]],
    rounds: int,
    calls: int = 100,
) -> dict[str, tuple[float, float]]:
    """{name: (old us, new us)}: the best round of each, old and new alternating."""
    best: dict[str, list[float]] = {name: [float("inf"), float("inf")] for name in pairs}
    for fns in pairs.values():
        for fn in fns:
            for _ in range(5):  # warm-up: allocator, caches, lazy initialisation
                fn()
    for _ in range(rounds):
        for name, fns in pairs.items():
            for i, fn in enumerate(fns):
                best[name][i] = min(best[name][i], cpu_us(fn, calls))
    return {name: (old, new) for name, (old, new) in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    info = machine()
    cfg = vaekit.load_config("mnist-mlp", {"data.name": "fashion-mnist"})
    data = load_data(cfg.data, progress=False)
    x_train, cpu = data.x_train, torch.device("cpu")
    idx = batch_indices(epoch_permutation(x_train.shape[0], 0, 0), 128)[0]
    x = gather(x_train, idx, cpu)

    torch.manual_seed(0)
    model = vaekit.VAE.from_config(cfg.model, data.shape)
    params = list(model.parameters())
    g = torch.Generator().manual_seed(0)

    def backward(precision: str = "fp32") -> torch.Tensor:
        with (
            torch.autocast("cpu", torch.bfloat16)
            if precision == "bf16"
            else contextlib.nullcontext()
        ):
            terms = objective.compute(model, x, None, cfg.loss, 0, objective.Noise(g))
        model.zero_grad(set_to_none=True)
        terms.loss.backward()
        return terms.loss

    loss = backward()
    grads = [p.grad for p in params]

    def adam(**kind: object) -> torch.optim.Adam:
        """Adam over copies of the model's parameters, holding copies of its gradients."""
        opt = torch.optim.Adam(
            [p.detach().clone().requires_grad_() for p in params], lr=1e-3, **kind
        )
        for p, grad in zip(opt.param_groups[0]["params"], grads, strict=True):
            p.grad = grad.clone()
        return opt

    on_device, on_host = adam(fused=True), adam(fused=True)

    def skip_on_device() -> None:  # the GPU way: the fused kernel reads the flag itself
        norm = torch.nn.utils.get_total_norm(grads, foreach=True)
        on_device.found_inf = (~torch.isfinite(loss.detach() + norm)).float()
        on_device.step()

    def skip_on_host() -> None:  # the CPU way: reading a CPU flag costs no sync
        norm = torch.nn.utils.get_total_norm(grads, foreach=True)
        if not (~torch.isfinite(loss.detach() + norm)).item():
            on_host.step()

    sums = torch.zeros(4, dtype=torch.float64)

    def old_guard_and_stats() -> None:
        norm = torch.nn.utils.clip_grad_norm_(params, float("inf"), foreach=True)
        if torch.isfinite(norm) and torch.isfinite(loss):  # two host syncs per step
            sums.add_(
                torch.stack(
                    [
                        loss.detach().double().cpu(),
                        loss.detach().double().cpu(),
                        loss.detach().double().cpu(),
                        torch.tensor(1.0, dtype=torch.float64),
                    ]
                )
            )

    pending: list[torch.Tensor] = []

    def new_guard_and_stats() -> None:
        norm = torch.nn.utils.get_total_norm(grads, foreach=True)
        bad = (~torch.isfinite(loss.detach() + norm)).float()
        pending.append(
            torch.stack([loss.detach(), loss.detach(), loss.detach(), loss.detach(), norm, bad])
        )
        if len(pending) == 25:  # one read of 25 steps' records
            torch.stack(pending).double().tolist()
            pending.clear()

    reference = ReferenceVAE()
    xr = x.view(-1, 784)

    def sigmoid_bce() -> None:
        recon, mu, logvar = reference(xr)
        reference.zero_grad(set_to_none=True)
        loss_function(recon, xr, mu, logvar).backward()

    def logits_bce() -> None:
        mu, logvar = reference.encode(xr)
        z = reference.reparameterize(mu, logvar)
        logits = reference.fc4(F.relu(reference.fc3(z)))
        reference.zero_grad(set_to_none=True)
        (
            F.binary_cross_entropy_with_logits(logits, xr, reduction="sum")
            - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        ).backward()

    tiny = [torch.full_like(p, 1e-20) for p in params]  # v = g^2 ~ 1e-40: denormal

    def adam_tiny_grads(flush: bool) -> Callable[[], None]:
        opt = adam(fused=True)
        for p, grad in zip(opt.param_groups[0]["params"], tiny, strict=True):
            p.grad = grad

        def step() -> None:
            torch.set_flush_denormal(flush)
            opt.step()
            torch.set_flush_denormal(True)

        return step

    pairs = {
        "batch: x[idx].float() / 255 -> index_select + one-pass divide": (
            lambda: x_train[idx].float().div_(255.0),
            lambda: gather(x_train, idx, cpu),
        ),
        "loss: sigmoid + BCE -> BCE with logits (fwd + bwd, reference model)": (
            sigmoid_bce,
            logits_bce,
        ),
        "optimizer: Adam for-loop (plain) -> fused Adam": (adam().step, adam(fused=True).step),
        "optimizer: foreach Adam -> fused Adam": (adam(foreach=True).step, adam(fused=True).step),
        "guard: clip_grad_norm_(inf) + 2 syncs + stats -> on-device, 1 read per 25 steps": (
            old_guard_and_stats,
            new_guard_and_stats,
        ),
        "guard + fused Adam on the CPU: found_inf tensor -> read the flag": (
            skip_on_device,
            skip_on_host,
        ),
        "denormals in Adam's state: flush off -> on": (
            adam_tiny_grads(False),
            adam_tiny_grads(True),
        ),
        "forward + backward: fp32 -> bf16 autocast": (backward, lambda: backward("bf16")),
    }
    costs = compare(pairs, args.rounds)
    info["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    result = {
        "machine": info,
        "threads": args.threads,
        "rounds": args.rounds,
        "microseconds_per_call": {
            k: {"old": round(o, 1), "new": round(n, 1)} for k, (o, n) in costs.items()
        },
    }
    table = [["change (old -> new)", "old (us)", "new (us)", "saved per step (us)"]]
    for name, (old, new) in costs.items():
        table.append([name, f"{old:,.0f}", f"{new:,.0f}", f"{old - new:,.0f}"])
    notes = [
        f"CPU time per call with {args.threads} thread(s), best of {args.rounds} "
        "alternating rounds of 100 calls. A step of the mnist-mlp preset at 30,000 "
        "samples/s lasts 4,270 us."
    ]
    md = write_results("step_costs", result, table, notes)
    print(md.read_text())


if __name__ == "__main__":
    main()
