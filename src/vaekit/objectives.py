"""The training objective of one minibatch: negative ELBO (or IWAE bound), beta, free bits,
and an optional perceptual term."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from . import losses
from .config import LossConfig
from .models import VAE


@dataclass
class StepTerms:
    loss: torch.Tensor  # () the objective being minimised
    nelbo: torch.Tensor  # () batch-mean negative ELBO (beta = 1), for reporting
    recon: torch.Tensor  # () batch-mean -log p(x|z)
    kl: torch.Tensor  # () batch-mean KL(q(z|x) || p(z))


def shard_noise(
    shape: tuple[int, ...],
    dim: int,
    shard: tuple[int, int],
    generator: torch.Generator | None,
    device: torch.device,
) -> torch.Tensor:
    """Rows rank::world (along `dim`) of N(0, I) noise drawn for the whole global batch.

    Every DDP rank draws the same numbers and keeps its own rows, so a sharded step sees
    exactly the noise one process would see for the same examples (and the ranks'
    generators stay in step).
    """
    rank, world = shard
    full = list(shape)
    full[dim] *= world
    eps = torch.randn(full, generator=generator, device=device, dtype=torch.float32)
    return eps[(slice(None),) * dim + (slice(rank, None, world),)]  # eps[..., rank::world, ...]


def compute(
    model: VAE,
    x: torch.Tensor,
    y: torch.Tensor | None,
    cfg: LossConfig,
    step: int,
    generator: torch.Generator | None = None,
    perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    *,
    shard: tuple[int, int] | None = None,
) -> StepTerms:
    """The loss of one batch x (B, C, H, W) in [0, 1]: summed over dimensions, batch-averaged.

    `shard` = (rank, world): x holds rows rank::world of a global batch (DDP); the noise
    is then drawn for the global batch (see `shard_noise`).
    """
    if shard is not None and shard[1] == 1:
        shard = None  # one process: the plain noise
    b, d = x.shape[0], model.latent_dim
    if cfg.iw_samples > 1:
        k = cfg.iw_samples
        eps = shard_noise((k, b, d), 1, shard, generator, x.device) if shard else None
        log_w = model.log_importance_weights(x, k, y, generator, eps)  # (K, B)
        loss = -losses.iw_bound(log_w).mean()
        nelbo = -log_w.mean()
        return StepTerms(
            loss,
            nelbo.detach(),
            torch.full_like(nelbo, float("nan")),
            torch.full_like(nelbo, float("nan")),
        )
    eps = shard_noise((b, d), 0, shard, generator, x.device) if shard else None
    out = model(x, y, generator, eps)
    terms, kl_per_dim = model.elbo_terms(x, y, out=out)
    recon, kl = terms.recon.mean(), terms.kl.mean()
    kl_term = losses.free_bits_kl(kl_per_dim, cfg.free_bits) if cfg.free_bits > 0 else kl
    loss = recon + losses.beta_at(step, cfg.beta, cfg.kl_warmup_steps) * kl_term
    if perceptual is not None and cfg.perceptual_weight > 0:
        # gradients flow through the perceptual network into the decoder: no no_grad here
        loss = loss + cfg.perceptual_weight * perceptual(model.mean(out.params), x).mean()
    return StepTerms(loss, (recon + kl).detach(), recon.detach(), kl.detach())


class Objective(nn.Module):
    """`compute` as a module, so that DistributedDataParallel wraps the whole forward pass
    (its gradient hooks need the forward to go through the wrapper)."""

    def __init__(
        self,
        model: VAE,
        cfg: LossConfig,
        perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.model, self.cfg = model, cfg
        self._perceptual = [perceptual]  # a list: frozen, so not a submodule DDP would sync

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None,
        step: int,
        generator: torch.Generator | None = None,
        shard: tuple[int, int] | None = None,
    ) -> StepTerms:
        # `compute` is looked up at call time, so a patched objectives.compute is honoured
        return compute(
            self.model, x, y, self.cfg, step, generator, self._perceptual[0], shard=shard
        )
