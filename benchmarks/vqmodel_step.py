"""vaekit's VQ training step (the vq-f8-128 preset) against diffusers' VQModel trained by a
plain diffusers-style step, the same model from the same weights, taking turns in one run.

    python benchmarks/vqmodel_step.py [--size 64|128|256] [--batch 4] [--rounds 5]
        [--threads 1] [--perceptual both|on|off] [--precision fp32|bf16|both] [--clock cpu]

The model is vq-f8-128's: diffusers' VQModel layout (4 levels of 2 ResNet blocks, 64-128-
128-128 channels, attention in the middle, 4 x H/8 x W/8 latent, 1,024 codes of 4 values;
src/vaekit/diffusers/vqmodel.py), 6.9M parameters. vaekit builds it from the preset by the
Trainer's own `build_model`; diffusers' `VQModel` is built from the config that
`vaekit export --format diffusers` writes for it and loads the same weights, so both sides
start from identical weights (checked before anything is timed: the weights, the two
encoders' z_e, the first batch's codes and the decoders' outputs; see `same_start`).

The reference step is the generator step of diffusers' examples/vqgan/train_vqgan.py,
written plainly: `fmap, commit_loss = model(pixel_values, return_dict=False)`, an L1
reconstruction loss (`F.l1_loss`, the script's default), plus `commit_loss` (VQModel's
quantiser: codebook and commitment terms, beta 0.25), plus, with the perceptual term on,
the LPIPS distance; `loss.backward()`, AdamW (lr 1e-4, no weight decay: the preset's), the
cosine schedule with 500 warm-up steps, `zero_grad(set_to_none=True)`. Images in [-1, 1],
made contiguous float by the collate function beforehand, as the script's loader does.
bf16 is the script's `--mixed_precision bf16` under accelerate: autocast over fp32 weights.

vaekit's side is `Step` + `Objective` as the Trainer builds them (build_model, Step,
Objective, the perceptual term) on the preset: a Laplace likelihood (summed L1), the
codebook + 12 x commitment terms, LPIPS x 49,152 when on; the preset's AdamW (vaekit's
default `optim.fused`, where the reference has torch's default AdamW) and schedule; its
gradient norm and non-finite guard every step; `train.precision` fp32 or bf16 (autocast;
the quantiser's distances and losses stay float32). Two vaekit sides:
  - "as VQModel": model.ema_decay 0 and model.restart_dead 0, so its codebook learns by
    its loss exactly as VQModel's does (the same work as the reference);
  - "preset": the preset as it is, with its EMA codebook (decay 0.99) and dead-code
    restarts, which VQModel has not (more work: the moving averages every step).
The PatchGAN is off on every side: the preset turns it on at step 10,000 and
train_vqgan.py alternates generator and discriminator steps; only the generator/VAE
step is timed. Loss weights differ in scale (vaekit sums per example, the script means);
the operations are the same. LPIPS is vaekit's `evaluation.perceptual.LPIPS` (the lpips
package's VGG16 layout) at seeded random weights on both sides (VGG's weights cannot be
downloaded here; the compute is the same); train_vqgan.py's own perceptual term is a timm
network's features, so LPIPS stands in for it on both sides alike.

All sides live in one process at a fixed thread count; each takes one warm-up step, then
they take turns each round (the order rotating), each timing one step on the same batch.
samples/s per side is the median over rounds; each ratio is taken within a round and its
median reported. With `--clock cpu` (one thread) the clock is the process's CPU time,
which time-slicing by other processes on a shared machine does not inflate.
Writes benchmarks/results/vqmodel_step_<size>[_<threads>t][_bf16].json and .md.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F

import vaekit
from vaekit.data import Dataset
from vaekit.data.core.dataset import to_float
from vaekit.diffusers.vqmodel import diffusers_model, to_diffusers_keys
from vaekit.evaluation.perceptual import build_perceptual, from_config
from vaekit.models.vqvae import VQVAE
from vaekit.training.distributed import Dist
from vaekit.training.objective import Noise, Objective
from vaekit.training.preflight import build_model
from vaekit.training.step import Step

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_results  # noqa: E402

PRESET = "vq-f8-128"
LR, WARMUP = 1e-4, 500  # the preset's optim.lr and warmup_steps
AS_VQMODEL = {"model.ema_decay": 0.0, "model.restart_dead": 0.0}
NO_GAN = {"loss.adversarial_weight": 0.0}  # off before step 10,000 in the preset anyway
CLOCK: Callable[[], float] = time.perf_counter


def overrides(size: int, batch: int, precision: str, perceptual: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        **NO_GAN,
        "data.image_size": size,
        "train.batch_size": batch,
        "train.precision": precision,
        "train.device": "cpu",
    }
    if perceptual:
        out |= {
            "loss.perceptual_backbone_weights": "random",
            "loss.perceptual_lin_weights": "random",
        }
    else:
        out["loss.perceptual"] = "none"
    return out


class VaekitSide:
    """vaekit's step as the Trainer builds it (build_model, Step, Objective, perceptual)."""

    def __init__(self, settings: dict[str, Any], x_u8: torch.Tensor, weights: dict) -> None:
        config = vaekit.load_config(PRESET, settings)
        device = torch.device("cpu")
        model = build_model(None, config, Dataset("bench", x_u8, x_u8), device, None)
        missing, _ = model.load_state_dict(weights, strict=False)  # EMA state: dropped or kept
        assert not missing, missing
        precision = config.train.precision
        self.step = Step(model, config, device, precision, 10**6, Dist(), None)
        perceptual = from_config(config.loss, device, seed=config.train.seed)
        noise = Noise(torch.Generator().manual_seed(0))
        self.step.attach(Objective(model, config.loss, noise, perceptual, None))
        self.model, self.count = model, 0

    def __call__(self, x_u8: torch.Tensor) -> None:
        record = self.step(to_float(x_u8), None, self.count)
        assert record is not None and record[-1] == 0.0  # not skipped
        self.count += 1


