"""vaekit's training step against diffusers' AutoencoderKL recipe, alternating in one run.

    python benchmarks/diffusers_recipe.py [--rounds 3] [--threads 1] [--no-bf16]
    python benchmarks/diffusers_recipe.py --preset kl-f8-128 --size 64|128|256
        [--batch 4] [--sides intended] [--peak-size 1024]

By default 128 px and Stable Diffusion's VAE at a quarter of its width (ARCH below);
`--preset kl-f8-128` takes the architecture of that preset instead (its model.channels,
blocks_per_level and latent_channels), and `--size` the image side, so the recipe and
vaekit are compared at the sizes a latent-diffusion user trains at (results:
diffusers_recipe_<preset>_<size>.json/.md). `--batch` sets the batch (8 by default);
`--sides intended` times only the recipe as intended and vaekit's autoencoderkl (the
comparison the targets name) where the four sides take too long.

The reference is the training loop of diffusers'
examples/research_projects/autoencoderkl/train_autoencoderkl.py, written out below with
diffusers' `AutoencoderKL` and torch's own modules, one process, no gradient
accumulation, after `disc_start` (the adversarial term on), where the script alternates:
on even steps the generator step -- `vae.encode(x).latent_dist.sample()`,
`vae.decode(z).sample`, an L2 reconstruction (the script's default `--rec_loss`) plus
0.5 x LPIPS-VGG computed *under torch.no_grad()* as the script writes it, 1e-6 x KL, the
generator term -mean D(reconstruction) times the adaptive weight (the ratio of the two
terms' gradient norms at `decoder.conv_out.weight`, from two `autograd.grad` calls),
AdamW (lr 4.5e-6, weight decay 1e-2), gradient clipping at 1.0, the constant schedule;
on odd steps the encode/decode again and the discriminator's hinge loss on real images
and reconstructions -- which the script as written never back-propagates nor steps (its
discriminator never trains). So the unit timed is a pair of steps (two batches) on every
side. A second reference ("as intended") computes LPIPS with its gradient and trains the
discriminator on its steps (hinge loss on detached reconstructions, backward, AdamW
step), which is what the recipe means and what vaekit does.

Precision: fp32, the script's on a CPU by default; with --mixed_precision bf16 the script
casts the VAE, LPIPS and discriminator weights to bf16 (`vae.to(dtype=weight_dtype)`) and
calls `encode`/`decode` directly, so its bf16 is pure-bf16 weights and optimizer state,
not autocast. vaekit's bf16 is `train.precision: bf16` (autocast over fp32 weights).

Stand-ins (no torchvision here, so neither `lpips` nor taming import): LPIPS is vaekit's
`evaluation.perceptual.LPIPS` (the lpips package's VGG16 features, taps, unit
normalisation and 1x1 layers, at seeded random weights: VGG's weights cannot be
downloaded here; the compute is the same), and taming's `NLayerDiscriminator`
(n_layers 3, 64 channels, BatchNorm) is vaekit's `models.discriminator.PatchDiscriminator`,
a re-implementation of that class with torch's own layers.

vaekit's side is the same architecture through `model.arch autoencoderkl` (diffusers' own
Encoder/Decoder in vaekit's model protocol) with the same loss terms and weights (a
fixed-scale Gaussian whose -log p(x|z) is the script's summed squared error in [-1, 1]
units up to a constant; LPIPS x 0.5 per pixel; KL x 1e-6; `loss.adversarial_weight` 1 =
disc_scale x disc_factor, from step 0), batch and optimizer settings, built by the
Trainer's own `build_model`, `build_adversary`, `Step` and `Objective` (each of its steps
updates the VAE and then the discriminator on the same batch, as latent diffusion does);
and vaekit's own conv VAE with the same 4 x 16 x 16 latent at a similar parameter count,
which is what vaekit recommends on a CPU.

All sides live in one process at a fixed thread count; each is warmed up by the step
pair that counts its FLOPs (torch's FlopCounterMode, forward + backward), then they take
turns each round (the order rotating), each timing one step pair; images/s per side is
the median over rounds, each ratio is taken within a round (load shifts both alike) and
its median reported. The fraction is achieved FLOP/s over the machine's measured bf16
matmul throughput (a 4096^3 torch.matmul at the same thread count; --peak-size). Writes
benchmarks/results/diffusers_recipe.json and .md.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import vaekit
from vaekit.data import Dataset
from vaekit.data.core.dataset import to_float
from vaekit.evaluation.perceptual import build_perceptual, from_config
from vaekit.models.discriminator import build_discriminator
from vaekit.training.adversary import build_adversary
from vaekit.training.distributed import Dist
from vaekit.training.objective import Noise, Objective
from vaekit.training.preflight import build_model
from vaekit.training.step import Step

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_results  # noqa: E402

SIZE, BATCH = 128, 8
# Stable Diffusion's AutoencoderKL (4 levels, 2 blocks each, latent 4 x H/8 x W/8) at a
# quarter of its width: block_out_channels [128, 256, 512, 512] -> [32, 64, 128, 128]
ARCH = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [32, 64, 128, 128],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": SIZE,
}
# the script's defaults
LR, WEIGHT_DECAY, MAX_GRAD_NORM = 4.5e-6, 1e-2, 1.0
KL_SCALE, PERCEPTUAL_SCALE, DISC_SCALE, DISC_FACTOR = 1e-6, 0.5, 1.0, 1.0
# vaekit's objective with the same weights: the script's nll is the squared error summed
# over [-1, 1] pixels, 4x that in [0, 1] units, i.e. a Gaussian with 2 s^2 = 1/4; its
# LPIPS term is broadcast over the C x H x W pixels before the sum
OBJECTIVE = {
    "model.likelihood": "gaussian",
    "model.obs_scale": 0.125**0.5,
    "loss.beta": KL_SCALE,
    "loss.perceptual": "lpips-vgg",
    "loss.perceptual_weight": PERCEPTUAL_SCALE * 3 * SIZE * SIZE,
    "loss.perceptual_backbone_weights": "random",
    "loss.perceptual_lin_weights": "random",
    "loss.adversarial_weight": DISC_SCALE * DISC_FACTOR,
    "loss.adversarial_start": 0,  # the phase measured: after the script's disc_start
    "loss.adversarial_lr": LR,
    "optim.name": "adamw",
    "optim.lr": LR,
    "optim.weight_decay": WEIGHT_DECAY,
    "optim.grad_clip": MAX_GRAD_NORM,
    "train.batch_size": BATCH,
    "train.device": "cpu",
}
AUTOENCODERKL = {
    "model.arch": "autoencoderkl",
    "model.channels": ARCH["block_out_channels"],
    "model.blocks_per_level": ARCH["layers_per_block"],
    "model.latent_channels": ARCH["latent_channels"],
}
CONV = {  # vaekit's conv VAE: 3 stride-2 levels -> the same 4 x 16 x 16 latent
    "model.arch": "conv",
    "model.channels": [56, 112, 224],
    "model.blocks_per_level": 2,
    "model.latent_channels": 4,
}


def configure(size: int, preset: str, batch: int = BATCH) -> None:
    """The image side, the batch and, with a preset, its AutoencoderKL architecture, in the
    module's settings (ARCH, SIZE, BATCH and what derives from them) before any side is
    built."""
    global SIZE, BATCH
    SIZE, BATCH = size, batch
    OBJECTIVE["train.batch_size"] = batch
    ARCH["sample_size"] = size
    OBJECTIVE["loss.perceptual_weight"] = PERCEPTUAL_SCALE * 3 * size * size
    if preset:
        model = vaekit.load_config(preset).model
        if model.arch != "autoencoderkl":
            raise SystemExit(f"--preset {preset} is not an autoencoderkl preset")
        levels = len(model.channels)
        ARCH["block_out_channels"] = list(model.channels)
        ARCH["down_block_types"] = ["DownEncoderBlock2D"] * levels
        ARCH["up_block_types"] = ["UpDecoderBlock2D"] * levels
        ARCH["layers_per_block"] = model.blocks_per_level
        ARCH["latent_channels"] = model.latent_channels or 4
        ARCH["norm_num_groups"] = math.gcd(32, *model.channels)  # as vaekit builds it
    AUTOENCODERKL["model.channels"] = ARCH["block_out_channels"]
    AUTOENCODERKL["model.blocks_per_level"] = ARCH["layers_per_block"]
    AUTOENCODERKL["model.latent_channels"] = ARCH["latent_channels"]


class LPIPSStandIn(torch.nn.Module):
    """`lpips.LPIPS(net="vgg")`'s call as the script makes it: images in [-1, 1], the
    distance per example as (B, 1, 1, 1); computed by vaekit's LPIPS (see the docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = build_perceptual("lpips-vgg", "cpu", "random", "random")

    def forward(self, in0: torch.Tensor, in1: torch.Tensor) -> torch.Tensor:
        return self.net((in0 + 1) / 2, (in1 + 1) / 2).view(-1, 1, 1, 1)


