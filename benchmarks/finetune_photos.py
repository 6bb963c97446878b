"""Fine-tune a small AutoencoderKL on real photographs with the `sd-vae-finetune` preset and
show with `vaekit compare` what it gains on held-out photographs of the new kind.

    apt-get install mate-backgrounds lomiri-wallpapers-16.04   # the photographs
    python benchmarks/finetune_photos.py [--base-epochs 2] [--finetune-epochs 2] [--decoder-only]

Two sets of real photographs from Debian packages (read where the packages put them,
never committed; photo_quality.py's reading, resizing and cropping): set A, the 12
photographs of mate-backgrounds (/usr/share/backgrounds/mate/nature: flowers, water,
sand), and set B, the 15 of lomiri-wallpapers-16.04 (/usr/share/backgrounds: landscapes,
buildings, patterns). Each is resized to a 192 px short side. Whole photographs are held
out of each set (HELD_OUT_A, HELD_OUT_B). Crops are written as PNG folders to a
temporary directory (deleted at the end unless --work is given):

- A: --n-base 64x64 crops of set A's training photographs (the base's data);
- B: --n-finetune 72x72 crops of set B's training photographs (the fine-tune's: the
  preset's `data.augment crop,flip` decodes a folder at 64 + 2 x 4 = 72 px and takes a
  random 64x64 window of each image, so 72 px crops keep the photographs' scale);
- the held-out folders: --n-test 64x64 crops of the held-out photographs of each set.

Then, each a `vaekit` command in a subprocess on one thread (`train.threads 1`, fp32):
1. the base: kl-f8-128's architecture scaled down (`--model.channels 32,64,64`, one
   block per level, 4 latent channels: a 4x16x16 latent at 64 px) and its objective
   (Laplace likelihood of scale 1, KL 1e-6), trained from scratch on A at a from-scratch
   learning rate (1e-3, the preset's 1e-4 is for hours of GPU time);
2. `vaekit export BASE --format diffusers` (the scaling factor measured on A);
3. the fine-tune: `--config sd-vae-finetune --model.init diffusers:BASE_EXPORT` on B, its
   recipe as it stands (Adam 1e-5, batches of 8 accumulated 2 per step, EMA 0.999, KL
   1e-6, random crops and flips; --decoder-only adds train.freeze_encoder), at 64 px;
4. `vaekit export FINETUNED --format diffusers --scaling-factor measure` (measured on B);
5. `vaekit compare diffusers:BASE_EXPORT diffusers:FT_EXPORT --data HELD_OUT --split all
   --json` on the held-out crops of B and of A.

LPIPS: the preset's LPIPS-VGG term needs VGG16's and LPIPS's weights, which this machine
cannot download (no network), so the term is off (`--loss.perceptual none`) in both runs
unless --lpips-weights random is given (vaekit's LPIPS at seeded random weights: the
compute of the recipe, not its perceptual signal). The latent statistics: besides the
factors `vaekit export` measures (each on its own run's training images), the script
encodes the held-out B crops with both exported models through diffusers and reports
1 / the standard deviation and the mean of posterior samples (what export measures, on
the same images). Writes benchmarks/results/finetune_photos.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, write_results  # noqa: E402
from photo_quality import MATE, crops, read_jpgs, resized  # noqa: E402

LOMIRI = Path("/usr/share/backgrounds")
HELD_OUT_A = ("Dune", "LadyBird")  # photo_quality.py's held-out mate photographs
HELD_OUT_B = (
    "Bridge_by_Sander_Klootwijk",
    "Wine_by_Jakkub_Mede",
    "free_by_Peter_Nerlich",
    "sunset_by_Aitzol_Berasategi",
)
SIZE, MARGIN = 64, 4  # data.augment crop's margin at 64 px: ceil(64 / 16)
BASE = ["--data.image_size", str(SIZE), "--model.arch", "autoencoderkl"]
BASE += ["--model.channels", "32,64,64", "--model.blocks_per_level", "1"]
BASE += ["--model.latent_channels", "4", "--model.likelihood", "laplace"]
BASE += ["--model.obs_scale", "1.0", "--loss.beta", "1e-6", "--optim.name", "adamw"]
BASE += ["--lr", "1e-3", "--optim.schedule", "cosine", "--optim.warmup_steps", "20"]
BASE += ["--batch-size", "16"]
COMMON = ["--train.threads", "1", "--train.precision", "fp32", "--train.progress", "false"]
COMMON += ["--device", "cpu", "--data.test_fraction", "0.05"]


def photo_sets() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Set A and set B, resized to photo_quality's 192 px short side."""
    a = resized(read_jpgs(MATE, "apt-get install mate-backgrounds"))
    b = resized(read_jpgs(LOMIRI, "apt-get install lomiri-wallpapers-16.04"))
    for name, photos, held in (("A", a, HELD_OUT_A), ("B", b, HELD_OUT_B)):
        missing = set(held) - set(photos)
        if missing:
            raise SystemExit(f"set {name}: held-out photographs missing: {sorted(missing)}")
    return a, b


