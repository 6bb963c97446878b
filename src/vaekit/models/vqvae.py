"""The VQ-VAE (van den Oord et al. 2017): the VAE with a quantised posterior.

The encoder gives z_e (features (B, F) go through a linear `pre_quant` head to (B, D)); the
`quantize` module (quantizer.py) replaces each code's worth of values by its nearest
codebook vector, straight-through; the decoder reads z_q as it reads a Gaussian VAE's z.
A latent vector of D values is D / code_dim codes (one code of all D by default); a
spatial latent (C, h, w) is h x w codes of C values each, as diffusers' VQModel has them.

q(z|x) is a point mass at z_q, so there is no density without a prior over the codes:
the objective is -log p(x|z_q) + codebook + beta * commitment (the `kl` slot of
`ELBOTerms` holds that latent term; `term_names` names it `vq` in the records), and
`log_importance_weights` refuses. `sample` draws codes from the model's `code_prior` (a
gated PixelCNN, code_prior.py, trained by `vaekit train-prior` and kept beside the
weights), and refuses without one. Everything else (reconstruct, interpolate,
decode_images, save and load) is the VAE's: `posterior` gives z_q as the mean and
LOGVAR_MIN as the log-variance, the point mass as a Gaussian's moments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import limits, losses
from ..config import Config
from ..errors import ConfigError
from . import code_prior, protocol
from .code_prior import CodePrior
from .pretrained import POSTERIORS
from .quantizer import Quantized, VectorQuantizer
from .vae import VAE, VAEOutput

NO_PRIOR = (
    "a VQ-VAE samples through a prior over its codes, which this run does not have: train "
    "one with vaekit train-prior RUN"
)
NO_DENSITY = (
    "a VQ-VAE's posterior is a point mass on its codes, with no density p(x), so it has no "
    "ELBO and no importance-weighted log p(x)"
)


@dataclass
class VQOutput(VAEOutput):
    quantized: Quantized | None = None  # the codes, the codebook and commitment terms


def check_settings(
    codebook_size: Any, code_dim: Any, commitment: Any, ema_decay: Any, restart_dead: Any
) -> None:
    """The quantiser's settings, each a clear error when it cannot work."""
    if not (isinstance(codebook_size, int) and not isinstance(codebook_size, bool)):
        raise ConfigError(f"codebook_size must be a whole number >= 2; got {codebook_size!r}")
    if codebook_size < 2 or codebook_size > 1 << 20:
        raise ConfigError(f"codebook_size must be from 2 to {1 << 20}; got {codebook_size}")
    if not isinstance(code_dim, int) or isinstance(code_dim, bool) or code_dim < 0:
        raise ConfigError(f"code_dim must be a whole number >= 0; got {code_dim!r}")
    for name, value, high in (
        ("commitment", commitment, 1e6),
        ("ema_decay", ema_decay, 1.0),
        ("restart_dead", restart_dead, 1e9),
    ):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or not 0.0 <= value <= high or (name == "ema_decay" and value == 1.0):
            top = "below 1" if name == "ema_decay" else f"at most {high:g}"
            raise ConfigError(f"{name} must be a number >= 0 and {top}; got {value!r}")