class RecipeStep:
    """train_autoencoderkl.py's loop after disc_start, one process: a call is two steps
    (the generator step, then the discriminator's), on the same batch of images.

    `intended`: LPIPS with its gradient, and a discriminator step that trains (see the
    module's docstring); else exactly as the script writes it."""

    def __init__(self, precision: str, intended: bool = False) -> None:
        from diffusers import AutoencoderKL
        from diffusers.optimization import get_scheduler

        torch.manual_seed(0)
        vae = AutoencoderKL.from_config(ARCH)
        perceptual_loss = LPIPSStandIn().eval()
        discriminator = build_discriminator(3, 64, 3, 0, torch.device("cpu"))  # NLayerDisc.
        vae.requires_grad_(True)
        vae.train()
        discriminator.requires_grad_(True)
        discriminator.train()
        adamw = {"betas": (0.9, 0.999), "weight_decay": WEIGHT_DECAY, "eps": 1e-8}
        self.optimizer = torch.optim.AdamW(vae.parameters(), lr=LR, **adamw)
        self.disc_optimizer = torch.optim.AdamW(discriminator.parameters(), lr=LR, **adamw)
        self.lr_scheduler = get_scheduler(
            "constant", optimizer=self.optimizer, num_warmup_steps=500, num_training_steps=10**6
        )
        # --mixed_precision bf16: the script casts the weights themselves
        self.weight_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        for module in (vae, perceptual_loss, discriminator):
            module.to(dtype=self.weight_dtype)
        perceptual_loss.net.lins.float()  # vaekit's LPIPS normalises its taps in float32
        self.vae, self.perceptual_loss, self.discriminator = vae, perceptual_loss, discriminator
        self.intended = intended
        self.parameters = sum(p.numel() for p in vae.parameters())

    def __call__(self, pixel_values: torch.Tensor) -> None:
        self.step(pixel_values, 0)
        self.step(pixel_values, 1)

    def step(self, pixel_values: torch.Tensor, step: int) -> dict[str, float]:
        vae, discriminator = self.vae, self.discriminator
        targets = pixel_values.to(dtype=self.weight_dtype)
        posterior = vae.encode(targets).latent_dist
        latents = posterior.sample()
        reconstructions = vae.decode(latents).sample
        if step % 2 == 0:  # global_step >= disc_start: generator and discriminator alternate
            rec_loss = F.mse_loss(reconstructions.float(), targets.float(), reduction="none")
            with contextlib.nullcontext() if self.intended else torch.no_grad():
                p_loss = self.perceptual_loss(reconstructions, targets)
            rec_loss = rec_loss + PERCEPTUAL_SCALE * p_loss
            nll_loss = torch.sum(rec_loss) / rec_loss.shape[0]
            kl_loss = posterior.kl()
            kl_loss = torch.sum(kl_loss) / kl_loss.shape[0]
            logits_fake = discriminator(reconstructions)
            g_loss = -torch.mean(logits_fake)
            last_layer = vae.decoder.conv_out.weight
            nll_grads = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
            g_grads = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
            disc_weight = torch.norm(nll_grads) / (torch.norm(g_grads) + 1e-4)
            disc_weight = torch.clamp(disc_weight, 0.0, 1e4).detach() * DISC_SCALE
            loss = nll_loss + KL_SCALE * kl_loss + disc_weight * DISC_FACTOR * g_loss
            logs = {  # the script logs these every step
                "loss": loss.detach().mean().item(),
                "p_loss": p_loss.detach().mean().item(),
                "kl_loss": kl_loss.detach().mean().item(),
                "disc_weight": disc_weight.detach().mean().item(),
                "g_loss": g_loss.detach().mean().item(),
            }
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), MAX_GRAD_NORM)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=False)  # --set_grads_to_none is off
            return logs
        fake = reconstructions.detach() if self.intended else reconstructions
        logits_real = discriminator(targets)
        logits_fake = discriminator(fake)
        disc_loss = DISC_FACTOR * hinge_d_loss(logits_real, logits_fake)
        if self.intended:  # the script never calls backward or step here
            disc_loss.backward()
            self.disc_optimizer.step()
            self.disc_optimizer.zero_grad(set_to_none=False)
        return {
            "disc_loss": disc_loss.detach().mean().item(),
            "logits_real": logits_real.detach().mean().item(),
            "logits_fake": logits_fake.detach().mean().item(),
        }


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """taming's hinge_d_loss."""
    loss_real = torch.mean(F.relu(1.0 - logits_real))
    loss_fake = torch.mean(F.relu(1.0 + logits_fake))
    return 0.5 * (loss_real + loss_fake)


