"""The conv decoder's normalisation with residual blocks on small photo crops (issue 14):
GroupNorm, the per-pixel channel norm as vaekit builds it (each residual branch's last
norm starting at scale 0), and the channel norm with that scale started at 1 (how it was
built before, when decoders with blocks collapsed to one constant image).

    python benchmarks/decoder_norm_blocks.py VARIANT [--steps 200] [--seed 0] [--blocks 1]

VARIANT: group | channel | channel-scale1. The crops: photo_quality.py's photographs
(scikit-image + mate-backgrounds) at half its size (short side 96 px), 2,000 32x32 training
crops and 400 held-out ones from the same held-out photographs. The model: channels
[32, 64, 128] (32 -> 4), latent 32, Laplace scale 0.1; a plain loop (Adam lr 0.003, 50
warm-up steps, cosine, batch 64, fp32, one thread), so that a run is ~1 CPU-minute per
200 steps. Prints one JSON line: validation -ELBO (nats per crop, z sampled), KL, PSNR of
the posterior means' reconstructions, and the spread of the reconstructions over crops
(about 0 for a decoder that collapsed to one image).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import photo_quality  # noqa: E402

from vaekit.config import ModelConfig  # noqa: E402
from vaekit.models import VAE  # noqa: E402
from vaekit.models.conv import ResBlock  # noqa: E402

CROP = 32


def crops() -> tuple[torch.Tensor, torch.Tensor]:
    photos = photo_quality.load_photos()
    half = {
        name: np.asarray(
            Image.fromarray(p).resize(
                (p.shape[1] * CROP // 64, p.shape[0] * CROP // 64), Image.Resampling.LANCZOS
            )
        )
        for name, p in photos.items()
    }
    photo_quality.CROP = CROP  # the crop size its `crops` cuts
    train, test = photo_quality.split(half, 2000, 400)
    return torch.tensor(train).float() / 255, torch.tensor(test).float() / 255


def model(variant: str, blocks: int) -> VAE:
    norm = "group" if variant == "group" else "channel"
    cfg = ModelConfig(
        arch="conv",
        channels=[32, 64, 128],
        blocks_per_level=blocks,
        latent_dim=32,
        likelihood="laplace",
        obs_scale=0.1,
        decoder_norm=norm,
    )
    vae = VAE.from_config(cfg, (3, CROP, CROP))
    if variant == "channel-scale1":
        for block in vae.decoder.modules():
            if isinstance(block, ResBlock):
                torch.nn.init.ones_(block.norm2.weight)  # type: ignore[arg-type]
    return vae


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variant", choices=("group", "channel", "channel-scale1"))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--blocks", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train, test = crops()
    torch.manual_seed(args.seed)
    vae = model(args.variant, args.blocks)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    batches = torch.Generator().manual_seed(args.seed)
    start = time.process_time()
    for step in range(args.steps):
        warm = min(1.0, (step + 1) / 50)
        for group in opt.param_groups:
            group["lr"] = 3e-3 * warm * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        terms, _ = vae.elbo_terms(train[torch.randint(len(train), (64,), generator=batches)])
        opt.zero_grad()
        (terms.recon + terms.kl).mean().backward()
        opt.step()
    vae.eval()
    with torch.no_grad():
        terms, _ = vae.elbo_terms(test, generator=torch.Generator().manual_seed(0))
        recon = vae.mean(vae.decode(vae.encode(test)[0]))
        psnr = (-10 * torch.log10(((recon - test) ** 2).flatten(1).mean(1))).mean()
    row = {**vars(args), "neg_elbo": float((terms.recon + terms.kl).mean())}
    row |= {"kl": float(terms.kl.mean()), "psnr": float(psnr)}
    row |= {"spread": float(recon.std(0).mean()), "cpu_s": time.process_time() - start}
    print(json.dumps(row))


if __name__ == "__main__":
    main()
