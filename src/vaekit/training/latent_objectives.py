"""The objectives beside the ELBO (`loss.objective`): beta-TCVAE, FactorVAE, WAE-MMD and
InfoVAE. Each replaces the ELBO's latent term, beta x KL, by its own; the reconstruction
term, the perceptual term and the step are the ELBO's (objective.py), and so is what a
run reports as its -ELBO (reconstruction + the closed-form KL of the same draw).

- tcvae (Chen et al. 2018): alpha x MI + beta x TC + gamma x dimension-wise KL
  (`loss.mi_weight`, `tc_weight`, `dim_kl_weight`; divergences.tc_decomposition), log q(z)
  estimated from the minibatch by `loss.tc_estimator` (mss, the default, or mws) with N
  the training set's size; `loss.kl_warmup_steps` ramps the whole term. With 1, 1, 1 it is the ELBO
  (its KL by one-sample Monte Carlo).
- factorvae (Kim & Mnih 2018): the ELBO's beta x KL (warm-up, free bits) + gamma x TC
  (`loss.tc_weight`), TC ~ the mean logit of the discriminator D (log D / (1 - D)) at
  z ~ q(z|x). D (models/discriminator.LatentDiscriminator) is trained by
  training/adversary.LatentAdversary, like the PatchGAN, on the step's z (detached) as
  q(z) against the same z with each dimension permuted across the batch (the product of
  the marginals). Kim & Mnih permute a second batch; this uses the step's own, as
  PyTorch-VAE does. The permutations come from the run's generator, so a resume repeats
  them.
- wae_mmd (Tolstikhin et al. 2018): lambda x MMD(q(z), p(z)) (`loss.mmd_weight`,
  `loss.mmd_kernel`), z drawn from q(z|x), or its mean (`loss.wae_encoder
  deterministic`: the noise is 0, so nothing else changes).
- infovae (Zhao et al. 2019): (1 - alpha) x KL + (alpha + lambda - 1) x MMD
  (`loss.info_alpha`, `loss.mmd_weight`).

The MMD's prior draws come from the model, `model.sample_prior` (`prior_draws`, the one
call), as many as the batch, from the run's generator: a VampPrior serves as N(0, I) does.
Each objective's terms are columns of the step's record (`COLUMNS`), batch means, and
`train_<name>` in metrics.jsonl. The ELBO's step does none of this: objective.compute
takes this module's path only for another objective.

What a run cannot take is refused in one line: options (config.training_options
.check_objective_options, at load) and here the model and the run (`check`): every one
needs a posterior with a density; tcvae needs the diagonal Gaussian posterior and the
N(0, I) prior its decomposition is written for; and each estimator is over the whole
batch, which a process of several (torchrun) does not see.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .. import divergences, losses
from ..config import LossConfig
from ..errors import ConfigError
from ..models import VAE, VAEOutput
from ..models.pretrained import GAUSSIAN

# each objective's columns in a step's record, after the ELBO's
COLUMNS: dict[str, tuple[str, ...]] = {
    "elbo": (),
    "tcvae": ("mi", "tc", "dim_kl"),
    "factorvae": ("tc",),
    "wae_mmd": ("mmd",),
    "infovae": ("mmd",),
}
STANDARD_PRIOR = "standard"  # model.prior's N(0, I)


@dataclass
class Latent:
    """An objective's latent term on one batch."""

    loss: torch.Tensor  # () as the loss weighs it
    record: tuple[torch.Tensor, ...]  # () each, detached: the values of COLUMNS[objective]
    real: torch.Tensor | None = None  # factorvae: D's inputs, q(z) (B, D) ...
    fake: torch.Tensor | None = None  # ... and the product of its marginals (B, D)


def weighted_kl(
    cfg: LossConfig, step: int, kl: torch.Tensor, kl_per_dim: torch.Tensor
) -> torch.Tensor:
    """The ELBO's latent term: beta (warmed up) x the batch-mean KL, with free bits."""
    kl_term = losses.free_bits_kl(kl_per_dim, cfg.free_bits) if cfg.free_bits > 0 else kl
    return losses.beta_at(step, cfg.beta, cfg.kl_warmup_steps) * kl_term