class VaekitStep:
    """vaekit's step as the Trainer builds it (build_model, build_adversary, Step,
    Objective, the perceptual term); a call is two steps, on the same batch."""

    def __init__(self, overrides: dict[str, Any], precision: str) -> None:
        config = vaekit.load_config(None, {**OBJECTIVE, **overrides, "train.precision": precision})
        x = torch.randint(0, 256, (BATCH, 3, SIZE, SIZE), dtype=torch.uint8)
        device = torch.device("cpu")
        model = build_model(None, config, Dataset("bench", x, x), device, None)
        adversary = build_adversary(config, model, device, precision, False)
        self.step = Step(model, config, device, precision, 10**6, Dist(), adversary)
        perceptual = from_config(config.loss, device, seed=config.train.seed)
        assert adversary is not None
        noise = Noise(torch.Generator().manual_seed(0))
        self.step.attach(Objective(model, config.loss, noise, perceptual, adversary.discriminator))
        self.parameters = sum(p.numel() for p in model.parameters())
        self.count = 0

    def __call__(self, x_u8: torch.Tensor) -> None:
        for _ in range(2):
            record = self.step(to_float(x_u8), None, self.count)
            assert record[-2] == 0.0 and record[-3] == 1.0  # the adversary on, not skipped
            self.count += 1


