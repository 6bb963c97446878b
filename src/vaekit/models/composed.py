"""The Gaussian VAE with a richer prior or posterior: a VampPrior (priors.py), an inverse
autoregressive flow after the Gaussian posterior (flows.py), or both.

One model holds the composition: q(z|x) is the diagonal Gaussian of the VAE's heads,
followed (`IAFVAE`, model.posterior iaf) by T flow steps; p(z) is N(0, I) or (model.prior
vamp) the VampPrior. Neither KL has a closed form, so the ELBO's KL is the single-sample
Monte Carlo estimate at the sampled z,

    KL ~ log q(z|x) - log p(z),   log q(z|x) = log N(z_0; mu, sigma^2) - log |det dz/dz_0|,

and `log_importance_weights` gives log p(x|z_k) + log p(z_k) - log q(z_k|x) with exactly
the same densities, so the IW estimate of log p(x) (evaluate --iw-samples, loss.iw_samples)
is of this model. The MC KL does not split into latent dimensions (a VampPrior's density
does not factorise, and a flow mixes them): free bits are refused and the records of a
KL per dimension are left out (`no_kl_per_dim` says why), active units are kept.

Both take the latents and the labels the Gaussian VAE takes: a vector or (for a spatial
latent) a map, whose flow (`SpatialIAF`) is autoregressive over the channels at each
position; a class-conditional model's encoder and decoder read the label as the Gaussian
VAE's do, and its prior stays one p(z) for every class, as N(0, I) is: the VampPrior's
pseudo-inputs carry fixed pseudo-labels, k mod the number of classes, so the mixture is
of the conditional posteriors q(z|u_k, c_k) and approximates the aggregate posterior
E_{x,y} q(z|x, y), as the unconditional one approximates E_x q(z|x).

An IAF posterior with model.flow_context K > 0 (Kingma et al.'s full form) has one more
head on the encoder: h, K values (a linear map of the encoder's features) or, for a
spatial latent, a map of K channels at the latent's positions (a 3x3 convolution of the
conv encoder's last level, beside the mean and log-variance maps'); each flow step reads
it (flows.py). `encoded` gives (mu, logvar, h); h is None without it.

The plain Gaussian VAE (vae.py) stays as it is: closed-form KL, no flow, no prior
network; model.posterior gaussian with model.prior standard builds it, not this class.
`posterior` (encode, reconstruct, interpolate, active units) gives the flow's point at
eps = 0, f(mu), with the Gaussian's log-variance; `sample` draws from the prior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import limits, losses
from ..errors import ConfigError
from .composition import PRIORS
from .flows import IAF, SpatialIAF, hidden_width
from .pretrained import POSTERIORS
from .priors import STANDARD, VAMP, VampPrior, log_mixture
from .vae import VAE, VAEOutput

PRIOR_KINDS = (STANDARD, VAMP)
MAX_PSEUDO_INPUTS, MAX_FLOW_STEPS, MAX_FLOW_CONTEXT = 1 << 16, 64, 1 << 12
NO_KL_PER_DIM = (
    "its KL is a Monte Carlo estimate, log q(z|x) - log p(z), which does not split into "
    "latent dimensions"
)


@dataclass
class ComposedOutput(VAEOutput):
    log_q: torch.Tensor | None = None  # (B,) log q(z|x) at z, the flow's log-det included


def _whole(name: str, value: Any, high: int, low: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{name} must be a whole number from {low} to {high}; got {value!r}")
    return value


class ComposedVAE(VAE):
    """A VAE with the Gaussian posterior and the prior `prior` ('standard' or 'vamp', with
    `pseudo_inputs` K), its KL by Monte Carlo (see the module doc)."""

    priors = PRIOR_KINDS
    closed_form_kl = False
    no_kl_per_dim = NO_KL_PER_DIM

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        *,
        prior: str = STANDARD,
        pseudo_inputs: int = 500,
        **settings: Any,
    ) -> None:
        if prior not in PRIOR_KINDS:
            raise ConfigError(f"prior must be one of {', '.join(PRIOR_KINDS)}; got {prior!r}")
        _whole("pseudo_inputs", pseudo_inputs, MAX_PSEUDO_INPUTS)
        super().__init__(encoder, decoder, **settings)
        self.prior = prior
        self.pseudo_inputs = int(pseudo_inputs)
        self.vamp: VampPrior | None = None
        if prior == VAMP:
            limits.check_fits(
                pseudo_inputs * math.prod(self.input_shape) * 4 * 4,
                f"{pseudo_inputs:,} pseudo-inputs of {self.input_shape} (weights, gradients "
                "and Adam's moments)",
                "make model.pseudo_inputs smaller",
            )
            self.vamp = VampPrior(
                pseudo_inputs, self.input_shape, self.normalization.bounded, self.num_classes
            )

    # -- q(z|x) ---------------------------------------------------------------------------
    def _cond(self, y: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor | None:
        """The labels' embedding; the VampPrior's pseudo-labels are range-checked once, not
        at every step (VampPrior.checked_labels)."""
        if self.vamp is not None and y is not None and y is self.vamp.labels:
            return self.label_embedding(self.vamp.checked_labels())
        return super()._cond(y, n, device)

    def gaussian(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The Gaussian heads' mean and log-variance for x in the model's units, (B, D)
        each: q(z|x) itself, or the start of the flow."""
        return VAE.posterior(self, x, y)

    def encoded(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The Gaussian heads' mean and log-variance and the flow's context (None here)."""
        return (*self.gaussian(x, y), None)

    def transform(
        self,
        z0: torch.Tensor,
        mu: torch.Tensor,
        logvar: torch.Tensor,
        context: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z_0 (..., D) drawn from N(mu, exp(logvar)) to z and log q(z|x) (...,)."""
        return z0, losses.log_normal_diag(z0, mu, logvar)

    # -- p(z) -----------------------------------------------------------------------------
    def components(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The VampPrior's components: the Gaussian heads at the pseudo-inputs (a conditional
        model's with their pseudo-labels), (K, D) each."""
        assert self.vamp is not None
        return self.gaussian(self.vamp.inputs(), self.vamp.labels)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) for z (..., D): (...,)."""
        if self.vamp is None:
            return losses.log_standard_normal(z)
        return log_mixture(z, *self.components())

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws of p(z), (n, D): a VampPrior's are a random pseudo-input's posterior."""
        if self.vamp is None:
            return super().sample_prior(n, generator)
        return VampPrior.sample(n, *self.components(), generator)

    # -- the bounds -----------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        eps: torch.Tensor | None = None,
    ) -> ComposedOutput:
        mu, logvar, h = self.encoded(x, y)
        z0 = losses.reparameterize(mu, logvar, generator, eps=eps)
        z, log_q = self.transform(z0, mu, logvar, h)
        return ComposedOutput(mu, logvar, z, self.decode(z, y), log_q)

    def elbo_terms(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        out: VAEOutput | None = None,
    ) -> tuple[losses.ELBOTerms, torch.Tensor]:
        """Per-example -log p(x|z) and the one-sample KL log q(z|x) - log p(z), and that KL
        as (B, 1) (it does not split by dimension)."""
        out = out if out is not None else self(x, y, generator)
        assert isinstance(out, ComposedOutput) and out.log_q is not None
        kl = out.log_q - self.log_prior(out.z)
        terms = losses.ELBOTerms(recon=-self.log_likelihood(x, out.params), kl=kl)
        return terms, kl.unsqueeze(1)

    def log_importance_weights(
        self,
        x: torch.Tensor,
        k: int,
        y: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        eps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """log p(x|z_k) + log p(z_k) - log q(z_k|x) for z_k ~ q(z|x), (K, B): the flow's
        and the prior's exact densities, in float32 also under autocast (which then runs
        the decoder only)."""
        b = x.shape[0]
        with torch.autocast(x.device.type, enabled=False):
            mu, logvar, h = self.encoded(x, y)
            z0 = losses.reparameterize(mu, logvar, generator, samples=k, eps=eps)  # (K, B, D)
            z, log_q = self.transform(z0, mu, logvar, h)
            log_latent = self.log_prior(z) - log_q  # (K, B)
        y_rep = None if y is None else torch.as_tensor(y, device=x.device).repeat(k)
        params = self.decode(z.reshape(k * b, -1), y_rep).float()
        x_rep = x.unsqueeze(0).expand(k, *x.shape).reshape(k * b, *x.shape[1:])
        return self.log_likelihood(x_rep, params).view(k, b) + log_latent


class IAFVAE(ComposedVAE):
    """A ComposedVAE whose posterior is the Gaussian followed by `flow_steps` inverse
    autoregressive flow steps (flows.py): over the latent vector, or for a spatial latent
    over the channels at each position (`SpatialIAF`); with `flow_context` K > 0, each
    step also reads a context h of K values (a map of K channels) from the encoder."""

    posterior_kind = "iaf"

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        *,
        flow_steps: int = 2,
        flow_context: int = 0,
        **settings: Any,
    ) -> None:
        _whole("flow_steps", flow_steps, MAX_FLOW_STEPS)
        _whole("flow_context", flow_context, MAX_FLOW_CONTEXT, low=0)
        super().__init__(encoder, decoder, **settings)
        self.flow_steps, self.flow_context = int(flow_steps), int(flow_context)
        shape = self.latent_shape
        d = self.latent_dim if shape is None else shape[0]  # the values one MADE orders
        limits.check_fits(
            # each step's MADE (3 H d) and context layer (K (H + 2d)); x4 bytes, x4 with
            # gradients and Adam's moments
            flow_steps * (3 * hidden_width(d) * d + flow_context * (hidden_width(d) + 2 * d)) * 16,
            f"{flow_steps} flow steps over a latent of {d:,}"
            + ("" if shape is None else " channels")
            + (f" with a context of {flow_context:,}" if flow_context else ""),
            "make model.flow_steps, model.flow_context or the latent smaller",
        )
        self.flow = (
            IAF(d, flow_steps, flow_context)
            if shape is None
            else SpatialIAF(shape, flow_steps, flow_context)
        )
        self.context_head: nn.Module | None = None
        if flow_context:
            self.context_head = self._context_head(flow_context)

    def _context_head(self, k: int) -> nn.Module:
        """h's head: on the encoder's features (B, F), or for a spatial latent on the conv
        encoder's last level (`map_posterior`); an encoder that gives neither is refused."""
        if self.latent_shape is None and self.heads:
            return nn.Linear(self.mu_head.in_features, k)
        channels = getattr(self.encoder, "map_features", None)
        if self.latent_shape is not None and hasattr(self.encoder, "map_posterior"):
            assert isinstance(channels, int)
            return nn.Conv2d(channels, k, 3, padding=1)
        raise ConfigError(
            f"model.flow_context reads the encoder's features, and the encoder "
            f"{type(self.encoder).__name__} gives the posterior's moments itself; set "
            "model.flow_context 0"
        )

    def encoded(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The Gaussian's mean and log-variance (B, D) each and the flow's context h: (B,
        K), for a spatial latent (B, K, h, w); None where flow_context is 0."""
        if self.context_head is None:
            return (*self.gaussian(x, y), None)
        if self.latent_shape is not None:  # the conv encoder's maps and their features
            mu, logvar, features = self.encoder.map_posterior(x)  # type: ignore[operator]
            mu, logvar = mu.flatten(1), logvar.flatten(1)
        else:
            features = self._encoder_output(x, y)
            mu, logvar = self.mu_head(features), self.logvar_head(features)
        h = self.context_head(features).float()
        return mu.float(), losses.clamp_logvar(logvar), h

    def transform(
        self,
        z0: torch.Tensor,
        mu: torch.Tensor,
        logvar: torch.Tensor,
        context: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z, log_det = self.flow(z0, context)
        return z, losses.log_normal_diag(z0, mu, logvar) - log_det

    def posterior(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) summarised: the flow's point at eps = 0, f(mu) (B, D), which reconstruct,
        encode and interpolate use, and the Gaussian's log-variance before the flow."""
        mu, logvar, h = self.encoded(x, y)
        return self.flow(mu, h)[0], logvar


POSTERIORS[IAFVAE.posterior_kind] = IAFVAE
PRIORS[VAMP] = ComposedVAE
