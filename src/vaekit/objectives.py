"""The training objective of one minibatch: negative ELBO (or IWAE bound), beta, free bits,
and an optional perceptual term."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import losses
from .config import LossConfig
from .models import VAE


@dataclass
class StepTerms:
    loss: torch.Tensor  # () the objective being minimised
    nelbo: torch.Tensor  # () batch-mean negative ELBO (beta = 1), for reporting
    recon: torch.Tensor  # () batch-mean -log p(x|z)
    kl: torch.Tensor  # () batch-mean KL(q(z|x) || p(z))


def compute(model: VAE, x: torch.Tensor, y: torch.Tensor | None, cfg: LossConfig, step: int,
            generator: torch.Generator | None = None,
            perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
            ) -> StepTerms:
    """The loss of one batch x (B, C, H, W) in [0, 1]: summed over dimensions, batch-averaged."""
    if cfg.iw_samples > 1:
        log_w = model.log_importance_weights(x, cfg.iw_samples, y, generator)  # (K, B)
        loss = -losses.iw_bound(log_w).mean()
        nelbo = -log_w.mean()
        return StepTerms(loss, nelbo.detach(), torch.full_like(nelbo, float("nan")),
                         torch.full_like(nelbo, float("nan")))
    out = model(x, y, generator)
    terms, kl_per_dim = model.elbo_terms(x, y, out=out)
    recon, kl = terms.recon.mean(), terms.kl.mean()
    kl_term = losses.free_bits_kl(kl_per_dim, cfg.free_bits) if cfg.free_bits > 0 else kl
    loss = recon + losses.beta_at(step, cfg.beta, cfg.kl_warmup_steps) * kl_term
    if perceptual is not None and cfg.perceptual_weight > 0:
        # gradients flow through the perceptual network into the decoder: no no_grad here
        loss = loss + cfg.perceptual_weight * perceptual(model.mean(out.params), x).mean()
    return StepTerms(loss, (recon + kl).detach(), recon.detach(), kl.detach())
