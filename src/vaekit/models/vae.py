"""The variational autoencoder: encoder -> q(z|x), reparameterized z, decoder -> p(x|z).

The model protocol: an encoder is any nn.Module that maps x (B, C, H, W) to features
(B, F), from which VAE's two linear heads predict the posterior's mean and log-variance,
or directly to a pair (mu, logvar), each (B, D). A decoder is any nn.Module that maps z
(B, D) to the likelihood's parameters (B, C*k, H, W): Bernoulli logits, or Gaussian /
Laplace locations, with k = 2 when the decoder also predicts log-scales. A
class-conditional VAE passes the label embedding (B, E) to the encoder as a second
argument and appends it to z for the decoder.

A spatial latent (`latent_shape=(C_z, h, w)`, as the autoencoders of latent diffusion
use) is a posterior of C_z x h x w independent Gaussians: the encoder returns (mu, logvar)
as maps (B, C_z, h, w) and the decoder takes z as a map. Inside the VAE, mu, logvar and z
are flattened to (B, D), D = C_z*h*w, so the KL (per element), the ELBO, importance
sampling, sampling and interpolation are the vector latent's; `latents(z)` gives the
map back. The built-in MLP and conv VAEs are built the same way, by `VAE.from_config`,
which, with config.json's record of a VAE and saving and loading, is the base class's,
`Pretrained` (pretrained.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import limits, losses
from ..devices import check_device
from ..errors import ConfigError, DataError
from ..normalize import Normalization
from . import protocol
from .latent_paths import check_method, latent_path
from .pretrained import Pretrained, resolve

DECODE_ROWS = 4096  # latents decoded at once by sample() and interpolate()


@dataclass
class VAEOutput:
    mu: torch.Tensor  # (B, D) posterior mean (a spatial latent flattened: see VAE.latents)
    logvar: torch.Tensor  # (B, D) posterior log-variance
    z: torch.Tensor  # (B, D) a reparameterized sample
    params: torch.Tensor  # (B, C*k, H, W) likelihood parameters (Bernoulli: logits)


class VAE(Pretrained):
    """A VAE with a diagonal Gaussian posterior, an N(0, I) prior and a pixel likelihood.

    `VAE(encoder, decoder, latent_dim=16, input_shape=(1, 28, 28))` wraps any encoder
    and decoder that follow the protocol above (see the module docstring); their classes
    carry `@vaekit.register(name)` so that config.json can name them (unregistered ones
    save their weights; loading then takes them: `from_pretrained(path, encoder=...)`).

    One units contract: `encode`, `decode_images`, `reconstruct`, `sample`, `interpolate`
    (and `vaekit.evaluate`) take and give the user's units: uint8 or float images, a table
    model's rows (N, F), the raw values of a normalised run. `prepare` brings data to the
    model's units, where `posterior`, `decode` (the likelihood's parameters), `mean`,
    `elbo_terms` and `log_importance_weights` work.

    Its settings are its constructor's arguments, each kept under its name (record.py):
    config.json records them, `from_architecture` passes them back.
    """

    module_settings = ("encoder", "decoder")
    required_settings = ("latent_dim", "input_shape", "likelihood")

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        *,
        latent_dim: int | None = None,
        input_shape: Sequence[int],
        latent_shape: Sequence[int] | None = None,
        likelihood: str = "bernoulli",
        obs_scale: float = 1.0,
        learn_scale: bool = False,
        num_classes: int = 0,
        label_dim: int = 16,
        normalization: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if latent_dim is None and latent_shape is not None:
            latent_dim = math.prod(int(s) for s in latent_shape)
        protocol.check_settings(
            latent_dim, input_shape, likelihood, obs_scale, num_classes, label_dim
        )
        protocol.check_latent_shape(latent_shape, latent_dim, num_classes)
        c, h, w = (int(s) for s in input_shape)
        self.input_shape = (c, h, w)
        # (C_z, h, w) for a spatial latent, None for a vector
        self.latent_shape = None if latent_shape is None else tuple(int(s) for s in latent_shape)
        # the map between the user's units and the model's (data/normalize.py)
        self.normalization = Normalization.from_record(normalization, c)
        self.normalization.check_likelihood(likelihood)
        self.latent_dim = int(latent_dim)  # type: ignore[arg-type]  # checked above
        self.likelihood = likelihood
        self.obs_scale = float(obs_scale)
        self.learn_scale = bool(learn_scale) and likelihood != "bernoulli"
        self.num_classes = int(num_classes)
        self.conditional = self.num_classes > 0
        self.label_dim = int(label_dim)
        if self.conditional:
            self.label_embedding = nn.Embedding(self.num_classes, self.label_dim)
        self.encoder = encoder
        self.decoder = decoder
        self._build_posterior(encoder)
        protocol.check_decoder(
            decoder,
            self.input_shape,
            self.latent_shape or self.latent_dim + (self.label_dim if self.conditional else 0),
            likelihood,
            self.learn_scale,
        )

    def _build_posterior(self, encoder: nn.Module) -> None:
        """q(z|x)'s heads on an encoder of features (a VQ-VAE's: vqvae.py)."""
        features = protocol.encoder_features(
            encoder,
            self.input_shape,
            self.latent_dim,
            self.label_dim if self.conditional else 0,
            self.latent_shape,
        )
        self.heads = features is not None  # False: the encoder gives (mu, logvar) itself
        if features is not None:
            self.mu_head = nn.Linear(features, self.latent_dim)
            self.logvar_head = nn.Linear(features, self.latent_dim)  # log sigma^2, never sigma^2

    # -- the two halves -------------------------------------------------------------------
    def _cond(self, y: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor | None:
        if not self.conditional:
            return None
        if y is None:
            raise ConfigError("this VAE is class-conditional: pass labels y")
        y = torch.as_tensor(y, device=device).long().reshape(-1)
        protocol.check_classes(y, self.num_classes)
        if y.numel() == 1 and n > 1:
            y = y.expand(n)
        return self.label_embedding(y)

    def _encoder_output(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
        """The encoder's output for x, given a conditional model's label embedding too."""
        cond = self._cond(y, x.shape[0], x.device)
        return self.encoder(x) if cond is None else self.encoder(x, cond)

    def posterior(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) for x already in the model's units (`prepare`d): the posterior mean and
        log-variance, each (B, D) in float32 (a spatial latent flattened: see `latents`).
        The training step, the bounds and the metrics call this; users call `encode`."""
        h = self._encoder_output(x, y)
        if self.heads:  # h: features (B, F)
            return self.mu_head(h).float(), losses.clamp_logvar(self.logvar_head(h))
        mu, logvar = h
        if self.latent_shape is not None:  # maps (B, C_z, h, w) -> (B, D)
            mu, logvar = mu.flatten(1), logvar.flatten(1)
        return mu.float(), losses.clamp_logvar(logvar)

    def encode(
        self, x: torch.Tensor | np.ndarray, y: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) of examples in the user's units (as `reconstruct` takes them: uint8 or
        float images, a table model's rows (N, F), unnormalised data of a normalised run):
        the posterior mean and log-variance, each (N, D), or for a spatial latent maps
        (N, C_z, h, w) as diffusers' `latent_dist` gives them; on the model's device, with
        gradients (wrap it in torch.no_grad() to save memory). `decode_images` takes the
        mean back."""
        mu, logvar = self.posterior(self.prepare(x).to(self.device), y)
        return self.latents(mu), self.latents(logvar)

    def latents(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D) as the decoder takes it: the map (B, C_z, h, w) for a spatial latent,
        else z itself."""
        protocol.check_z(z, self.latent_dim, self.latent_shape)
        return z if self.latent_shape is None else z.reshape(z.shape[0], *self.latent_shape)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """p(x|z): the likelihood's parameters (B, C*k, H, W); z is (B, D) (or, for a
        spatial latent, already the map)."""
        protocol.check_z(z, self.latent_dim, self.latent_shape)
        if self.latent_shape is not None:
            return self.decoder(self.latents(z))
        cond = self._cond(y, z.shape[0], z.device)
        if cond is not None:
            z = torch.cat([z, cond.to(z.dtype)], dim=1)
        return self.decoder(z)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        eps: torch.Tensor | None = None,
    ) -> VAEOutput:
        mu, logvar = self.posterior(x, y)
        z = losses.reparameterize(mu, logvar, generator, eps=eps)
        return VAEOutput(mu, logvar, z, self.decode(z, y))

    # -- the likelihood -------------------------------------------------------------------
    def _split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
        c = self.input_shape[0]
        if self.learn_scale:
            return params[:, :c], params[:, c:]
        log_scale = math.log(self.obs_scale)
        return params, (2.0 * log_scale if self.likelihood == "gaussian" else log_scale)

    def log_likelihood(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per example (B,), summed over pixels."""
        loc, scale = self._split(params)
        if self.likelihood == "bernoulli":
            return losses.log_bernoulli(x, loc)
        if self.likelihood == "gaussian":
            return losses.log_gaussian(x, loc, scale)
        return losses.log_laplace(x, loc, scale)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The data a parameter tensor stands for, in the model's units (B, C, H, W):
        in [0, 1] for images and other bounded data."""
        loc, _ = self._split(params)
        if self.likelihood == "bernoulli":
            return torch.sigmoid(loc.float())
        return loc.float().clamp(0.0, 1.0) if self.normalization.bounded else loc.float()

    def set_normalization(self, normalization: Normalization, source: str = "the data") -> None:
        """Use `normalization` (fitted on `source`, the training data) between the user's
        units and the model's."""
        normalization.check_likelihood(self.likelihood, source)
        self.normalization = Normalization.from_record(normalization.record(), self.input_shape[0])

    @property
    def is_table(self) -> bool:
        """A model of table rows (N, F), held as F channels of 1x1."""
        return tuple(self.input_shape[1:]) == (1, 1)

    def prepare(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Data in the user's units (a tensor or numpy array: uint8 read as x / 255, or
        float; a table model also takes rows (N, F)) as the model reads them: float32
        (N, C, H, W), normalised as the training data were."""
        return self.normalization.to_model(protocol.as_input(x, self.input_shape))

    # -- objectives -----------------------------------------------------------------------
    def elbo_terms(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        out: VAEOutput | None = None,
    ) -> tuple[losses.ELBOTerms, torch.Tensor]:
        """Per-example -log p(x|z) and KL, and the per-dimension KL (B, D)."""
        out = out if out is not None else self(x, y, generator)
        kl_per_dim = losses.kl_standard_normal(out.mu, out.logvar)
        terms = losses.ELBOTerms(recon=-self.log_likelihood(x, out.params), kl=kl_per_dim.sum(1))
        return terms, kl_per_dim

    def log_importance_weights(
        self,
        x: torch.Tensor,
        k: int,
        y: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        eps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """log p(x, z_k) - log q(z_k|x) for z_k ~ q(z|x), as (K, B), all K in one batch."""
        b = x.shape[0]
        mu, logvar = self.posterior(x, y)
        z = losses.reparameterize(mu, logvar, generator, samples=k, eps=eps)  # (K, B, D)
        y_rep = None if y is None else torch.as_tensor(y, device=x.device).repeat(k)
        params = self.decode(z.reshape(k * b, -1), y_rep)  # (K*B, C*k, H, W)
        x_rep = x.unsqueeze(0).expand(k, *x.shape).reshape(k * b, *x.shape[1:])
        log_px_z = self.log_likelihood(x_rep, params).view(k, b)
        return log_px_z + losses.log_standard_normal(z) - losses.log_normal_diag(z, mu, logvar)

    # -- what a user does with a trained model -------------------------------------------
    @torch.no_grad()
    def sample(
        self, n: int, y: torch.Tensor | int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """n examples decoded from z ~ p(z) (`sample_prior`): the means of p(x|z) in the
        user's units, images (n, C, H, W) or a table model's rows (n, F)."""
        n = protocol.count("n", n)
        protocol.check_labels(y, n)
        limits.check_fits(
            n * math.prod(self.input_shape) * 4,
            f"sampling {n:,} images of {self.input_shape}",
            "ask for fewer (the images are held in memory together)",
        )
        device = self.device
        z = self.sample_prior(n, generator)
        if y is not None:
            y = torch.as_tensor(y, device=device).long().reshape(-1).expand(n)
        return self.decode_images(z, y)

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws of the prior p(z), (n, D): N(0, I) here (a VampPrior's: composed.py)."""
        return torch.randn((n, self.latent_dim), generator=generator, device=self.device)

    @torch.no_grad()
    def decode_images(self, z: torch.Tensor | np.ndarray, y: Any = None) -> torch.Tensor:
        """What latent codes z decode to, in the user's units: the means of p(x|z), images
        (N, C, H, W) or a table model's rows (N, F). z is shaped as `encode` returns it:
        (N, D), or for a spatial latent maps (N, C_z, h, w) (flat (N, D) too)."""
        z = torch.as_tensor(z)
        shapes = [(self.latent_dim,)] + ([self.latent_shape] if self.latent_shape else [])
        if z.dim() < 2 or tuple(z.shape[1:]) not in shapes or not z.is_floating_point():
            accepted = " or ".join(f"(N, {', '.join(map(str, s))})" for s in shapes)
            raise DataError(
                f"latent codes of shape {tuple(z.shape)} ({z.dtype}) do not fit this model, "
                f"which decodes float {accepted}, as encode returns them"
            )
        z = z.to(self.device, torch.float32).flatten(1)
        out = self.normalization.to_user(self._decoded_means(z, y))
        return out.flatten(1) if self.is_table else out

    def _decoded_means(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The images z decode to, DECODE_ROWS at a time: a decoder's activations for a huge
        n would otherwise take many times the images' own memory."""
        if z.shape[0] <= DECODE_ROWS:
            return self.mean(self.decode(z, y))
        parts = [
            self.mean(
                self.decode(z[i : i + DECODE_ROWS], None if y is None else y[i : i + DECODE_ROWS])
            )
            for i in range(0, z.shape[0], DECODE_ROWS)
        ]
        return torch.cat(parts)

    @torch.no_grad()
    def reconstruct(
        self, x: torch.Tensor | np.ndarray, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decode the posterior mean of each example: (N, C, H, W), in the user's units
        (uint8 input: [0, 1]); table rows (N, F) come back as (N, F)."""
        mu, _ = self.posterior(self.prepare(x).to(self.device), y)
        out = self.normalization.to_user(self.mean(self.decode(mu, y)))
        return out.view(x.shape) if self.is_table else out

    @torch.no_grad()
    def interpolate(
        self,
        x1: torch.Tensor | np.ndarray,
        x2: torch.Tensor | np.ndarray,
        steps: int = 10,
        method: str = "linear",
        y1: torch.Tensor | None = None,
        y2: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decode `steps` points between the posterior means of x1 and x2.

        x1, x2: (N, C, H, W) or one example (C, H, W) (a table model: rows (N, F) or one row
        (F,)), in the user's units. Returns (N, steps, C, H, W) (rows: (N, steps, F), or as
        x1 holds them). `method` is 'linear' or 'slerp' (spherical: it keeps points at the
        prior's typical radius).
        """
        steps = protocol.count("steps", steps, low=1)
        check_method(method)  # before any encoding
        x1, x2 = (torch.as_tensor(x) for x in (x1, x2))
        if x1.dim() == (1 if self.is_table else 3):  # one example
            x1, x2 = x1.unsqueeze(0), x2.unsqueeze(0)
        if x1.shape != x2.shape:
            raise ConfigError(
                f"interpolate: x1 and x2 must have one shape; got {tuple(x1.shape)} and "
                f"{tuple(x2.shape)}"
            )
        n = x1.shape[0]
        limits.check_fits(
            n * steps * math.prod(self.input_shape) * 4,
            f"{n:,} interpolations of {steps:,} steps",
            "ask for fewer steps or pairs",
        )
        mu1, _ = self.posterior(self.prepare(x1).to(self.device), y1)
        mu2, _ = self.posterior(self.prepare(x2).to(self.device), y2)
        z = latent_path(mu1, mu2, steps, method)  # (N, steps, D)
        y = None if y1 is None else torch.as_tensor(y1).repeat_interleave(steps)
        images = self.decode_images(z.reshape(n * steps, -1), y)
        per_example = x1.shape[1:] if self.is_table else images.shape[1:]  # rows as given
        return images.view(n, steps, *per_example)


def load(
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    encoder: nn.Module | None = None,
    decoder: nn.Module | None = None,
) -> VAE:
    """Load a trained model from a run directory, a model folder or `hf://OWNER/NAME`.
    Strict: the weights must match the architecture in config.json exactly, compared
    before any weight is copied. A custom architecture must be registered in this process
    (`@vaekit.register`) first, or its halves handed over built as they were trained
    (`encoder=`, `decoder=`; needed for classes that were not registered)."""
    check_device(device)  # before a download
    return VAE.from_folder(resolve(path), device, encoder, decoder)