class LPIPSStandIn(torch.nn.Module):
    """The perceptual term on [-1, 1] images: vaekit's LPIPS (see the docstring), (B,)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = build_perceptual("lpips-vgg", "cpu", "random", "random")

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.net((a + 1) / 2, (b + 1) / 2)


class DiffusersSide:
    """train_vqgan.py's generator step on diffusers' VQModel, written plainly (docstring)."""

    def __init__(self, config: dict, weights: dict, precision: str, perceptual: bool) -> None:
        from diffusers import VQModel
        from diffusers.optimization import get_scheduler

        model = VQModel.from_config(config)
        model.load_state_dict(weights)
        model.train()
        self.model = model
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
        self.lr_scheduler = get_scheduler(
            "cosine", optimizer=self.optimizer, num_warmup_steps=WARMUP, num_training_steps=10**6
        )
        self.perceptual = LPIPSStandIn().eval() if perceptual else None
        self.bf16 = precision == "bf16"

    def __call__(self, pixel_values: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            fmap, commit_loss = self.model(pixel_values, return_dict=False)
            loss = F.l1_loss(pixel_values, fmap)
            loss = loss + commit_loss
            if self.perceptual is not None:
                loss = loss + self.perceptual(fmap, pixel_values).mean()
        loss.backward()
        self.optimizer.step()
        self.lr_scheduler.step()
        assert torch.isfinite(loss)


def same_start(vaekit_side: VaekitSide, ref: DiffusersSide, x_u8: torch.Tensor) -> dict:
    """Before any step: whether the weights are identical; the largest difference between
    the two encoders' z_e; the share of the first batch's codes that agree and, where they
    do not, how far apart the two picks' distances to z_e are (near-ties: at the start the
    1,024 codes all lie within 1/1024 of 0); the largest difference between the decoders'
    outputs (in [0, 1] units) on the same z_q."""
    model, vq = cast(VQVAE, vaekit_side.model), ref.model
    mine = to_diffusers_keys(model.state_dict())
    same = all(torch.equal(mine[k], v) for k, v in vq.state_dict().items())
    with torch.no_grad():
        model.eval()
        x = to_float(x_u8)
        z_e = model.pre_quantize(x)
        q = model.quantize(z_e)
        recon = model.decoder(q.z_q)  # the location, unclamped
        model.train()
        h = vq.encode(2 * x - 1).latents
        _, _, (_, _, ref_codes) = vq.quantize(h)
        ref_recon = (vq.decode(q.z_q, force_not_quantize=True).sample + 1) / 2
        codes, ref_codes = q.codes.flatten(), ref_codes.flatten()
        rows, weight = model.quantize.rows(h), vq.quantize.embedding.weight
        gap = ((rows - weight[codes]).norm(dim=1) - (rows - weight[ref_codes]).norm(dim=1)).abs()
    return {
        "weights_identical": same,
        "max_abs_z_e_difference": float((z_e - h).abs().max()),
        "codes_identical_share": float((codes == ref_codes).double().mean()),
        "max_distance_gap_where_codes_differ": float(gap.max()),
        "max_abs_decoder_difference_same_z_q": float((recon - ref_recon).abs().max()),
    }


def build_sides(args: argparse.Namespace, x_u8: torch.Tensor, precision: str) -> tuple:
    """name -> (step, input kind), and the same-start check per perceptual setting."""
    torch.manual_seed(0)
    base = vaekit.load_config(PRESET, overrides(args.size, args.batch, "fp32", False))
    first = build_model(None, base, Dataset("bench", x_u8, x_u8), torch.device("cpu"), None)
    weights = copy.deepcopy(first.state_dict())
    config, state = diffusers_model(first)
    sides: dict[str, tuple[Callable[[torch.Tensor], None], str]] = {}
    checks = {}
    for on in {"both": (False, True), "on": (True,), "off": (False,)}[args.perceptual]:
        tag = f"{precision}, LPIPS {'on' if on else 'off'}"
        ref = DiffusersSide(config, state, precision, on)
        matched = VaekitSide(overrides(args.size, args.batch, precision, on) | AS_VQMODEL,
                             x_u8, weights)  # fmt: skip
        checks[tag] = same_start(matched, ref, x_u8)
        sides[f"diffusers VQModel ({tag})"] = (ref, "pm1")
        sides[f"vaekit as VQModel ({tag})"] = (matched, "u8")
        preset = VaekitSide(overrides(args.size, args.batch, precision, on), x_u8, weights)
        sides[f"vaekit preset, EMA + restarts ({tag})"] = (preset, "u8")
    return sides, checks, sum(p.numel() for p in first.parameters())


def measure(args: argparse.Namespace, precision: str) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    x_u8 = torch.randint(0, 256, (args.batch, 3, args.size, args.size), generator=g,
                         dtype=torch.uint8)  # fmt: skip
    inputs = {"u8": x_u8, "pm1": (to_float(x_u8) * 2 - 1).contiguous()}
    sides, checks, params = build_sides(args, x_u8, precision)
    for name, (step, kind) in sides.items():  # warm-up
        step(inputs[kind])
        print(f"warm: {name}", file=sys.stderr, flush=True)
    names, values, load = list(sides), {n: [] for n in sides}, []  # type: ignore[var-annotated]
    for r in range(args.rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            step, kind = sides[name]
            load.append(os.getloadavg()[0])
            start = CLOCK()
            step(inputs[kind])
            values[name].append(args.batch / (CLOCK() - start))
            print(f"round {r + 1}: {name:48} {values[name][-1]:7.3f}", file=sys.stderr, flush=True)
    return {"values": values, "load": load, "checks": checks, "parameters": params}


def within_rounds(vs: list[float], ref: list[float]) -> float:
    return round(statistics.median([a / b for a, b in zip(vs, ref, strict=True)]), 3)


def summarise(m: dict[str, Any], unit: str) -> tuple[dict[str, Any], list[list[str]]]:
    sides, rows = {}, []
    for name, vs in m["values"].items():
        tag = name[name.index("(") :]
        ref = m["values"][f"diffusers VQModel {tag}"]
        s = sides[name] = {
            "samples_per_s": [round(v, 4) for v in vs],
            "samples_per_s_median": round(statistics.median(vs), 4),
            "x_diffusers_same_round": [round(a / b, 3) for a, b in zip(vs, ref, strict=True)],
            "x_diffusers_median": within_rounds(vs, ref),
        }
        rows.append(
            [
                name,
                f"{s['samples_per_s_median']:.3f}",
                f"{min(vs):.3f}-{max(vs):.3f}",
                f"{s['x_diffusers_median']:.2f}x",
                ", ".join(f"{r:.2f}" for r in s["x_diffusers_same_round"]),
            ]
        )
    header = ["side", f"{unit} (median)", "range over rounds", "x diffusers (median)",
              "x diffusers per round"]  # fmt: skip
    return sides, [header, *rows]


def notes_for(run: dict[str, Any], m: dict[str, Any]) -> list[str]:
    """The results file's notes: the setting, the sides, the same-start check."""
    load = [min(m["load"]), max(m["load"])]
    return [
        f"{run['size']}x{run['size']} RGB, batch {run['batch']}, {run['precision']}, "
        f"{m['parameters']:,} parameters (vq-f8-128's VQModel layout), PatchGAN off on every "
        f"side. {run['rounds']} rounds, the sides taking turns in one process "
        f"({run['threads']} torch thread(s)), each timing one step on the same batch after a "
        "warm-up step; ratios are taken within a round. "
        + ("Clock: process CPU time. " if run["clock"] == "cpu" else "Clock: wall time. ")
        + f"Load average (1 min) during the run: {load[0]:.2f} to {load[1]:.2f}.",
        "diffusers VQModel: train_vqgan.py's generator step written plainly (L1 + commit_loss "
        "[+ LPIPS], AdamW, cosine schedule). vaekit as VQModel: the preset's Step + Objective "
        "with model.ema_decay 0, model.restart_dead 0 (codebook learned by its loss, as "
        "VQModel's: the same work). vaekit preset: with its EMA codebook and dead-code "
        "restarts (more work than VQModel does). LPIPS: vaekit's LPIPS-VGG at random weights "
        "on both sides (see the script's docstring).",
        "Same start (before any step, per setting): "
        + "; ".join(
            f"{tag}: weights identical {c['weights_identical']}, z_e within "
            f"{c['max_abs_z_e_difference']:.1e}, {100 * c['codes_identical_share']:.1f}% of "
            f"the codes identical (where not, the two codes' distances to z_e within "
            f"{c['max_distance_gap_where_codes_differ']:.1e}: near-ties of the codebook at "
            f"its start), decoders within {c['max_abs_decoder_difference_same_z_q']:.1e} on "
            "the same z_q"
            for tag, c in m["checks"].items()
        )
        + ".",
    ]


