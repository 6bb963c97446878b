"""Where the time of diffusers_recipe.py's step pairs goes: torch.profiler over one step
pair of the recipe as intended and one of vaekit's autoencoderkl, on one thread.

    python benchmarks/recipe_profile.py [--preset kl-f8-128] [--size 64] [--batch 4]

The sides are diffusers_recipe.py's own (same architecture, losses, optimizer, input);
each is warmed up by one pair, then one pair is profiled (CPU activities, no shapes or
stacks: the profiler's own overhead stays small). Per side: the operators with the most
self CPU time, and the share of the pair's time in a few families of operators
(convolutions forward and backward, normalisation, attention and matmuls, elementwise and
copies, the optimizers). Writes benchmarks/results/recipe_profile_<preset>_<size>.json
and .md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import diffusers_recipe as recipe  # noqa: E402
from common import machine, write_results  # noqa: E402

# families of aten operators, by a part of their name (the first that matches)
FAMILIES = (
    ("convolution backward", ("convolution_backward",)),
    ("convolution forward", ("conv2d", "convolution", "mkldnn_convolution")),
    ("group/batch norm", ("group_norm", "batch_norm")),
    ("matmul / attention", ("mm", "bmm", "addmm", "matmul", "attention", "linear")),
    ("optimizer", ("adam", "_foreach", "lerp", "fused")),
    ("copies / layout", ("copy_", "contiguous", "clone", "to_copy", "_to_copy", "cat")),
)


def family(name: str) -> str:
    for label, parts in FAMILIES:
        if any(part in name for part in parts):
            return label
    return "other (elementwise, reductions, ...)"


def profile_pair(pair: Any, batch: torch.Tensor) -> tuple[list[dict[str, Any]], float]:
    """(per operator: name, calls, self CPU ms; sorted) and the pair's total self CPU ms."""
    pair(batch)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        pair(batch)
    ops = [
        {"op": e.key, "calls": e.count, "self_cpu_ms": e.self_cpu_time_total / 1e3}
        for e in prof.key_averages()
    ]
    ops.sort(key=lambda o: -o["self_cpu_ms"])
    return ops, sum(o["self_cpu_ms"] for o in ops)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="kl-f8-128")
    parser.add_argument("--size", type=int, default=64, choices=(64, 128, 256))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--top", type=int, default=12, help="operators listed per side")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    recipe.configure(args.size, args.preset, args.batch)
    g = torch.Generator().manual_seed(0)
    x_u8 = torch.randint(0, 256, (args.batch, 3, args.size, args.size), generator=g).byte()
    sides = {
        "recipe fp32, as intended": (
            recipe.RecipeStep("fp32", True),
            recipe.to_float(x_u8) * 2 - 1,
        ),
        "vaekit autoencoderkl fp32": (recipe.VaekitStep(recipe.AUTOENCODERKL, "fp32"), x_u8),
    }
    info = machine()
    result: dict[str, Any] = {"machine": info, "preset": args.preset, "size": args.size}
    result["batch"], result["sides"] = args.batch, {}
    families: dict[str, dict[str, float]] = {}
    for name, (pair, batch) in sides.items():
        ops, total = profile_pair(pair, batch)
        share: dict[str, float] = {}
        for o in ops:
            share[family(o["op"])] = share.get(family(o["op"]), 0.0) + o["self_cpu_ms"]
        families[name] = share
        result["sides"][name] = {"total_self_cpu_ms": total, "families_ms": share}
        result["sides"][name]["top_ops"] = ops[: args.top]
        print(f"{name}: {total:.0f} ms", file=sys.stderr, flush=True)
    names = list(sides)
    labels = [label for label, _ in FAMILIES] + ["other (elementwise, reductions, ...)"]
    table = [["self CPU ms, one step pair", *names]]
    for label in labels:
        table.append([label, *(f"{families[n].get(label, 0.0):,.0f}" for n in names)])
    table.append(["total", *(f"{result['sides'][n]['total_self_cpu_ms']:,.0f}" for n in names)])
    notes = [
        f"{args.preset}'s architecture at {args.size}x{args.size}, batch {args.batch}, one "
        "thread, fp32; one step pair per side after a warm-up pair (the recipe: generator "
        "step + discriminator step; vaekit: two steps, each updating the VAE and the "
        "discriminator). torch.profiler, CPU activities; self CPU time summed by operator "
        "family (the JSON lists each side's top operators).",
    ]
    for name in names:
        top = result["sides"][name]["top_ops"][:6]
        notes.append(
            f"Top operators, {name}: "
            + "; ".join(f"{o['op']} {o['self_cpu_ms']:,.0f} ms ({o['calls']} calls)" for o in top)
            + "."
        )
    write_results(f"recipe_profile_{args.preset}_{args.size}", result, table, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