def prior_draws(model: VAE, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """n draws z ~ p(z) (n, D) from the model's prior: the one place an objective asks."""
    return model.sample_prior(n, generator)


def permute_dims(z: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """z (B, D) with each dimension permuted across the batch independently: draws of the
    product of the marginals of the batch's q(z) (Kim & Mnih, Algorithm 1)."""
    order = torch.rand(z.shape, generator=generator, device=z.device).argsort(0)
    return z.gather(0, order)


def latent_loss(
    model: VAE,
    cfg: LossConfig,
    step: int,
    out: VAEOutput,
    kl: tuple[torch.Tensor, torch.Tensor],
    generator: torch.Generator | None,
    dataset_size: int,
    discriminator: nn.Module | None,
) -> Latent:
    """The latent term of `cfg.objective` (not the ELBO) for the batch's forward pass
    `out` and its KL, (batch mean (), per dimension (B, D))."""
    if cfg.objective == "tcvae":
        t = divergences.tc_decomposition(out.z, out.mu, out.logvar, dataset_size, cfg.tc_estimator)
        mi, tc, dim_kl = t.mi.mean(), t.tc.mean(), t.dim_kl.mean()
        term = cfg.mi_weight * mi + cfg.tc_weight * tc + cfg.dim_kl_weight * dim_kl
        ramp = losses.beta_at(step, 1.0, cfg.kl_warmup_steps)
        return Latent(ramp * term, (mi.detach(), tc.detach(), dim_kl.detach()))
    if cfg.objective == "factorvae":
        assert discriminator is not None, "factorvae needs its discriminator"
        tc = discriminator(out.z).float().mean()  # D's own weights are frozen here
        z = out.z.detach()
        loss = weighted_kl(cfg, step, *kl) + cfg.tc_weight * tc
        return Latent(loss, (tc.detach(),), z, permute_dims(z, generator))
    prior = prior_draws(model, out.z.shape[0], generator)
    mmd = divergences.mmd(out.z, prior, cfg.mmd_kernel)
    if cfg.objective == "wae_mmd":
        return Latent(cfg.mmd_weight * mmd, (mmd.detach(),))
    alpha = cfg.info_alpha
    kl_weight = (1.0 - alpha) * losses.beta_at(step, 1.0, cfg.kl_warmup_steps)
    loss = kl_weight * kl[0] + (alpha + cfg.mmd_weight - 1.0) * mmd
    return Latent(loss, (mmd.detach(),))


def deterministic(cfg: LossConfig) -> bool:
    """Whether z is the posterior mean (WAE's deterministic encoder): the noise is 0."""
    return cfg.objective == "wae_mmd" and cfg.wae_encoder == "deterministic"


def check(model: VAE, cfg: LossConfig, processes: int) -> None:
    """Refuse what `cfg.objective` cannot do with this model or run (see the module's doc)."""
    name = cfg.objective
    if name == "elbo":
        return
    posterior = model.posterior_kind
    prior = getattr(model, "prior", STANDARD_PRIOR)
    fix = "use loss.objective elbo"
    if not model.has_density:
        why = f"a posterior with a density; a model.posterior {posterior} model has none"
    elif name == "tcvae" and posterior != GAUSSIAN:
        why = f"the diagonal Gaussian posterior; model.posterior {posterior} is another"
        fix = "use model.posterior gaussian, or loss.objective factorvae"
    elif name == "tcvae" and prior != STANDARD_PRIOR:
        why = f"the N(0, I) prior its decomposition is written for; model.prior is {prior}"
        fix = "use model.prior standard, or loss.objective factorvae"
    elif processes > 1:
        why = "the whole batch in one process; torchrun shards it"
        fix = "train it in one process"
    else:
        return
    raise ConfigError(f"loss.objective {name} needs {why}: {fix}")
