"""How fast can a batch-128 step of the 784-400-20 MLP VAE go on this machine?

    python benchmarks/step_floor.py [--rounds 5] [--steps 200] [--threads 0]

The `mnist-mlp` step (batch 128, Fashion-MNIST, bf16 autocast), from the whole trainer
down to its matmuls, each as samples/s, alternating in rounds in one process:
- `vaekit train`: the preset's training loop (`samples_per_s` of a one-epoch run);
- bare eager step: the same model, objective and fused Adam, without the trainer's
  guard, metrics, schedule and batch gathering;
- compiled step: the bare step with forward + backward under `torch.compile` (its
  compile time is reported apart and not counted); drawing the noise from a
  torch.Generator breaks the graph, so it is also timed drawing from the global RNG;
- matmuls only: the 14 matrix products of a step (forward, input and weight
  gradients) on random data of the same shapes, in bf16.
It answers whether 4x the reference loop (benchmarks/mlp_speed.py) fits this machine.

Writes benchmarks/results/step_floor.json and step_floor.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median, write_results  # noqa: E402
from mlp_speed import vaekit_epochs  # noqa: E402

import vaekit  # noqa: E402
from vaekit.data import load_data  # noqa: E402
from vaekit.training import objective  # noqa: E402
from vaekit.training.optim import make_optimizer  # noqa: E402

BATCH = 128


def matmul_step(dims: list[int]) -> Callable[[], None]:
    """The products of one step of an MLP with these layer widths: y = a W^T, its input
    gradient (not for the first layer, whose input is data) and its weight gradient."""
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        a = torch.randn(BATCH, fan_in, dtype=torch.bfloat16)
        w = torch.randn(fan_out, fan_in, dtype=torch.bfloat16)
        g = torch.randn(BATCH, fan_out, dtype=torch.bfloat16)
        layers.append((i > 0, a, w, g))

    def run() -> None:
        for needs_input_grad, a, w, g in layers:
            a @ w.t()
            if needs_input_grad:
                g @ w
            g.t() @ a

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200, help="steps per timing")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as vaekit.train does on the CPU
    info = machine()
    cfg = vaekit.load_config("mnist-mlp", {"data.name": "fashion-mnist"})
    data = load_data(cfg.data, progress=False)
    out = Path(tempfile.mkdtemp(prefix="vaekit-step-floor-"))
    x_all = data.x_train.float().div_(255)
    batches = [x_all[i : i + BATCH] for i in range(0, x_all.shape[0] - BATCH + 1, BATCH)]

    torch.manual_seed(0)
    model = vaekit.VAE.from_config(cfg.model, data.shape)
    optimizer = make_optimizer(model, cfg, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)

    def forward_backward(rng: torch.Generator | None) -> Callable[[torch.Tensor], torch.Tensor]:
        """The step's forward and backward, its noise drawn from `rng` (None: global)."""

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                terms = objective.compute(model, x, None, cfg.loss, 0, objective.Noise(rng))
            terms.loss.backward()
            return terms.loss.detach()

        return run

    def stepper(fwd_bwd: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            for i in range(args.steps):
                optimizer.zero_grad(set_to_none=True)
                fwd_bwd(batches[i % len(batches)])
                optimizer.step()

        return run

    eager = forward_backward(generator)
    compiled = torch.compile(forward_backward(generator))
    compiled_global = torch.compile(forward_backward(None))
    compile_s = []
    for fn in (compiled, compiled_global):
        started = time.perf_counter()
        stepper(fn)()  # compiles once: every batch has 128 images
        compile_s.append(time.perf_counter() - started)
    matmuls = matmul_step([784, 400, 40])  # encoder: 784 -> 400 -> (mu, logvar)
    decoder = matmul_step([20, 400, 784])

    def matmuls_only() -> None:
        for _ in range(args.steps):
            matmuls()
            decoder()

    def timed(run: Callable[[], None]) -> float:
        started = time.perf_counter()
        run()
        return args.steps * BATCH / (time.perf_counter() - started)

    def trainer() -> float:
        return float(vaekit_epochs(data, out, "bf16", threads=args.threads)[-1]["samples_per_s"])

    loops: dict[str, Callable[[], float]] = {
        "vaekit train (mnist-mlp, bf16)": trainer,
        "bare eager step": lambda: timed(stepper(eager)),
        "compiled step (torch.compile)": lambda: timed(stepper(compiled)),
        "compiled step, global RNG": lambda: timed(stepper(compiled_global)),
        "matmuls only": lambda: timed(matmuls_only),
    }
    names = list(loops)
    speeds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            speeds[name].append(loops[name]())
            print(f"round {r + 1}: {name}: {speeds[name][-1]:,.0f} samples/s", flush=True)

    result = {
        "machine": info,
        "rounds": args.rounds,
        "steps": args.steps,
        "compile_seconds": [round(c, 1) for c in compile_s],
        "samples_per_s": {k: [round(v) for v in vs] for k, vs in speeds.items()},
        "samples_per_s_median": {k: round(median(vs)) for k, vs in speeds.items()},
    }
    table = [["batch 128, 784-400-20, bf16", "samples/s (median)", "us per step"]]
    for name in names:
        rate = median(speeds[name])
        table.append([name, f"{rate:,.0f}", f"{BATCH / rate * 1e6:,.0f}"])
    notes = [
        f"Median over {args.rounds} rounds, in rotating order, in one process; "
        f"{args.steps} steps per timing (the trainer: one epoch). torch.compile took "
        f"{compile_s[0]:.1f} s and {compile_s[1]:.1f} s before their first steps (not "
        "counted)."
    ]
    md = write_results("step_floor", result, table, notes)
    print(md.read_text())


if __name__ == "__main__":
    main()
