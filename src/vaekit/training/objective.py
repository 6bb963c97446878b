"""The training objective of one minibatch: negative ELBO (or IWAE bound), beta, free bits,
and optional perceptual and adversarial terms; another `loss.objective` (beta-TCVAE,
FactorVAE, WAE-MMD, InfoVAE) replaces the latent term (latent_objectives.py).

The adversarial term is the latent-diffusion autoencoder recipe's (taming-transformers'
`LPIPSWithDiscriminator`, hinge loss): from step `loss.adversarial_start` on, the loss
gains d_weight * g_loss with g_loss = -mean D(reconstruction) and the adaptive weight
d_weight = ||grad nll|| / (||grad g_loss|| + 1e-4), both gradients taken at the decoder's
last layer (`last_layer`), clamped to [0, 1e4], detached, times `loss.adversarial_weight`;
nll is the reconstruction term plus the perceptual one. The discriminator's own update
(hinge loss on real images and detached reconstructions) is training/adversary.py's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .. import losses
from ..config import LossConfig
from ..errors import ConfigError
from ..models import VAE, LadderVAE
from . import latent_objectives


@dataclass
class StepTerms:
    loss: torch.Tensor  # () the objective being minimised
    nelbo: torch.Tensor  # () batch-mean negative ELBO (beta = 1), for reporting
    recon: torch.Tensor  # () batch-mean -log p(x|z)
    # () batch-mean KL(q(z|x) || p(z)); for a model without a density (model.has_density
    # False: the VQ-VAE) its latent term, codebook + beta * commitment, and nelbo is then
    # recon + that term, the VQ-VAE's objective (model.term_names names them)
    kl: torch.Tensor
    # with the adversarial term on at this step: the reconstruction means (detached), for
    # the discriminator's update; the generator term g_loss and its weight (detached)
    fake: torch.Tensor | None = None
    adversarial: torch.Tensor | None = None
    adversarial_weight: torch.Tensor | None = None
    # FactorVAE's discriminator: its q(z) draws (the PatchGAN's real images are x itself)
    real: torch.Tensor | None = None
    # another objective than the ELBO: its terms, (), detached (latent_objectives.COLUMNS)
    extra: tuple[torch.Tensor, ...] = ()


@dataclass(frozen=True)
class Noise:
    """A run's source of the reparameterization noise eps ~ N(0, I): its generator and,
    under DDP, this process's place among the ranks (`rank` of `world`).

    With one process the model draws eps from `generator` itself. Under DDP every rank
    draws the noise of the whole global batch and keeps its own rows (rank::world), so a
    sharded step sees exactly the noise one process would see for the same examples (and
    the ranks' generators stay in step).
    """

    generator: torch.Generator | None = None
    rank: int = 0
    world: int = 1

    def eps(self, shape: tuple[int, ...], dim: int, device: torch.device) -> torch.Tensor | None:
        """This rank's rows (along `dim`) of the global batch's noise, `shape` being this
        rank's; None with one process (the model then draws from `generator`)."""
        if self.world == 1:
            return None
        full = list(shape)
        full[dim] *= self.world
        eps = torch.randn(full, generator=self.generator, device=device, dtype=torch.float32)
        rows = slice(self.rank, None, self.world)
        return eps[(slice(None),) * dim + (rows,)]  # eps[..., rank::world, ...]


def compute(
    model: VAE,
    x: torch.Tensor,
    y: torch.Tensor | None,
    cfg: LossConfig,
    step: int,
    noise: Noise | None = None,
    perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    *,
    discriminator: nn.Module | None = None,
    dataset_size: int = 0,
) -> StepTerms:
    """The loss of one batch x (B, C, H, W) in [0, 1] at global step `step`: summed over
    dimensions, batch-averaged.

    `noise`: where eps comes from (None: torch's global generator); under DDP x holds rows
    rank::world of a global batch and the noise is drawn for the global batch (see
    `Noise`). `discriminator`: the adversarial term's, used from step
    `cfg.adversarial_start` on (see the module's doc), or FactorVAE's.
    `dataset_size`: the training set's, for beta-TCVAE's estimator (latent_objectives.py).
    """
    noise = noise if noise is not None else Noise()
    if cfg.iw_samples > 1:
        return _iw_terms(model, x, y, cfg.iw_samples, noise)
    b, d = x.shape[0], model.latent_dim
    # a quantised posterior draws no noise: one process would not move the generator
    eps = noise.eps((b, d), 0, x.device) if model.has_density else None
    if cfg.objective != "elbo" and latent_objectives.deterministic(cfg):
        eps = torch.zeros((b, d), device=x.device)  # z = mu: WAE's deterministic encoder
    out = model(x, y, noise.generator, eps)
    terms, kl_per_dim = model.elbo_terms(x, y, out=out)
    recon, kl = terms.recon.mean(), terms.kl.mean()
    other = None
    if cfg.objective == "elbo":  # the fast path: nothing more
        loss = recon + latent_term(model, cfg, step, kl, kl_per_dim)
    else:
        other = latent_objectives.latent_loss(
            model, cfg, step, out, (kl, kl_per_dim), noise.generator, dataset_size, discriminator
        )
        loss = recon + other.loss
    nll, mean = recon, None  # nll: what the adaptive weight balances the adversary against
    if perceptual is not None and cfg.perceptual_weight > 0:
        # gradients flow through the perceptual network into the decoder: no no_grad here
        mean = model.mean(out.params)
        term = cfg.perceptual_weight * perceptual(mean, x).mean()
        loss, nll = loss + term, nll + term
    result = _terms(model, loss, (recon, kl, kl_per_dim), other)
    if discriminator is not None and adversarial_on(cfg, step):
        mean = model.mean(out.params) if mean is None else mean
        g_loss = generator_loss(discriminator(mean))
        weight = cfg.adversarial_weight * adaptive_weight(nll, g_loss, last_layer(model.decoder))
        result.loss = loss + weight * g_loss
        result.fake, result.adversarial, result.adversarial_weight = (
            mean.detach(),
            g_loss.detach(),
            weight,
        )
    return result


def _terms(
    model: VAE,
    loss: torch.Tensor,
    elbo: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    other: latent_objectives.Latent | None,
) -> StepTerms:
    """A step's terms: the ELBO's (recon, kl and the KL per dimension), another objective's
    record and draws, and a ladder's KL per layer (kl_1 ..., after the objective's)."""
    recon, kl, kl_per_dim = elbo
    result = StepTerms(loss, (recon + kl).detach(), recon.detach(), kl.detach())
    if other is not None:
        result.extra, result.real, result.fake = other.record, other.real, other.fake
    if isinstance(model, LadderVAE):
        result.extra = (*result.extra, *model.layer_kls(kl_per_dim.detach()).mean(0).unbind())
    return result


def _iw_terms(
    model: VAE, x: torch.Tensor, y: torch.Tensor | None, k: int, noise: Noise
) -> StepTerms:
    """The IWAE bound's loss with K = `k` samples (its terms are not separable: NaN)."""
    eps = noise.eps((k, x.shape[0], model.latent_dim), 1, x.device)
    log_w = model.log_importance_weights(x, k, y, noise.generator, eps)  # (K, B)
    loss = -losses.iw_bound(log_w).mean()
    nelbo = -log_w.mean()
    nan = torch.full_like(nelbo, float("nan"))
    layers = (nan,) * len(model.latent_dims) if isinstance(model, LadderVAE) else ()
    return StepTerms(loss, nelbo.detach(), nan, nan, extra=layers)


def latent_term(
    model: VAE, cfg: LossConfig, step: int, kl: torch.Tensor, kl_per_dim: torch.Tensor
) -> torch.Tensor:
    """The latent term as the loss weighs it: beta x the KL (warmed up, with free bits), or
    a VQ-VAE's codebook + beta x commitment loss as it is (see `check_objective`)."""
    if not model.has_density:
        return kl
    return latent_objectives.weighted_kl(cfg, step, kl, kl_per_dim)


def adversarial_on(cfg: LossConfig, step: int) -> bool:
    """Whether the adversarial term is on at global step `step` (the recipe's
    `adopt_weight`: off before `adversarial_start`)."""
    return cfg.adversarial_weight > 0 and step >= cfg.adversarial_start


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss on its logits for real and reconstructed images:
    0.5 * (mean relu(1 - D(real)) + mean relu(1 + D(fake))), in float32."""
    real, fake = real.float(), fake.float()
    return 0.5 * (torch.relu(1.0 - real).mean() + torch.relu(1.0 + fake).mean())


def generator_loss(fake: torch.Tensor) -> torch.Tensor:
    """The generator's side of the hinge GAN: -mean D(reconstruction), in float32."""
    return -fake.float().mean()


def last_layer(decoder: nn.Module) -> torch.Tensor:
    """The parameter at which the adaptive weight compares gradients: the decoder's
    `last_layer` attribute when it has one (a parameter, or a module whose `weight` is
    taken), else the decoder's last parameter with more than one dimension, in
    registration order (the built-in decoders' `head.weight`; the autoencoderkl decoder names
    `conv_out.weight`). A decoder without such a parameter cannot take the term."""
    layer = getattr(decoder, "last_layer", None)
    if isinstance(layer, nn.Module):
        layer = getattr(layer, "weight", None)
    if isinstance(layer, torch.Tensor) and layer.requires_grad:
        return layer
    weights = [p for p in decoder.parameters() if p.dim() > 1 and p.requires_grad]
    if not weights:
        raise ConfigError(
            f"loss.adversarial_weight needs a decoder with a trainable weight of more than one "
            f"dimension (or a `last_layer` attribute); {type(decoder).__name__} has none. Set "
            "loss.adversarial_weight 0"
        )
    return weights[-1]


def adaptive_weight(nll: torch.Tensor, g_loss: torch.Tensor, layer: torch.Tensor) -> torch.Tensor:
    """The latent-diffusion recipe's weight of the generator term (before
    `loss.adversarial_weight`): ||d nll / d layer|| / (||d g_loss / d layer|| + 1e-4),
    clamped to [0, 1e4] and detached. A gradient that does not reach `layer` counts as 0."""
    grads = []
    for value in (nll, g_loss):
        (grad,) = torch.autograd.grad(value, layer, retain_graph=True, allow_unused=True)
        grads.append(torch.zeros((), device=layer.device) if grad is None else grad.float())
    weight = torch.linalg.vector_norm(grads[0]) / (torch.linalg.vector_norm(grads[1]) + 1e-4)
    return weight.clamp(0.0, 1e4).detach()


def check_objective(model: VAE, cfg: LossConfig) -> None:
    """The loss options a model can take: the KL's weight, warm-up and free bits, and the
    IWAE bound need a posterior with a density (a VQ-VAE's latent term is weighed by
    model.commitment); another objective's: latent_objectives.check."""
    if model.has_density and cfg.free_bits > 0 and not model.closed_form_kl:
        prior = getattr(model, "prior", "standard")
        raise ConfigError(
            f"loss.free_bits acts on each latent dimension's KL, which a model.posterior "
            f"{model.posterior_kind}, model.prior {prior} model has not ({model.no_kl_per_dim})"
            ": set loss.free_bits 0"
        )
    if model.has_density:
        return
    asked = [
        what
        for what, on in (
            (f"loss.beta {cfg.beta}", cfg.beta != 1.0),
            (f"loss.kl_warmup_steps {cfg.kl_warmup_steps}", cfg.kl_warmup_steps > 0),
            (f"loss.free_bits {cfg.free_bits}", cfg.free_bits > 0),
            (f"loss.iw_samples {cfg.iw_samples}", cfg.iw_samples > 1),
        )
        if on
    ]
    if asked:
        raise ConfigError(
            f"{asked[0]} acts on a Gaussian posterior's KL; a model.posterior "
            f"{model.posterior_kind} model has none (its codebook and commitment losses are "
            "weighed by model.commitment): leave it at its default"
        )


class Objective(nn.Module):
    """`compute` as a module, so that DistributedDataParallel wraps the whole forward pass
    (its gradient hooks need the forward to go through the wrapper): a batch and its
    global step are all a call needs; the noise source, the perceptual distance and the
    discriminator are the objective's own."""

    def __init__(
        self,
        model: VAE,
        cfg: LossConfig,
        noise: Noise,
        perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        discriminator: nn.Module | None = None,
        dataset_size: int = 0,
    ) -> None:
        super().__init__()
        check_objective(model, cfg)
        latent_objectives.check(model, cfg, noise.world)
        self.model, self.cfg, self.noise = model, cfg, noise
        self.dataset_size = dataset_size  # beta-TCVAE's N
        self._perceptual = [perceptual]  # a list: frozen, so not a submodule DDP would sync
        self._discriminator = [discriminator]  # updated by training/adversary.py, not here

    def forward(self, x: torch.Tensor, y: torch.Tensor | None, step: int) -> StepTerms:
        # `compute` is looked up at call time, so a patched objective.compute is honoured
        return compute(
            self.model,
            x,
            y,
            self.cfg,
            step,
            self.noise,
            self._perceptual[0],
            discriminator=self._discriminator[0],
            dataset_size=self.dataset_size,
        )
