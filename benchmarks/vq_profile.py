"""Where the time of vaekit's VQ-VAE training step goes on the families benchmark's VQ-VAE
(benchmarks/families.py): torch.profiler over a few steps, one thread.

    python benchmarks/vq_profile.py [--steps 10] [--name vq_profile]

The step is families.py's VQ-VAE row as vaekit's Trainer builds it (Step + Objective on
its config: the conv net with channels 32, 64 and no residual blocks, a 7x7 map of 8-value
codes, a codebook of 256, a Gaussian likelihood, Adam 1e-3, batch 128, fp32) on
Fashion-MNIST's first training images. Each step is warmed up (3 steps), then `--steps`
steps are profiled (CPU activities; no shapes or stacks, so the profiler's overhead stays
small). The forward pass is cut into the encoder, the quantiser and the decoder+loss by
record_function ranges wrapped around the modules here (no change to vaekit); backward
operators are attributed by name (the quantiser's backward is a few elementwise ops on
(6272, 8) tensors). Per range and per operator: self CPU time.

The profiler's times are wall times, which other processes on a shared machine inflate;
so the quantiser's whole cost is also measured with the process's CPU time: the same step
against a copy whose quantiser costs nothing (z_q = z_e, no codes, zero losses), taking
turns for `--rounds` rounds of `--steps` steps each (the ratio of the two is the most any
change to the quantiser can gain), and the nearest-code search alone. Writes
benchmarks/results/NAME.json and .md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from vaekit.data import load_data, to_float
from vaekit.models.quantizer import Quantized, VectorQuantizer
from vaekit.models.vqvae import VQVAE
from vaekit.training.distributed import Dist
from vaekit.training.objective import Noise, Objective
from vaekit.training.preflight import build_model
from vaekit.training.step import Step

sys.path.insert(0, str(Path(__file__).resolve().parent))
import families  # noqa: E402
from common import machine, write_results  # noqa: E402

RANGES = ("vq.encoder", "vq.quantize", "vq.decoder", "vq.objective")


def wrapped(module: torch.nn.Module, label: str) -> None:
    """module.forward inside a record_function range named `label`."""
    forward = module.forward

    def ranged(*args: Any, **kwargs: Any) -> Any:
        with record_function(label):
            return forward(*args, **kwargs)

    module.forward = ranged  # type: ignore[method-assign,unused-ignore]


def build_step(work: Path, wrap: bool = True) -> tuple[Step, torch.Tensor]:
    cfg = families.config(families.FAMILIES["VQVAE"], work)
    data = load_data(cfg.data, cfg.train.seed, progress=False)
    device = torch.device("cpu")
    torch.manual_seed(0)
    model = cast(VQVAE, build_model(None, cfg, data, device, None))
    step = Step(model, cfg, device, "fp32", 10**6, Dist(), None)
    noise = Noise(torch.Generator().manual_seed(0))
    objective = Objective(model, cfg.loss, noise, None, None)
    if wrap:
        for module, label in zip((model.encoder, model.quantize, model.decoder, objective),
                                 RANGES, strict=True):  # fmt: skip
            wrapped(module, label)
    step.attach(objective)
    return step, data.x_train[: cfg.train.batch_size]


class FreeQuantizer(torch.nn.Module):
    """A quantiser that costs nothing: z_q = z_e, codes 0, zero losses (the floor)."""

    def __init__(self, quantize: VectorQuantizer) -> None:
        super().__init__()
        self.inner = quantize

    def forward(self, z: torch.Tensor, generator: Any = None) -> Quantized:
        zero = torch.zeros(z.shape[0])
        codes = torch.zeros(self.inner.code_shape(z), dtype=torch.long)
        return Quantized(z, codes, zero, zero, torch.zeros(self.inner.codebook_size))

    def loss(self, q: Quantized) -> torch.Tensor:
        return q.codebook


def cpu_ms(call: Any, n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        call()
    return (time.process_time() - start) / n * 1e3


def cpu_attribution(work: Path, x_u8: torch.Tensor, rounds: int, steps: int) -> dict[str, Any]:
    """CPU ms per step of the step and of the step with a free quantiser, taking turns;
    CPU ms of the nearest-code search alone on the step's z_e."""
    full, _ = build_step(work / "full", wrap=False)
    free, _ = build_step(work / "free", wrap=False)
    model = cast(VQVAE, free.objective.model)  # type: ignore[union-attr]
    model.quantize = FreeQuantizer(model.quantize)  # type: ignore[assignment]
    calls = {
        "step": lambda: full(to_float(x_u8), None, 5),
        "step, free quantiser": lambda: free(to_float(x_u8), None, 5),
    }
    for call in calls.values():
        call()
    values: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            values[name].append(cpu_ms(call, steps))
    vq = cast(VQVAE, full.objective.model)  # type: ignore[union-attr]
    quantize = vq.quantize
    with torch.no_grad():
        rows = quantize.rows(vq.pre_quantize(to_float(x_u8)))
        values["nearest-code search"] = [cpu_ms(lambda: quantize.nearest(rows), 50)]
    return {k: [round(v, 2) for v in vs] for k, vs in values.items()}


