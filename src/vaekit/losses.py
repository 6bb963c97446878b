"""The terms of the ELBO and of the importance-weighted bound, as pure functions of tensors.

Per-example quantities are summed over data or latent dimensions and returned with
shape (B,); averaging over the batch is the caller's last step. Everything is in nats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0  # exp(20) ~ 5e8: far from float32 overflow
LOG_2PI = math.log(2.0 * math.pi)


def clamp_logvar(logvar: torch.Tensor) -> torch.Tensor:
    """Keep exp(logvar) finite in float32 whatever the network predicts (logvar = 100...)."""
    return logvar.float().clamp(LOGVAR_MIN, LOGVAR_MAX)


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per latent dimension, (B, D), in float32.

    Kingma & Welling (2013), Appendix B: -KL = 0.5 * sum(1 + log sigma^2 - mu^2 - sigma^2).
    """
    mu, logvar = mu.float(), clamp_logvar(logvar)
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)


def reparameterize(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    generator: torch.Generator | None = None,
    samples: int = 0,
    eps: torch.Tensor | None = None,
) -> torch.Tensor:
    """z = mu + exp(0.5 * logvar) * eps, eps ~ N(0, I): the reparameterization trick.

    With `samples` = K > 0 the result has a leading sample axis: (K, B, D). `eps` given
    (shaped like mu) replaces the draw: DDP ranks pass their rows of the global batch's.
    """
    if eps is None:
        shape = mu.shape if samples == 0 else (samples, *mu.shape)
        eps = torch.randn(shape, generator=generator, device=mu.device, dtype=torch.float32)
    return mu.float() + torch.exp(0.5 * clamp_logvar(logvar)) * eps


def log_normal_diag(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dimension."""
    logvar = clamp_logvar(logvar)
    return -0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension: the prior p(z)."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


def log_bernoulli(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log p(x|z) for Bernoulli pixels, from logits (never sigmoid + BCE), summed per example.

    x may be intensities in [0, 1]; then this is the negative binary cross-entropy.
    """
    nll = F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none")
    return -nll.flatten(1).sum(1)


def log_gaussian(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor | float) -> torch.Tensor:
    """log N(x; mean, exp(logvar)) summed per example; a fixed logvar makes it a scaled MSE."""
    if not torch.is_tensor(logvar):
        logvar = torch.tensor(float(logvar), device=x.device)
    logvar = clamp_logvar(logvar)
    sq = (x.float() - mean.float()).pow(2)
    return -0.5 * (sq * torch.exp(-logvar) + logvar + LOG_2PI).flatten(1).sum(1)


def log_laplace(x: torch.Tensor, loc: torch.Tensor, logscale: torch.Tensor | float) -> torch.Tensor:
    """log Laplace(x; loc, exp(logscale)) summed per example; a fixed scale makes it an L1."""
    if not torch.is_tensor(logscale):
        logscale = torch.tensor(float(logscale), device=x.device)
    logscale = logscale.float().clamp(0.5 * LOGVAR_MIN, 0.5 * LOGVAR_MAX)
    absdiff = (x.float() - loc.float()).abs()
    return -(absdiff * torch.exp(-logscale) + logscale + math.log(2.0)).flatten(1).sum(1)


def free_bits_kl(kl_per_dim: torch.Tensor, free_bits: float) -> torch.Tensor:
    """Batch-mean KL with a floor of `free_bits` nats per dimension (Kingma et al. 2016), ()."""
    per_dim = kl_per_dim.mean(0)  # (D,)
    if free_bits > 0:
        per_dim = per_dim.clamp(min=free_bits)
    return per_dim.sum()


def iw_bound(log_weights: torch.Tensor) -> torch.Tensor:
    """log (1/K) sum_k w_k from log-weights (K, B): the importance-weighted bound, (B,).

    Burda et al. (2015); with K = 1 it is the ELBO, and it rises towards log p(x) with K.
    """
    k = log_weights.shape[0]
    return torch.logsumexp(log_weights, dim=0) - math.log(k)


@dataclass
class ELBOTerms:
    """Per-example terms of the objective, each (B,), in nats."""

    recon: torch.Tensor  # -log p(x|z)
    kl: torch.Tensor  # KL(q(z|x) || p(z))

    @property
    def nelbo(self) -> torch.Tensor:
        """The negative ELBO: reconstruction + KL (beta = 1)."""
        return self.recon + self.kl


def beta_at(step: int, beta: float, warmup_steps: int) -> float:
    """KL weight at `step`: a linear ramp from 0 to `beta` over `warmup_steps`."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, (step + 1) / warmup_steps)
