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
    parser.add_argument("--resummarise", action="store_true", help="rewrite the table from JSON")
    args = parser.parse_args(argv)
    if args.resummarise:
        return resummarise(f"recipe_profile_{args.preset}_{args.size}", args.batch)
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
    for name, (pair, batch) in sides.items():
        ops, total = profile_pair(pair, batch)
        share: dict[str, float] = {}
        for o in ops:
            share[family(o["op"])] = share.get(family(o["op"]), 0.0) + o["self_cpu_ms"]
        result["sides"][name] = {"total_self_cpu_ms": total, "families_ms": share}
        result["sides"][name]["top_ops"] = ops[: args.top]
        print(f"{name}: {total:.0f} ms", file=sys.stderr, flush=True)
    name = f"recipe_profile_{args.preset}_{args.size}"
    write_results(name, result, *render(result, args.batch))
    return 0


def render(result: dict[str, Any], batch: int) -> tuple[list[list[str]], list[str]]:
    """The table (ms and share of the pair per family, each side) and the notes."""
    names = list(result["sides"])
    labels = [label for label, _ in FAMILIES] + ["other (elementwise, reductions, ...)"]
    head = ["operator family, one step pair"]
    head += [f"{n}: {unit}" for n in names for unit in ("ms", "share")]
    table = [head]
    for label in [*labels, "total"]:
        row = [label]
        for n in names:
            side = result["sides"][n]
            total = side["total_self_cpu_ms"]
            ms = total if label == "total" else side["families_ms"].get(label, 0.0)
            row += [f"{ms:,.0f}", f"{100 * ms / total:.1f}%"]
        table.append(row)
    notes = [
        f"{result['preset']}'s architecture at {result['size']}x{result['size']}, batch "
        f"{batch}, one thread, fp32; one step pair per side after a warm-up pair (the "
        "recipe: generator step + discriminator step; vaekit: two steps, each updating the "
        "VAE and the discriminator). torch.profiler, CPU activities, self time summed by "
        "operator family. The profiler's times are each operator's wall time: on a loaded "
        "machine they include time-slicing (load average "
        f"{result['machine'].get('load_average_1min', '?')} at the start), so read the "
        "shares; the step's CPU cost is diffusers_recipe.py's.",
    ]
    for n in names:
        top = result["sides"][n]["top_ops"][:6]
        notes.append(
            f"Top operators, {n}: "
            + "; ".join(f"{o['op']} {o['self_cpu_ms']:,.0f} ms ({o['calls']} calls)" for o in top)
            + "."
        )
    return table, notes


def resummarise(name: str, batch: int) -> int:
    """The table and notes again from results/NAME.json (no profiling)."""
    import json

    from common import RESULTS

    result = json.loads((RESULTS / f"{name}.json").read_text())
    write_results(name, result, *render(result, result.get("batch", batch)))
    print((RESULTS / f"{name}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