def run(step: Step, x_u8: torch.Tensor, steps: int) -> Any:
    for i in range(3):
        step(to_float(x_u8), None, i)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            step(to_float(x_u8), None, 3 + i)
    return prof


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3, help="CPU-time rounds")
    parser.add_argument("--name", default="vq_profile")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    info = machine()
    with tempfile.TemporaryDirectory() as tmp:
        step, x = build_step(Path(tmp))
        prof = run(step, x, args.steps)
        cpu = cpu_attribution(Path(tmp), x, args.rounds, args.steps)
    events = prof.key_averages()
    ranges = {e.key: e.cpu_time_total / 1e3 / args.steps for e in events if e.key in RANGES}
    ops = [
        {"op": e.key, "calls": e.count // args.steps, "self_ms": e.self_cpu_time_total / 1e3}
        for e in events
        if e.key not in RANGES
    ]
    for o in ops:
        o["self_ms"] = round(o["self_ms"] / args.steps, 3)
    ops.sort(key=lambda o: -o["self_ms"])
    total = sum(o["self_ms"] for o in ops)
    result = {
        "machine": info,
        "steps": args.steps,
        "step_ms": round(total, 2),
        "ranges_ms": {k: round(v, 2) for k, v in ranges.items()},
        "cpu_ms_per_step": cpu,
        "top_ops": ops[: args.top],
        "all_ops": ops,
    }
    table = [["operator (self CPU time per step)", "ms", "share", "calls per step"]]
    table += [
        [o["op"], f"{o['self_ms']:.2f}", f"{100 * o['self_ms'] / total:.1f}%", str(o["calls"])]
        for o in ops[: args.top]
    ]
    table.append(["total", f"{total:.2f}", "100%", ""])
    notes = [
        f"families.py's VQ-VAE step (batch 128, 28x28, conv 32-64, 7x7x8 codes, 256 codes, "
        f"fp32, one thread): {args.steps} steps profiled after 3 warm-up steps; times per "
        "step. The profiler's times are wall times: on a loaded machine they include "
        f"time-slicing (load average {info.get('load_average_1min', '?')} at the start).",
        "Forward ranges (inclusive CPU time per step): "
        + "; ".join(
            f"{k.removeprefix('vq.')} {v:.2f} ms ({100 * v / total:.1f}%)"
            for k, v in ranges.items()
        )
        + " (the objective's range holds the encoder, quantiser and decoder ranges).",
        cpu_note(cpu, args.steps),
    ]
    md = write_results(args.name, result, table, notes)
    print(md.read_text())
    return 0


def cpu_note(cpu: dict[str, list[float]], steps: int) -> str:
    step = statistics.median(cpu["step"])
    free = statistics.median(cpu["step, free quantiser"])
    search = cpu["nearest-code search"][0]
    return (
        f"Process CPU time per step (median of {len(cpu['step'])} rounds of {steps} steps, "
        f"taking turns): the step {step:.1f} ms; the same step with a quantiser that costs "
        f"nothing {free:.1f} ms, so the quantiser's whole cost (forward, backward, its "
        f"codebook's gradient and update) is {step - free:.1f} ms, "
        f"{100 * (step - free) / step:.1f}% of the step; the nearest-code search alone "
        f"(cdist + argmin) {search:.2f} ms. Per round: step {cpu['step']}, free quantiser "
        f"{cpu['step, free quantiser']}."
    )


if __name__ == "__main__":
    raise SystemExit(main())