class VQVAE(VAE):
    """A VAE whose posterior is a vector quantiser (see the module doc). The settings after
    the VAE's: `codebook_size` K, `code_dim` (a latent vector's values per code; 0: all of
    them; a spatial latent's codes are its C channels), `commitment` beta, `ema_decay` (0:
    the codebook learns by its loss), `restart_dead` (0: no restarts)."""

    posterior_kind = "vq"
    has_density = False
    term_names = ("objective", "recon", "vq")
    code_prior: CodePrior | None  # the prior over the codes (`attach_prior`), or None

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        *,
        codebook_size: int = 512,
        code_dim: int = 0,
        commitment: float = 0.25,
        ema_decay: float = 0.0,
        restart_dead: float = 0.0,
        **settings: Any,
    ) -> None:
        check_settings(codebook_size, code_dim, commitment, ema_decay, restart_dead)
        if settings.get("num_classes"):
            raise ConfigError(
                "a class-conditional VQ-VAE is not built yet: set model.conditional false"
            )
        super().__init__(encoder, decoder, **settings)  # calls _build_posterior
        shape = self.latent_shape
        width = shape[0] if shape is not None else (code_dim or self.latent_dim)
        if shape is None and self.latent_dim % width:
            raise ConfigError(
                f"code_dim {code_dim} must divide latent_dim {self.latent_dim} (each code "
                "takes code_dim of the latent's values)"
            )
        self.code_dim = int(code_dim)  # as given (0: the whole vector); the width: quantize
        limits.check_fits(
            codebook_size * width * 4 * (4 if ema_decay else 3),  # + Adam's moments or EMA sums
            f"a codebook of {codebook_size:,} codes of {width:,} values",
            "make model.codebook_size or the code (latent_channels, code_dim) smaller",
        )
        self.quantize = VectorQuantizer(
            codebook_size, width, float(commitment), float(ema_decay), float(restart_dead)
        )
        self.attach_prior(None)

    def _build_posterior(self, encoder: nn.Module) -> None:
        """z_e from the encoder: features (B, F) through a linear head to (B, D), or the
        encoder's own (B, D) or, for a spatial latent, its map (B, C, h, w)."""
        x = torch.zeros(1, *self.input_shape, device=next(encoder.parameters()).device)
        out = protocol.probe(encoder, "encoder", x, None, f"one image of {self.input_shape}")
        own = (1, *self.latent_shape) if self.latent_shape else (1, self.latent_dim)
        self.heads = False
        # a Gaussian's encoder (the built-in conv one of a spatial latent) gives a pair:
        # z_e is its first map, the mean's place (its second goes unused)
        self.pair = isinstance(out, (tuple, list)) and len(out) == 2
        out = out[0] if self.pair else out
        if torch.is_tensor(out) and tuple(out.shape) == own:
            return
        if torch.is_tensor(out) and out.dim() == 2 and self.latent_shape is None:
            self.heads = True
            self.pre_quant = nn.Linear(int(out.shape[1]), self.latent_dim)
            return
        raise ConfigError(
            f"the encoder {type(encoder).__name__} returned {protocol.shapes(out)} for one "
            f"image; a VQ-VAE's encoder returns features (B, F) or z_e {own} (or a pair "
            "whose first is z_e)"
        )

    # the quantiser's settings, kept by the quantiser (the record reads them here)
    @property
    def codebook_size(self) -> int:
        return self.quantize.codebook_size

    @property
    def commitment(self) -> float:
        return self.quantize.commitment

    @property
    def ema_decay(self) -> float:
        return self.quantize.ema_decay

    @property
    def restart_dead(self) -> float:
        return self.quantize.restart_dead

    # -- the quantised posterior ------------------------------------------------------------
    def pre_quantize(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """z_e for x in the model's units: (B, D), or (B, C, h, w) for a spatial latent."""
        h = self.encoder(x)
        h = h[0] if self.pair else h
        z = self.pre_quant(h) if self.heads else h
        return z.float()

    def quantized(
        self, x: torch.Tensor, y: torch.Tensor | None = None, generator: Any = None
    ) -> Quantized:
        """The quantiser's output for x in the model's units (see quantizer.Quantized)."""
        return self.quantize(self.pre_quantize(x, y), generator)

    def posterior(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x), a point mass at z_q, as a Gaussian's moments: z_q (B, D) and LOGVAR_MIN."""
        z_q = self.quantized(x, y).z_q.flatten(1)
        return z_q, torch.full_like(z_q, losses.LOGVAR_MIN)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        eps: torch.Tensor | None = None,
    ) -> VQOutput:
        q = self.quantized(x, y, generator)
        z = q.z_q.flatten(1)  # (B, D)
        point = torch.full((), losses.LOGVAR_MIN, device=z.device).expand_as(z)
        return VQOutput(z, point, z, self.decode(z, y), q)

    def elbo_terms(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        out: VAEOutput | None = None,
    ) -> tuple[losses.ELBOTerms, torch.Tensor]:
        """Per-example -log p(x|z_q) and the latent term (codebook + beta * commitment, in
        the `kl` slot), and that term as (B, 1)."""
        out = out if out is not None else self(x, y, generator)
        assert isinstance(out, VQOutput) and out.quantized is not None
        latent = self.quantize.loss(out.quantized)
        terms = losses.ELBOTerms(recon=-self.log_likelihood(x, out.params), kl=latent)
        return terms, latent.unsqueeze(1)

    def log_importance_weights(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise ConfigError(NO_DENSITY)

    # -- the prior over the codes ----------------------------------------------------------
    @property
    def has_prior(self) -> bool:
        """Whether a prior over the codes is attached (`attach_prior`): sampling needs one."""
        return self.code_prior is not None

    def attach_prior(self, prior: CodePrior | None) -> None:
        """Make `prior` (None: none) this model's prior over its codes. It is kept outside
        the model's modules: model.safetensors stays the VQ-VAE's weights alone, and the
        optimizer of a VQ-VAE's training never sees it."""
        if prior is not None and (
            prior.codebook_size != self.codebook_size or prior.code_shape != self.code_map_shape()
        ):
            raise ConfigError(
                f"a code prior over {prior.codebook_size} codes in a {prior.code_shape} map "
                f"does not fit this model's {self.codebook_size} codes in a "
                f"{self.code_map_shape()} map"
            )
        if prior is not None and not prior.model_fingerprint:  # made for this model
            prior.model_fingerprint = code_prior.fingerprint(self.state_dict())
        object.__setattr__(self, "code_prior", prior)  # not a submodule (see above)
        self.__dict__.pop("stale_prior", None)

    def sample(
        self, n: int, y: torch.Tensor | int | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """n images decoded from codes drawn from the code prior, in the user's units."""
        protocol.check_labels(y, protocol.count("n", n))
        return self.decode_images(self.sample_codes(n, generator))

    def sample_codes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws from the code prior, int64 codes shaped as `encode_codes` gives them."""
        prior = self.code_prior
        if prior is None:
            raise ConfigError(self.no_prior_reason)
        n = protocol.count("n", n)
        prior.to(self.device)
        return prior.sample(n, generator).reshape(n, *self.code_shape())

    @property
    def no_prior_reason(self) -> str:
        """Why the model cannot sample: it has no code prior, or the one beside its weights
        was trained on the codes of an earlier model (`read_prior`)."""
        return self.__dict__.get("stale_prior") or NO_PRIOR

    def read_prior(self, folder: Path) -> None:
        """The code prior saved beside the weights in `folder`, if there is one. A prior
        trained on another model's codes (the run trained further since) is left off, and
        sampling says so: the model still reconstructs, encodes and evaluates."""
        try:
            prior = code_prior.read(folder, code_prior.fingerprint(self.state_dict()))
        except code_prior.StalePrior as e:
            self.__dict__["stale_prior"] = str(e)
            return
        self.attach_prior(prior)

    def save_pretrained(
        self,
        save_directory: str | Path,
        *,
        config: Config | None = None,
        class_names: list[str] | None = None,
    ) -> Path:
        """The VAE's files, then the code prior's beside them where the model has one whose
        codes are still this model's (a model trained further since is saved without it)."""
        directory = super().save_pretrained(save_directory, config=config, class_names=class_names)
        prior = self.code_prior
        if prior is not None and prior.model_fingerprint == code_prior.fingerprint(
            self.state_dict()
        ):
            code_prior.write(directory, prior)
        return directory

    # -- codes ------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_codes(self, x: torch.Tensor | np.ndarray, y: Any = None) -> torch.Tensor:
        """The integer codes of examples in the user's units: int64 (N, h, w) for a spatial
        latent, (N, D // code_dim) for a vector."""
        return self.quantized(self.prepare(x).to(self.device), y).codes

    @torch.no_grad()
    def decode_images(self, z: torch.Tensor | np.ndarray, y: Any = None) -> torch.Tensor:
        """What latents decode to, in the user's units: float z as the VAE takes it, or
        integer codes as `encode_codes` gives them (looked up in the codebook)."""
        z = torch.as_tensor(z)
        if z.is_floating_point():
            return super().decode_images(z, y)
        return super().decode_images(self.lookup(z), y)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """z_q (N, D) (or the map) for integer codes shaped as `encode_codes` gives them."""
        codes = torch.as_tensor(codes)
        k = self.quantize.codebook_size
        shape = self.code_shape()
        if codes.dim() < 2 or tuple(codes.shape[1:]) != shape or codes.is_floating_point():
            raise ConfigError(
                f"codes of shape {tuple(codes.shape)} ({codes.dtype}) do not fit this model, "
                f"which takes integer codes (N, {', '.join(map(str, shape))})"
            )
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= k):
            raise ConfigError(f"codes must be from 0 to {k - 1}; got {int(codes.min())}.."
                              f"{int(codes.max())}")  # fmt: skip
        return self.quantize.lookup(codes.long().to(self.device))

    def code_map_shape(self) -> tuple[int, int]:
        """The codes as the prior reads them, a map (h, w): a vector's n codes are (1, n)."""
        shape = self.code_shape()
        return (shape[0], shape[1]) if len(shape) == 2 else (1, shape[0])

    def code_shape(self) -> tuple[int, ...]:
        """One example's codes: (h, w) for a spatial latent, (D // code_dim,) for a vector."""
        if self.latent_shape is not None:
            return tuple(self.latent_shape[1:])
        return (self.latent_dim // self.quantize.code_dim,)


POSTERIORS[VQVAE.posterior_kind] = VQVAE