def recheck(name: str) -> int:
    """results/NAME's same-start check computed again (the same seed, weights and batch as
    the run's start) and its tables rewritten; the timings stay the run's."""
    import json

    from common import RESULTS

    result = json.loads((RESULTS / f"{name}.json").read_text())
    torch.set_num_threads(result["threads"])
    torch.set_flush_denormal(True)
    sides = result["sides"]
    on = sorted({n[n.index("LPIPS ") + 6 : -1] for n in sides})  # "off", "on"
    args = argparse.Namespace(size=result["size"], batch=result["batch"])
    args.perceptual = "both" if len(on) == 2 else on[0]
    g = torch.Generator().manual_seed(0)
    x_u8 = torch.randint(0, 256, (args.batch, 3, args.size, args.size), generator=g,
                         dtype=torch.uint8)  # fmt: skip
    _, checks, params = build_sides(args, x_u8, result["precision"])
    m = {"values": {n: s["samples_per_s"] for n, s in sides.items()}, "checks": checks}
    m |= {"load": result["load_average_1min"], "parameters": params}
    unit = "samples/s" if result["clock"] == "wall" else "samples per CPU-s"
    result["sides"], table = summarise(m, unit)
    result["same_start"] = checks
    result["notes"] = notes_for(result, m) + [
        "The same-start check was computed again after the run by `--recheck` (the same "
        "seed, weights and batch); the timings are the run's."
    ]
    md = write_results(name, result, table, result["notes"])
    print(md.read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, choices=(64, 128, 256))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--perceptual", default="both", choices=("both", "on", "off"))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--clock", default="wall", choices=("wall", "cpu"))
    parser.add_argument("--name", default="")
    parser.add_argument(
        "--recheck", action="store_true", help="redo results/NAME's same-start check only"
    )
    args = parser.parse_args(argv)
    global CLOCK
    if args.clock == "cpu":
        if args.threads != 1:
            raise SystemExit("--clock cpu needs --threads 1 (CPU time sums the threads')")
        CLOCK = time.process_time
    threads = "" if args.threads == 1 else f"_{args.threads}t"
    bf16 = "_bf16" if args.precision == "bf16" else ""
    name = args.name or f"vqmodel_step_{args.size}{threads}{bf16}"
    if args.recheck:
        return recheck(name)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # vaekit's Trainer does this for the process: both sides
    start = time.perf_counter()
    info = machine()
    m = measure(args, args.precision)
    unit = "samples/s" if args.clock == "wall" else "samples per CPU-s"
    sides, table = summarise(m, unit)
    load = [min(m["load"]), max(m["load"])]
    run = vars(args)
    result = {
        "machine": info,
        "preset": PRESET,
        "size": args.size,
        "batch": args.batch,
        "precision": args.precision,
        "threads": args.threads,
        "rounds": args.rounds,
        "clock": args.clock,
        "parameters": m["parameters"],
        "same_start": m["checks"],
        "sides": sides,
        "load_average_1min": m["load"],
        "load_average_range": load,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    result["notes"] = notes = notes_for(run, m)
    md = write_results(name, result, table, notes)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
