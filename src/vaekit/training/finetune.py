"""Fine-tuning a pretrained autoencoder: training its decoder only (`train.freeze_encoder`)
and the one-line warning for a `model.init` run whose learning rate is above the
latent-diffusion recipe's (the `sd-vae-finetune` preset has the recipe's settings)."""

from __future__ import annotations

import sys

from torch import nn

from ..config import Config
from ..errors import ConfigError
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


def check_frozen_start(config: Config, model_given: bool, resuming: bool) -> None:
    """train.freeze_encoder keeps the starting model's encoder: one that vaekit would build
    with random weights (no model.init, no model passed in) is refused. A frozen random
    encoder trains a decoder on random features, which nobody asks for by this switch;
    that experiment stays open to a model passed in. A resume rebuilds the model it saved."""
    if not config.train.freeze_encoder or model_given or resuming or config.model.init:
        return
    raise ConfigError(
        "train.freeze_encoder trains the decoder of a pretrained model, but this model starts "
        "from random weights: set model.init diffusers:PATH_OR_REPO, or pass the pretrained "
        "model to vaekit.Trainer(model, config)"
    )


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