def write_folder(folder: Path, images: np.ndarray) -> Path:
    """(N, 3, H, W) uint8 crops as PNG files in `folder` (kept if it holds them already)."""
    if folder.is_dir() and len(list(folder.glob("*.png"))) == len(images):
        return folder
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{i:05d}.png")
    return folder


def folders(work: Path, args: argparse.Namespace) -> dict[str, Path]:
    """The four crop folders (see the docstring), seeded."""
    a, b = photo_sets()
    train_a = [p for n, p in sorted(a.items()) if n not in HELD_OUT_A]
    train_b = [p for n, p in sorted(b.items()) if n not in HELD_OUT_B]
    return {
        "A": write_folder(work / "A", crops(train_a, args.n_base, seed=0)),
        "B": write_folder(work / "B", crops(train_b, args.n_finetune, 1, SIZE + 2 * MARGIN)),
        "heldout_A": write_folder(
            work / "heldout_A", crops([a[n] for n in HELD_OUT_A], args.n_test, seed=2)
        ),
        "heldout_B": write_folder(
            work / "heldout_B", crops([b[n] for n in HELD_OUT_B], args.n_test, seed=3)
        ),
    }


def vaekit(*args: str) -> tuple[str, float, float]:
    """Run `python -m vaekit ARGS` (one thread); (stdout, CPU s, wall s)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    command = [sys.executable, "-m", "vaekit", *args]  # run the script itself with nice
    print("$ vaekit " + " ".join(args), file=sys.stderr, flush=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"vaekit {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done.stdout, cpu, wall


def latent_stats(export: Path, folder: Path) -> dict[str, float]:
    """1 / std and mean of posterior samples of the exported model on `folder`'s crops
    (as `vaekit export` measures the factor, here on the same images for every model)."""
    from diffusers import AutoencoderKL

    torch.set_num_threads(1)
    vae = AutoencoderKL.from_pretrained(export).eval()
    x = np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])
    x = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        z = torch.cat(
            [vae.encode(x[i : i + 64]).latent_dist.sample(g) for i in range(0, len(x), 64)]
        )
    return {"inverse_std": float(1 / z.std()), "mean": float(z.mean())}


def scaling_factor(export: Path) -> float:
    return float(json.loads((export / "config.json").read_text())["scaling_factor"])


def compare(base: Path, tuned: Path, folder: Path) -> list[dict[str, Any]]:
    out, _, _ = vaekit(
        "compare",
        f"diffusers:{base}",
        f"diffusers:{tuned}",
        "--data",
        str(folder),
        "--split",
        "all",
        "--image-size",
        str(SIZE),
        "--json",
    )
    return list(json.loads(out))


def run(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The five steps of the docstring; every number they give, with their CPU seconds."""
    data = folders(work, args)
    lpips = ["--loss.perceptual", "none"]
    if args.lpips_weights == "random":  # keep the preset's lpips-vgg and its weight
        lpips = ["--loss.perceptual", "lpips-vgg", "--loss.perceptual_weight", str(3 * SIZE**2)]
        lpips += ["--loss.perceptual_backbone_weights", "random"]
        lpips += ["--loss.perceptual_lin_weights", "random"]
    steps: dict[str, dict[str, Any]] = {}
    base_run, tuned_run = work / "runs" / "base", work / "runs" / "finetuned"
    base_vae, tuned_vae = work / "base-vae", work / "finetuned-vae"
    commands = {
        "base": ["train", "--data", str(data["A"]), *BASE, *COMMON, *lpips],
        "export base": ["export", str(base_run), "--format", "diffusers", str(base_vae)],
        "fine-tune": ["train", "--config", "sd-vae-finetune", "--data", str(data["B"])],
        "export fine-tune": ["export", str(tuned_run), "--format", "diffusers", str(tuned_vae)],
    }
    commands["base"] += ["--epochs", str(args.base_epochs), "--out", str(base_run)]
    commands["fine-tune"] += ["--model.init", f"diffusers:{base_vae}"]
    commands["fine-tune"] += ["--data.image_size", str(SIZE), *COMMON, *lpips]
    commands["fine-tune"] += ["--epochs", str(args.finetune_epochs), "--out", str(tuned_run)]
    if args.decoder_only:
        commands["fine-tune"] += ["--train.freeze_encoder", "true"]
    if args.finetune_lr:
        commands["fine-tune"] += ["--lr", str(args.finetune_lr)]
    commands["export fine-tune"] += ["--scaling-factor", "measure"]
    done = work / "steps.json"  # --work: the steps done before, kept (see --work's help)
    steps = json.loads(done.read_text()) if done.is_file() else {}
    for name, command in commands.items():
        if name in steps:
            continue
        out, cpu, wall = vaekit(*command)
        steps[name] = {"command": "vaekit " + " ".join(command), "cpu_s": cpu, "wall_s": wall}
        steps[name]["optimizer_steps"] = optimizer_steps(work / "runs", name)
        done.write_text(json.dumps(steps))
        print(out.strip()[-400:], file=sys.stderr, flush=True)
    result: dict[str, Any] = {"steps": steps, "compare": {}, "latents": {}}
    for held in ("heldout_B", "heldout_A"):
        result["compare"][held] = compare(base_vae, tuned_vae, data[held])
    for name, export in (("base", base_vae), ("fine-tuned", tuned_vae)):
        result["latents"][name] = {
            "scaling_factor_export": scaling_factor(export),
            **latent_stats(export, data["heldout_B"]),
        }
    result["crops"] = {k: len(list(v.glob("*.png"))) for k, v in data.items()}
    return result


