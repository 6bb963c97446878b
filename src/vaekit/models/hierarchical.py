"""The hierarchical VAE: a Ladder VAE (Sønderby et al. 2016) with top-down inference.

Layers z_1 (read by the decoder) ... z_L (the top), of sizes `latent_dims` = (d_1, ..., d_L):

    generative  p(z_L) = N(0, I),  p(z_i | z_{i+1}) = N(mu_p_i, sigma_p_i^2),  p(x | z_1)
    inference   bottom-up: h_1 = encoder(x), h_{i+1} = up_i(h_i), each giving (mu^_i, sigma^_i);
                q(z_L | x) = N(mu^_L, sigma^_L^2), and top-down, for i = L-1 ... 1,
                q(z_i | z_{i+1}, x) = the precision-weighted product of N(mu^_i, sigma^_i^2)
                and the prior N(mu_p_i, sigma_p_i^2) (Sønderby et al., eq. 17-18):
                sigma_q^2 = 1 / (sigma^^-2 + sigma_p^-2),
                mu_q = (mu^ sigma^^-2 + mu_p sigma_p^-2) sigma_q^2.

The layers are one latent vector z = [z_1, z_2, ..., z_L] of D = sum(d_i) values (`latent_dim`
is D): `posterior` gives the q moments of every layer, each layer's conditioned on the
posterior mean of the layer above (so `encode`, `reconstruct` and `interpolate` are the
VAE's), the decoder reads z_1 only, `sample` draws top-down from the prior.

Layers of maps (model.arch conv with model.latent_channels > 0: `latent_shape` (C, h, w),
C = sum(c_i), latent_dims giving the channels c_i): z_i is a map (B, c_i, h, w) at the conv
encoder's latent resolution, the bottom-up nets start from the encoder's last level (B, F,
h, w) (`feature_map`), and they, the q heads and the prior nets are 3x3 convolutions
(ladder_nets.py). z is the maps stacked along the channels (B, C, h, w), flattened to (B, D)
as the VAE flattens a spatial latent (channel first: each layer's c_i*h*w values lie
together), so the algebra, the bound, the per-layer KLs (summed over the map) and the
weights below are the vectors'; the decoder reads z_1's map. Labels are refused with maps,
as the Gaussian VAE refuses them with a spatial latent.

A class-conditional ladder (model.conditional) reads the label where the Gaussian VAE does:
the encoder (so every q head, through the bottom-up pass) and the decoder (beside z_1); the
top-down prior p(z) stays one for every class, as N(0, I) does for the Gaussian VAE.

The bound, one path z ~ q per example: ELBO = log p(x|z_1) - sum_i KL(q(z_i|z_{i+1},x) ||
p(z_i|z_{i+1})), each layer's KL in closed form given the sampled layer above (kl_per_dim
(B, D) holds them, so free bits and the per-layer KLs kl_1 ... kl_L come from it). The
importance weight is log p(x|z_1) + sum_{i<L} log p(z_i|z_{i+1}) + log p(z_L) - sum_i
log q(z_i|z_{i+1}, x) (tests/test_hierarchical.py checks both against a plain loop).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import losses
from ..errors import ConfigError
from . import ladder_nets, protocol
from .hierarchy import check_dims, check_map, kl_normal, precision_weighted
from .pretrained import POSTERIORS
from .vae import VAE, VAEOutput


@dataclass
class LadderOutput(VAEOutput):
    # the prior's moments of each layer given the sampled layer above, (B, D) each (the
    # top layer's: 0 and 0, N(0, I))
    prior_mu: torch.Tensor | None = None
    prior_logvar: torch.Tensor | None = None


@dataclass
class Path:
    """One top-down pass: the sampled z (..., D) and the q and p moments of every layer."""

    z: torch.Tensor
    q_mu: torch.Tensor
    q_logvar: torch.Tensor
    p_mu: torch.Tensor
    p_logvar: torch.Tensor


class LadderVAE(VAE):
    """A VAE with a top-down hierarchy of Gaussian layers (see the module doc). The settings
    after the VAE's: `latent_dims` (d_1 ... d_L, bottom to top; `latent_dim` is their sum)
    and `ladder_hidden`, the width of the deterministic bottom-up and top-down nets. With
    `latent_shape` (C, h, w), C = sum(latent_dims), the layers are maps of c_i = latent_dims[i]
    channels at (h, w), and the nets 3x3 convolutions (ladder_nets.py)."""

    posterior_kind = "ladder"

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        *,
        latent_dims: Sequence[int] = (),
        ladder_hidden: int = 256,
        **settings: Any,
    ) -> None:
        dims = check_dims(list(latent_dims) if isinstance(latent_dims, tuple) else latent_dims)
        if not isinstance(ladder_hidden, int) or not 1 <= ladder_hidden <= 1 << 16:
            raise ConfigError(f"ladder_hidden must be from 1 to 65536; got {ladder_hidden!r}")
        shape = settings.get("latent_shape")
        shape = None if shape is None else check_map(shape, dims)
        # values per layer, and the size and shape of z_1, the decoder's input
        sizes = list(dims) if shape is None else [c * shape[1] * shape[2] for c in dims]
        bottom: dict[str, Any] = {"latent_dim": sizes[0]}
        if shape is not None:
            bottom["latent_shape"] = (dims[0], *shape[1:])
        given = settings.get("latent_dim")
        if given is not None and given not in (sizes[0], sum(sizes)):
            raise ConfigError(
                f"latent_dim {given} does not fit latent_dims {list(dims)} (their sum is "
                f"{sum(sizes)})"
            )
        self.latent_dims = list(dims)  # a list, as model.latent_dims holds it
        self.layer_sizes = sizes
        self.ladder_hidden = int(ladder_hidden)
        # the decoder reads z_1: the VAE's checks see its size, then the latent is all layers
        super().__init__(encoder, decoder, **(settings | bottom))
        self.latent_dim, self.latent_shape = sum(sizes), shape
        self.up, self.q_heads, self.p_nets = ladder_nets.build(
            self.latent_dims, self.ladder_hidden, self.features, shape is not None
        )

    def _build_posterior(self, encoder: nn.Module) -> None:
        """The encoder must give features (B, F), or for layers of maps the conv encoder's
        last level (B, F, h, w) at the latent's (h, w) (`feature_map`): the bottom-up pass
        starts from them."""
        if self.latent_shape is not None:
            self.heads = True
            self.features = ladder_nets.map_features(encoder, self.input_shape, self.latent_shape)
            return
        label = self.label_dim if self.conditional else 0
        features = protocol.encoder_features(encoder, self.input_shape, self.latent_dim, label)
        if features is None:
            raise ConfigError(
                f"a ladder VAE's encoder returns features (B, F); {type(encoder).__name__} "
                "returns (mu, logvar)"
            )
        self.heads = True
        self.features = features

    # -- the two passes ----------------------------------------------------------------------
    def bottom_up(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(mu^_i, log sigma^_i^2), each (B, d_i), for i = 1 ... L, from x in model units
        (and a conditional model's labels y, which the encoder reads as the VAE's does)."""
        if self.latent_shape is not None:  # layers of maps: the conv encoder's last level
            h = self.encoder.feature_map(x)  # type: ignore[operator]
        else:
            h = self._encoder_output(x, y)
        hats = []
        for i, head in enumerate(self.q_heads):
            if i > 0:
                h = self.up[i - 1](h)
            mu, lv = ladder_nets.moments(head(h))
            hats.append((mu, losses.clamp_logvar(lv)))
        return hats

    def prior_step(self, i: int, z_above: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p(z_i | z_{i+1}) for the 0-based layer i < L - 1: its mean and log-variance, for
        z_above (..., size of layer i + 1), each (..., size of layer i)."""
        if self.latent_shape is None:
            mu, lv = ladder_nets.moments(self.p_nets[i](z_above))
        else:  # the layer above as maps (N, c_{i+1}, h, w), the leading dims flattened
            lead, (h, w) = z_above.shape[:-1], self.latent_shape[1:]
            out = self.p_nets[i](z_above.reshape(-1, self.latent_dims[i + 1], h, w))
            mu, lv = (m.reshape(*lead, self.layer_sizes[i]) for m in ladder_nets.moments(out))
        return mu, losses.clamp_logvar(lv)

    def top_down(
        self,
        hats: list[tuple[torch.Tensor, torch.Tensor]] | None,
        eps: torch.Tensor | None,
        *,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
    ) -> Path:
        """One top-down pass over leading dims `shape` ((B,) or (K, B)): from q when `hats`
        (the bottom-up moments, broadcast over K) are given, else from the prior. `eps`
        (*shape, D) is the noise (None: drawn from `generator`); eps of zeros gives the
        mean path."""
        device = self.device
        if eps is None:
            eps = torch.randn(
                (*shape, self.latent_dim), generator=generator, device=device, dtype=torch.float32
            )
        noise = list(eps.split(self.layer_sizes, dim=-1))
        top = len(self.latent_dims) - 1
        zs: list[torch.Tensor] = []  # filled from the top: zs[0] is z_L
        q_mu, q_lv, p_mu, p_lv = [], [], [], []
        for i in range(top, -1, -1):
            if i == top:
                mp = torch.zeros((*shape, self.layer_sizes[i]), device=device)
                lp = torch.zeros_like(mp)
            else:
                mp, lp = self.prior_step(i, zs[-1])
            if hats is None:
                mq, lq = mp, lp
            elif i == top:
                mq, lq = (h.expand(*shape, -1) for h in hats[i])
            else:
                mq, lq = precision_weighted(*hats[i], mp, lp)
            zs.append(mq + torch.exp(0.5 * lq) * noise[i])
            q_mu.append(mq)
            q_lv.append(lq)
            p_mu.append(mp)
            p_lv.append(lp)

        def cat(parts: list[torch.Tensor]) -> torch.Tensor:  # z_1 first
            return torch.cat(parts[::-1], dim=-1)

        return Path(cat(zs), cat(q_mu), cat(q_lv), cat(p_mu), cat(p_lv))

    # -- the VAE's protocol --------------------------------------------------------------------
    def posterior(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q's moments of every layer (B, D), each conditioned on the mean of the layer above."""
        b = x.shape[0]
        zero = torch.zeros(b, self.latent_dim, device=x.device)
        path = self.top_down(self.bottom_up(x, y), zero, shape=(b,))
        return path.q_mu, path.q_logvar

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """p(x|z_1, y): the likelihood's parameters, for z (B, D) of all layers, or layers of
        maps (B, sum c_i, h, w) (a conditional model's decoder reads z_1 and the label
        embedding, as the VAE's; layers of maps: z_1's map (B, c_1, h, w))."""
        protocol.check_z(z, self.latent_dim, self.latent_shape)
        if self.latent_shape is not None:
            return self.decoder(self.latents(z)[:, : self.latent_dims[0]])
        z1 = z[:, : self.latent_dims[0]]
        cond = self._cond(y, z.shape[0], z.device)
        return self.decoder(z1 if cond is None else torch.cat([z1, cond.to(z1.dtype)], dim=1))

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        eps: torch.Tensor | None = None,
    ) -> LadderOutput:
        b = x.shape[0]
        path = self.top_down(self.bottom_up(x, y), eps, shape=(b,), generator=generator)
        params = self.decode(path.z, y)
        return LadderOutput(path.q_mu, path.q_logvar, path.z, params, path.p_mu, path.p_logvar)

    def elbo_terms(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        out: VAEOutput | None = None,
    ) -> tuple[losses.ELBOTerms, torch.Tensor]:
        """Per-example -log p(x|z_1) and the KL summed over layers, and the KL per dimension
        (B, D): each layer's closed-form KL to its prior given the sampled layer above."""
        out = out if out is not None else self(x, y, generator)
        assert isinstance(out, LadderOutput) and out.prior_mu is not None
        assert out.prior_logvar is not None
        kl_per_dim = kl_normal(out.mu, out.logvar, out.prior_mu, out.prior_logvar)
        terms = losses.ELBOTerms(recon=-self.log_likelihood(x, out.params), kl=kl_per_dim.sum(1))
        return terms, kl_per_dim

    def layer_kls(self, kl_per_dim: torch.Tensor) -> torch.Tensor:
        """Each layer's KL from the per-dimension KL (B, D): (B, L), layer z_1 first."""
        parts = kl_per_dim.split(self.layer_sizes, dim=1)
        return torch.stack([p.sum(1) for p in parts], dim=1)

    def layer_names(self) -> tuple[str, ...]:
        """The records' names of the layers' KLs: kl_1 (z_1) ... kl_L."""
        return tuple(f"kl_{i + 1}" for i in range(len(self.latent_dims)))

    def log_importance_weights(
        self,
        x: torch.Tensor,
        k: int,
        y: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        eps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """log p(x, z_1..z_L) - log q(z_1..z_L | x) for K top-down paths per example: (K, B)."""
        b = x.shape[0]
        path = self.top_down(self.bottom_up(x, y), eps, shape=(k, b), generator=generator)
        y_rep = None if y is None else torch.as_tensor(y, device=x.device).repeat(k)
        params = self.decode(path.z.reshape(k * b, -1), y_rep)  # (K*B, C*k, H, W)
        x_rep = x.unsqueeze(0).expand(k, *x.shape).reshape(k * b, *x.shape[1:])
        log_px_z = self.log_likelihood(x_rep, params).view(k, b)
        log_p = losses.log_normal_diag(path.z, path.p_mu, path.p_logvar)  # all layers' priors
        log_q = losses.log_normal_diag(path.z, path.q_mu, path.q_logvar)
        return log_px_z + log_p - log_q

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws of the prior, top-down: z_L ~ N(0, I), then z_i ~ p(z_i | z_{i+1}); all
        layers (n, D). `sample` decodes them (from z_1); the MMD objectives compare them."""
        return self.top_down(None, None, shape=(n,), generator=generator).z


POSTERIORS[LadderVAE.posterior_kind] = LadderVAE