# the clock every side and the peak are timed with: wall time, or (--clock cpu) this
# process's CPU time, which time-slicing on a loaded machine does not inflate (one thread)
CLOCK = time.perf_counter


def matmul_peak(dtype: torch.dtype, n: int = 4096, repeats: int = 5) -> float:
    """FLOP/s of an n^3 torch.matmul in `dtype` (best of `repeats`: load only slows it)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = CLOCK()
        torch.matmul(a, b)
        best = min(best, CLOCK() - start)
    return 2 * n**3 / best


def pair_flops(pair: Callable[[torch.Tensor], Any], batch: torch.Tensor) -> int:
    """FLOPs of a step pair, forward and backward (torch's counter: convs, matmuls,
    attention)."""
    with FlopCounterMode(display=False) as counter:
        pair(batch)
    return int(counter.get_total_flops())


def build_sides(
    bf16: bool, only_intended: bool = False
) -> dict[str, tuple[Callable[..., Any], str]]:
    """name -> (step pair, input kind): 'pm1' float in [-1, 1] (the script's), 'u8' vaekit's;
    `only_intended`: the recipe as intended and vaekit's autoencoderkl only."""
    sides: dict[str, tuple[Callable[..., Any], str]] = {}
    for precision in ("fp32", "bf16") if bf16 else ("fp32",):
        if not only_intended:
            sides[f"recipe {precision}, as written"] = (RecipeStep(precision), "pm1")
        sides[f"recipe {precision}, as intended"] = (RecipeStep(precision, True), "pm1")
        sides[f"vaekit autoencoderkl {precision}"] = (VaekitStep(AUTOENCODERKL, precision), "u8")
        if not only_intended:
            sides[f"vaekit conv {precision}"] = (VaekitStep(CONV, precision), "u8")
    return sides


def measure(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    g = torch.Generator().manual_seed(0)
    x_u8 = torch.randint(0, 256, (BATCH, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    inputs = {"u8": x_u8, "pm1": to_float(x_u8) * 2 - 1}  # collate_fn: contiguous float
    n = args.peak_size
    peak = {"bf16": matmul_peak(torch.bfloat16, n), "fp32": matmul_peak(torch.float32, n)}
    print(f"matmul peak: {peak['bf16'] / 1e12:.2f} TFLOP/s bf16", file=sys.stderr, flush=True)
    sides = build_sides(not args.no_bf16, args.sides == "intended")
    flops, params = {}, {}
    for name, (pair, kind) in sides.items():  # the counted pair is the warm-up too
        flops[name] = pair_flops(pair, inputs[kind])
        params[name] = pair.parameters  # type: ignore[attr-defined]
    names, values, load = list(sides), {n: [] for n in sides}, []  # type: ignore[var-annotated]
    for r in range(args.rounds):
        shift = (r * 3) % len(names)
        for name in names[shift:] + names[:shift]:
            pair, kind = sides[name]
            load.append(os.getloadavg()[0])
            start = CLOCK()
            pair(inputs[kind])
            values[name].append(2 * BATCH / (CLOCK() - start))
            print(f"round {r + 1}: {name:32} {values[name][-1]:6.2f} images/s", file=sys.stderr)
    return {"peak": peak, "flops": flops, "params": params, "values": values, "load": load}


def within_rounds(vs: list[float], ref: list[float] | None, scale: float = 1.0) -> float | None:
    """The median over rounds of scale x vs / ref (None without that reference side)."""
    if ref is None:
        return None
    return round(statistics.median([scale * a / b for a, b in zip(vs, ref, strict=True)]), 3)


def summarise(m: dict[str, Any]) -> tuple[dict[str, Any], list[list[str]]]:
    """Per side: images/s, ratios within rounds (to the recipe as written and as intended,
    same precision, and to the recipe as written in fp32), the images the VAE is updated
    on, FLOP/s and its fraction of the measured bf16 and fp32 matmul peaks."""
    values, peak = m["values"], m["peak"]
    rows, sides = [], {}
    for name, vs in values.items():
        precision = "bf16" if "bf16" in name else "fp32"
        written = values.get(f"recipe {precision}, as written")
        intended = values[f"recipe {precision}, as intended"]
        # the images the VAE is updated on: the recipe's discriminator steps update no VAE
        share = 0.5 if name.startswith("recipe") else 1.0
        flop_s = m["flops"][name] / 2 * statistics.median(vs) / BATCH  # FLOPs of one step
        sides[name] = s = {
            "images_per_s": [round(v, 3) for v in vs],
            "images_per_s_median": round(statistics.median(vs), 3),
            "ratio_same_precision": within_rounds(vs, written),
            "ratio_to_recipe_fp32": within_rounds(vs, values.get("recipe fp32, as written")),
            "ratio_intended_same_precision": within_rounds(vs, intended),
            "vae_trained_images_per_s_median": round(share * statistics.median(vs), 3),
            "ratio_vae_trained_same_precision": within_rounds(vs, written, 2 * share),
            "ratio_vae_trained_intended_same_precision": within_rounds(vs, intended, 2 * share),
            "parameters": m["params"][name],
            "gflop_per_step_pair": round(m["flops"][name] / 1e9, 1),
            "gflop_per_s": round(flop_s / 1e9, 1),
            "fraction_of_bf16_peak": round(flop_s / peak["bf16"], 4),
            "fraction_of_fp32_peak": round(flop_s / peak["fp32"], 4),
            "precision": precision,
        }
        x = lambda r: "-" if r is None else f"{r:.2f}x"  # noqa: E731
        rows.append(
            [
                name,
                f"{m['params'][name] / 1e6:.1f}M",
                f"{s['gflop_per_step_pair']:,.0f}",
                f"{s['images_per_s_median']:.2f}",
                x(s["ratio_same_precision"]),
                x(s["ratio_intended_same_precision"]),
                f"{s['vae_trained_images_per_s_median']:.2f}",
                x(s["ratio_vae_trained_intended_same_precision"]),
                f"{s['gflop_per_s']:.0f}",
                f"{100 * s['fraction_of_bf16_peak']:.1f}%",
                f"{100 * s['fraction_of_fp32_peak']:.1f}%",
            ]
        )
    header = [
        f"{SIZE}x{SIZE} RGB, batch {BATCH}, adversarial term on",
        "params",
        "GFLOP / 2 steps",
        "images/s (median)" if CLOCK is time.perf_counter else "images per CPU-s (median)",
        "x recipe as written, same precision",
        "x recipe as intended, same precision",
        "VAE-updated " + ("images/s" if CLOCK is time.perf_counter else "images per CPU-s"),
        "x recipe as intended (VAE-updated), same precision",
        "GFLOP/s",
        "of bf16 matmul peak",
        "of fp32 matmul peak",
    ]
    return sides, [header, *rows]


def peak_note(peak: dict[str, float]) -> str:
    """The measured matmul throughputs, in GFLOP/s (a CPU without bf16 runs it at ~1)."""
    return (
        f"{peak['bf16'] / 1e9:.1f} GFLOP/s bf16, {peak['fp32'] / 1e9:.1f} GFLOP/s fp32. "
        "FLOPs: torch's FlopCounterMode over a step pair, forward + backward."
    )


def resummarise(name: str) -> int:
    """The tables again from results/NAME.json's raw numbers (no measuring)."""
    import json

    from common import RESULTS

    result = json.loads((RESULTS / f"{name}.json").read_text())
    global BATCH, CLOCK
    BATCH = result["batch"]
    CLOCK = time.process_time if result.get("clock") == "cpu" else time.perf_counter
    raw = result.get("raw") or {  # a results file from before "raw" was kept
        "values": {n: s["images_per_s"] for n, s in result["sides"].items()},
        "flops": {n: s["gflop_per_step_pair"] * 1e9 for n, s in result["sides"].items()},
        "params": {n: s["parameters"] for n, s in result["sides"].items()},
        "peak": {k: v * 1e12 for k, v in result["matmul_peak_tflop_s"].items()},
    }
    sides, table = summarise(raw)
    result["sides"], result["raw"] = sides, raw
    notes = result.get("notes") or [
        line for line in (RESULTS / f"{name}.md").read_text().split("\n\n")[1].splitlines()
    ]
    prefix = "Measured matmul throughput ("
    notes = [  # the throughputs in GFLOP/s (earlier files: TFLOP/s, 0.00 for bf16 here)
        line.split("): ")[0] + "): " + peak_note(raw["peak"]) if line.startswith(prefix) else line
        for line in notes
    ]
    result["notes"] = notes
    md = write_results(name, result, table, notes)
    print(md.read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (fixed)")
    parser.add_argument("--no-bf16", action="store_true", help="fp32 sides only")
    parser.add_argument("--name", default="", help="results file name (default: see above)")
    parser.add_argument("--size", type=int, default=SIZE, choices=(64, 128, 256))
    parser.add_argument("--preset", default="", help="an autoencoderkl preset's architecture")
    parser.add_argument(
        "--clock",
        default="wall",
        choices=("wall", "cpu"),
        help="cpu: time with the process's CPU time (one thread; for a loaded machine)",
    )
    parser.add_argument("--batch", type=int, default=BATCH, help="images per batch")
    parser.add_argument(
        "--sides",
        default="all",
        choices=("all", "intended"),
        help="intended: the recipe as intended and vaekit's autoencoderkl only",
    )
    parser.add_argument(
        "--peak-size",
        type=int,
        default=4096,
        help="side of the matmul that measures the peak (smaller where bf16 is emulated: "
        "a 4096^3 bf16 matmul takes minutes on CPUs without native bf16)",
    )
    parser.add_argument(
        "--resummarise", action="store_true", help="rewrite the tables from the results JSON"
    )
    args = parser.parse_args(argv)
    differs = args.preset or args.size != 128  # the default's results keep their name
    suffix = f"_{args.preset or 'quarter-sd'}_{args.size}" if differs else ""
    args.name = args.name or f"diffusers_recipe{suffix}"
    configure(args.size, args.preset, args.batch)
    if args.resummarise:
        return resummarise(args.name)
    global CLOCK
    if args.clock == "cpu":
        if args.threads != 1:
            raise SystemExit("--clock cpu needs --threads 1 (CPU time sums the threads')")
        CLOCK = time.process_time
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    info = machine()
    m = measure(args)
    sides, table = summarise(m)
    result = {
        "machine": info,
        "architecture": ARCH,
        "preset": args.preset or None,
        "size": SIZE,
        "vaekit_conv": CONV,
        "batch": BATCH,
        "rounds": args.rounds,
        "clock": args.clock,
        "matmul_peak_tflop_s": {k: round(v / 1e12, 3) for k, v in m["peak"].items()},
        "sides": sides,
        "load_average": [min(m["load"]), max(m["load"])],
        "wall_s": round(time.perf_counter() - start, 1),
    }
    peak = m["peak"]
    notes = [
        f"{args.rounds} rounds, the sides taking turns in one process ({args.threads} torch "
        "thread(s)), each timing one step pair (two batches: the recipe's generator and "
        "discriminator steps; two vaekit steps, each updating both) after a warm-up pair; "
        "ratios are taken within a round. Load average during the run: "
        f"{min(m['load']):.2f} to {max(m['load']):.2f}.",
        f"Measured matmul throughput ({args.peak_size}^3, {args.threads} thread(s)): "
        + peak_note(peak),
        "As written: the script's LPIPS runs under torch.no_grad() and its discriminator "
        "step neither back-propagates nor steps (fewer FLOPs, a discriminator that never "
        "trains); as intended: both fixed, the work vaekit does. The recipe's bf16 is the "
        "script's (weights cast to bf16); vaekit's is autocast over fp32 weights. LPIPS "
        "and the PatchGAN are vaekit's modules standing in for lpips and taming "
        "(see the script's docstring).",
    ]
    if args.clock == "cpu":
        notes.append(
            "Timed with the process's CPU time (time.process_time, one thread), the sides and "
            "the matmul peak alike: images per CPU-second, which time-slicing on the loaded "
            "machine does not inflate (cache and memory-bandwidth contention still can)."
        )
    if args.no_bf16:
        notes.append(
            "bf16 sides not run (--no-bf16): on this machine a bf16 matmul runs at "
            f"{peak['bf16'] / peak['fp32']:.1%} of the fp32 one's throughput (no native bf16)."
        )
    result["raw"], result["notes"] = m, notes
    md = write_results(args.name, result, table, notes)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