def optimizer_steps(runs: Path, name: str) -> int | None:
    """The last optimizer step in a training run's metrics.jsonl (None for an export)."""
    run = {"base": runs / "base", "fine-tune": runs / "finetuned"}.get(name)
    if run is None:
        return None
    steps = [json.loads(line).get("step", 0) for line in (run / "metrics.jsonl").open()]
    return int(max(steps))


def table(result: dict[str, Any]) -> list[list[str]]:
    head = ["model", "held-out B: PSNR dB", "SSIM", "held-out A: PSNR dB", "SSIM"]
    head += ["scaling factor (export)", "1/std on held-out B", "latent mean on held-out B"]
    rows = [head]
    for i, name in enumerate(("base", "fine-tuned")):
        b, a = result["compare"]["heldout_B"][i], result["compare"]["heldout_A"][i]
        lat = result["latents"][name]
        rows.append(
            [
                f"{name} ({'x'.join(map(str, b['latent_shape']))} latent, "
                f"{b['parameters'] / 1e6:.2f}M)",
                f"{b['psnr']:.2f}",
                f"{b['ssim']:.4f}",
                f"{a['psnr']:.2f}",
                f"{a['ssim']:.4f}",
                f"{lat['scaling_factor_export']:.3f}",
                f"{lat['inverse_std']:.3f}",
                f"{lat['mean']:.3f}",
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-epochs", type=int, default=2, help="the base's epochs on A")
    parser.add_argument("--finetune-epochs", type=int, default=2, help="the fine-tune's on B")
    parser.add_argument("--n-base", type=int, default=1600, help="64 px crops of set A")
    parser.add_argument("--n-finetune", type=int, default=800, help="72 px crops of set B")
    parser.add_argument("--n-test", type=int, default=400, help="held-out crops per set")
    parser.add_argument("--decoder-only", action="store_true", help="train.freeze_encoder")
    parser.add_argument("--finetune-lr", type=float, default=0.0, help="(default: the preset's)")
    parser.add_argument("--lpips-weights", choices=("none", "random"), default="none")
    parser.add_argument(
        "--work",
        default="",
        help="keep the crops, runs and exports here; run again with the same arguments, "
        "the steps already done are not repeated",
    )
    parser.add_argument("--name", default="finetune_photos", help="results file name")
    args = parser.parse_args(argv)
    info = machine()
    start = time.perf_counter()
    if args.work:
        result = run(Path(args.work), args)
    else:
        with tempfile.TemporaryDirectory() as work:
            result = run(Path(work), args)
    result = {"machine": info, "arguments": vars(args), **result}
    result["wall_s"] = round(time.perf_counter() - start, 1)
    result["load_average_end"] = round(os.getloadavg()[0], 2)
    write_results(args.name, result, table(result), notes(result, args))
    return 0


def notes(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    steps, crops_ = result["steps"], result["crops"]
    decoder = ", decoder only" if args.decoder_only else ""
    held = result["compare"]["heldout_B"][0]["n"]
    lines = [
        f"Set A: mate-backgrounds' {12 - len(HELD_OUT_A)} training photographs "
        f"({crops_['A']} 64x64 crops); set B: lomiri-wallpapers-16.04's "
        f"{15 - len(HELD_OUT_B)} ({crops_['B']} 72x72 crops, random 64x64 windows and flips "
        f"by the preset's data.augment). Held out, whole: {', '.join(HELD_OUT_B)} (B, "
        f"{held} crops) and {', '.join(HELD_OUT_A)} (A, {crops_['heldout_A']} crops); "
        "photographs resized to a 192 px short side.",
        f"Base: {steps['base']['optimizer_steps']} steps on A (batch 16, AdamW 1e-3), "
        f"{steps['base']['cpu_s']:.0f} CPU s; fine-tune: the sd-vae-finetune preset, "
        f"{steps['fine-tune']['optimizer_steps']} optimizer steps on B (8 x 2 accumulated, "
        f"Adam {args.finetune_lr or 1e-5:g}, EMA 0.999{decoder}), "
        f"{steps['fine-tune']['cpu_s']:.0f} CPU s; one thread, fp32.",
        "LPIPS term: "
        + (
            "off in both runs (its VGG16 and LPIPS weights cannot be downloaded here)."
            if args.lpips_weights == "none"
            else "vaekit's LPIPS-VGG at seeded random weights (the recipe's compute, not its "
            "perceptual signal): VGG16's and LPIPS's weights cannot be downloaded here."
        ),
        "PSNR/SSIM: `vaekit compare diffusers:BASE diffusers:FINETUNED --data HELDOUT --split "
        "all --json` (the exported folders). Scaling factor (export): what `vaekit export` "
        "measured, the base on A's training crops, the fine-tune (--scaling-factor measure) "
        "on B's; 1/std and mean: posterior samples of the held-out B crops through "
        "diffusers, both models on the same images.",
        f"Load average at the end: {result['load_average_end']}; wall {result['wall_s']:.0f} s.",
    ]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
