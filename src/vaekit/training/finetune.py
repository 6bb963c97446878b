"""Fine-tuning a pretrained autoencoder: training its decoder only (`train.freeze_encoder`)
and the one-line warning for a `model.init` run whose learning rate is above the
latent-diffusion recipe's (the `sd-vae-finetune` preset has the recipe's settings)."""

from __future__ import annotations

import sys

from torch import nn

from ..config import Config
from ..models import VAE

# Stable Diffusion's VAE fine-tunes (ft-EMA, ft-MSE) ran on batches of 192 (16 A100s x 12,
# https://huggingface.co/stabilityai/sd-vae-ft-mse; the card gives no learning rate):
# 1e-4 is the rate taken for them, the most a fine-tune should use at any batch
RECIPE_LR = 1e-4
RECIPE_BATCH = 192
PRESET = "sd-vae-finetune"


def encoder_side(model: VAE) -> list[nn.Module]:
    """What computes q(z|x): the encoder, the mean and log-variance heads (if the VAE has
    them) and the label embedding of a conditional VAE (the encoder reads it too)."""
    parts: list[nn.Module] = [model.encoder]
    if model.heads:
        parts += [model.mu_head, model.logvar_head]
    if model.conditional:
        parts.append(model.label_embedding)
    return parts


def freeze_encoder(model: VAE) -> None:
    """No gradient for the encoder side: the optimizer (built afterwards) holds no state
    for it, and the latents of the starting model stay exactly as they were."""
    for part in encoder_side(model):
        part.requires_grad_(False)


def eval_encoder(model: VAE) -> None:
    """The encoder side in eval mode (after model.train()): a frozen encoder's
    normalisation statistics and dropout must not move or draw either."""
    for part in encoder_side(model):
        part.eval()


def warn_fine_tune_lr(config: Config) -> None:
    """One line on stderr when a diffusers model.init run's learning rate is above the
    recipe's: a from-scratch rate (1e-3) wrecks the pretrained latents in a few steps."""
    lr = config.optim.lr
    if not config.model.init.startswith("diffusers:") or lr <= RECIPE_LR:
        return
    print(
        f"vaekit: warning: optim.lr {lr:g} is above the latent-diffusion recipe's "
        f"{_short(RECIPE_LR)} (at batch {RECIPE_BATCH}) for fine-tuning {config.model.init}; it "
        f"can wreck the pretrained latents in the first steps: use --config {PRESET} "
        "(lr 1e-5) or a lower --lr",
        file=sys.stderr,
    )


def _short(x: float) -> str:
    """1e-4, not 0.0001 or 1e-04."""
    return f"{x:.0e}".replace("e-0", "e-")
