# %% [markdown]
# # A latent-diffusion VAE: fine-tune diffusers' AutoencoderKL, compare, export, load back
#
# The path a latent-diffusion user walks: start from an existing `AutoencoderKL` (here a
# tiny one saved with diffusers, so the notebook runs offline; in practice
# `diffusers:stabilityai/sd-vae-ft-mse`), fine-tune it on a folder of images with the
# `sd-vae-finetune` preset, compare the fine-tune with the model it started from on
# held-out images, export it with its measured scaling factor, and load it in diffusers.
# Needs `pip install 'vaekit[diffusers]'`.

# %%
import json
import os
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image

from vaekit.cli import main as vaekit  # the `vaekit` command, callable from Python

TINY = os.environ.get("VAEKIT_EXAMPLES_TINY") == "1"
rng = np.random.default_rng(0)

# %% [markdown]
# ## A starting model and a folder of images

# %%
torch.manual_seed(0)
base = AutoencoderKL(
    block_out_channels=(8, 16),
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=32,
)
base.save_pretrained("base-vae")

folder = Path("photos")
folder.mkdir(exist_ok=True)
for i in range(48 if TINY else 400):
    image = rng.integers(0, 64, (40, 40, 3), dtype=np.uint8)
    x0, y0 = rng.integers(0, 24, 2)
    image[y0 : y0 + 16, x0 : x0 + 16] = rng.integers(128, 256, 3, dtype=np.uint8)
    Image.fromarray(image).save(folder / f"{i}.png")

# %% [markdown]
# ## Fine-tune with the latent-diffusion recipe's settings
#
# `sd-vae-finetune`: a small learning rate, KL weight 1e-6, LPIPS (here with seeded
# random weights, so that nothing downloads), the weight average kept and exported,
# random crops and flips. Without it, a `model.init` run at a from-scratch learning rate
# would wreck the pretrained latents on its first steps.

# %%
code = vaekit(
    [
        "train", "--config", "sd-vae-finetune",
        "--model.init", "diffusers:base-vae",
        "--data", str(folder), "--data.image_size", "32",
        "--loss.perceptual_backbone_weights", "random",
        "--loss.perceptual_lin_weights", "random",
        "--epochs", "1" if TINY else "10", "--batch-size", "8",
        "--train.progress", "false", "--out", "runs/finetune", "--overwrite",
    ]
)  # fmt: skip
assert code == 0

# %% [markdown]
# ## Is the fine-tune better than the model it started from?
#
# `vaekit compare` evaluates every model on the same held-out images: PSNR, SSIM (and
# LPIPS, rFID with their flags), the latent shape and the parameter count.

# %%
assert vaekit(["compare", "diffusers:base-vae", "runs/finetune", "--data", str(folder)]) == 0

# %% [markdown]
# ## Export for diffusers, with the scaling factor measured on the training images
#
# A fine-tune keeps its base model's `scaling_factor` unless asked: `--scaling-factor
# measure` computes 1 / std of the latents on the run's training images instead (what a
# diffusion model trained on these latents needs); `--scaling-factor X` sets one.

# %%
export = ["export", "runs/finetune", "--format", "diffusers", "exported", "--overwrite"]
assert vaekit([*export, "--scaling-factor", "measure"]) == 0
print("scaling_factor:", json.loads(Path("exported/config.json").read_text())["scaling_factor"])
vae = AutoencoderKL.from_pretrained("exported", low_cpu_mem_usage=False)
x = torch.rand(1, 3, 32, 32) * 2 - 1  # diffusers' units: [-1, 1]
latents = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
print(latents.shape)  # (1, 4, 16, 16): what a diffusion model trains on
