"""pythae's side of `families.py`: its models on vaekit's own encoder and decoder modules.

pythae 0.1.2 is not a vaekit dependency: `make bench-families-deps` installs it (with the
few packages it imports that vaekit's venv lacks, each `--no-deps`, so pip never pulls a
torch) into benchmarks/.pythae, which this module puts on sys.path.

Each pythae model gets the *same networks* as vaekit's side: a vaekit model of the base
architecture (the "twin", started from the weights vaekit's run started from) lends its
encoder (with its mean and log-variance heads) and decoder to pythae's `BaseEncoder` /
`BaseDecoder` wrappers below, so pythae's model, loss and trainer train the twin's modules.
After training, the twin *is* the trained pythae network as a vaekit model, and
families.py evaluates it with the same code as vaekit's own side. Where pythae's model
has parts of its own (the VQ-VAE's codebook, the VampPrior's pseudo-inputs, the IAF
flow), `Side` adapters below use them for the density (or the codebook is copied into the
twin's quantiser).

Training is pythae's `BaseTrainer` (FactorVAE: its `AdversarialTrainer`), as a user runs
it, stopped by a callback once the process has spent the CPU budget since training began.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from vaekit import losses
from vaekit.models import VAE

PYTHAE_DIR = Path(__file__).resolve().parent / ".pythae"
INSTALL = "make bench-families-deps"


def import_pythae() -> Any:
    """The pythae package from benchmarks/.pythae, or SystemExit naming the install step."""
    if PYTHAE_DIR.is_dir() and str(PYTHAE_DIR) not in sys.path:
        sys.path.append(str(PYTHAE_DIR))  # after vaekit's venv: its torch and numpy win
    try:
        import pythae
    except ImportError as e:
        raise SystemExit(f"pythae is not installed ({e}); run `{INSTALL}` first") from None
    import logging

    logging.getLogger("pythae").setLevel(logging.WARNING)
    return pythae


def _hold(wrapper: torch.nn.Module, twin: VAE, parts: tuple[str, ...]) -> None:
    """The twin, unregistered, and its `parts` as the wrapper's own modules: pythae's
    encoder and decoder then hold disjoint parameters (its AdversarialTrainer's optimizer
    takes both lists, and a parameter in both would be stepped twice)."""
    object.__setattr__(wrapper, "twin", twin)
    wrapper.parts = torch.nn.ModuleList([getattr(twin, p) for p in parts if hasattr(twin, p)])


def wrappers() -> tuple[type, type]:
    """pythae's encoder and decoder classes around a vaekit twin's modules."""
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):  # type: ignore[misc]
        def __init__(self, twin: VAE, vq: bool = False, deterministic: bool = False) -> None:
            BaseEncoder.__init__(self)
            self.vq, self.deterministic = vq, deterministic
            _hold(self, twin, ("encoder", "mu_head", "logvar_head", "pre_quant"))

        def forward(self, x: torch.Tensor) -> Any:
            if self.vq:  # z_e, a map (B, C, h, w): pythae quantises each cell
                return ModelOutput(embedding=self.twin.pre_quantize(x))
            mu, logvar = self.twin.posterior(x)
            if self.deterministic:  # pythae's WAE is an autoencoder: z is the mean
                return ModelOutput(embedding=mu)
            return ModelOutput(embedding=mu, log_covariance=logvar)

    class Decoder(BaseDecoder):  # type: ignore[misc]
        def __init__(self, twin: VAE) -> None:
            BaseDecoder.__init__(self)
            _hold(self, twin, ("decoder",))

        def forward(self, z: torch.Tensor) -> Any:
            params = self.twin.decode(z.flatten(1))
            if self.twin.likelihood == "bernoulli":  # pythae's BCE reads probabilities
                return ModelOutput(reconstruction=torch.sigmoid(params))
            return ModelOutput(reconstruction=params)  # pythae's MSE reads the mean

    return Encoder, Decoder


def build(
    name: str, twin: VAE, settings: dict[str, Any], batch_size: int, lr: float, out: Path
) -> Any:
    """pythae's model `name` on the twin's networks, its trainer class and the trainer's
    config (its files under `out`): (model, trainer class, trainer config)."""
    import pythae.models as pm
    from pythae.trainers import (
        AdversarialTrainer,
        AdversarialTrainerConfig,
        BaseTrainer,
        BaseTrainerConfig,
    )

    encoder_cls, decoder_cls = wrappers()
    common: dict[str, Any] = {"input_dim": tuple(twin.input_shape)}
    if name != "VQVAE":
        common["latent_dim"] = twin.latent_dim
    if name not in ("VQVAE", "WAE_MMD"):
        common["reconstruction_loss"] = "bce"
    model_cls = getattr(pm, name)
    config_cls = getattr(pm, f"{name}Config", None) or getattr(pm, f"{name}_Config")
    config = config_cls(**common, **settings)
    encoder = encoder_cls(twin, vq=name == "VQVAE", deterministic=name == "WAE_MMD")
    model = model_cls(config, encoder=encoder, decoder=decoder_cls(twin))
    shared = {"output_dir": str(out), "per_device_train_batch_size": batch_size, "no_cuda": True}
    if name == "FactorVAE":  # its discriminator has an optimizer of its own
        trainer_config = AdversarialTrainerConfig(
            **shared,
            num_epochs=10_000,
            autoencoder_learning_rate=lr,
            discriminator_learning_rate=1e-4,
            discriminator_optimizer_params={"betas": (0.5, 0.9)},
        )
        return model, AdversarialTrainer, trainer_config
    return model, BaseTrainer, BaseTrainerConfig(**shared, num_epochs=10_000, learning_rate=lr)


class _Spent(Exception):
    """Raised by the budget callback to end pythae's training loop."""


def train(model: Any, trainer_cls: type, config: Any, x: torch.Tensor, budget_s: float) -> dict:
    """Train with pythae's trainer until `budget_s` CPU seconds since training began; the
    steps, samples and CPU seconds it took."""
    from pythae.data.datasets import BaseDataset
    from pythae.trainers.training_callbacks import TrainingCallback

    clock: dict[str, Any] = {"steps": 0}

    class Budget(TrainingCallback):  # type: ignore[misc]
        def on_train_begin(self, training_config: Any, **kwargs: Any) -> None:
            clock["t0"] = time.process_time()

        def on_train_step_end(self, training_config: Any, **kwargs: Any) -> None:
            clock["steps"] += 1
            clock["cpu_s"] = time.process_time() - clock["t0"]
            if clock["cpu_s"] >= budget_s:
                raise _Spent

    data = BaseDataset(x.float() / 255.0, torch.zeros(x.shape[0]))
    trainer = trainer_cls(model, data, None, training_config=config, callbacks=[Budget()])
    try:
        trainer.train()
    except _Spent:
        pass
    model.eval()
    steps = clock["steps"]
    return {"steps": steps, "samples": steps * config.per_device_train_batch_size,
            "cpu_s": clock["cpu_s"]}  # fmt: skip


def copy_codebook(model: Any, twin: VAE) -> None:
    """pythae's trained codebook into the twin's quantiser (the same nearest-code rule)."""
    with torch.no_grad():
        twin.quantize.embedding.weight.copy_(model.quantizer.embeddings.weight)


# -- the densities of pythae's models with parts of their own ---------------------------------
def vamp_log_prior(model: Any, twin: VAE, z: torch.Tensor) -> torch.Tensor:
    """log p(z) under pythae's trained VampPrior: the mean over its pseudo-inputs u_k of
    N(z; mu(u_k), sigma(u_k)^2), the encoder's posterior at each. z (..., D) -> (...)."""
    c = model.number_components
    u = model.pseudo_inputs(model.idle_input.to(z.device)).reshape(c, *twin.input_shape)
    mu, logvar = twin.posterior(u)  # (C, D): the twin's encoder is pythae's
    per = losses.log_normal_diag(z.unsqueeze(-2), mu, logvar)  # (..., C)
    return torch.logsumexp(per, -1) - math.log(c)


def iaf_flow(model: Any, z0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z_T and log |det dz_T/dz_0| of pythae's trained IAF for z0 (N, D)."""
    out = model.iaf_flow.inverse(z0)
    return out.out, out.log_abs_det_jac


class PythaeDensity:
    """A pythae model whose prior (VampPrior) or posterior (IAF) is its own: the bound and
    the importance weights written out from its trained parts."""

    def __init__(self, twin: VAE, pythae_model: Any, kind: str) -> None:
        self.model, self.p, self.kind, self.density = twin, pythae_model, kind, True

    def _log_w(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mu, logvar = self.model.posterior(x)  # (B, D)
        z0 = mu + torch.exp(0.5 * logvar) * eps  # (K, B, D)
        log_q = losses.log_normal_diag(z0, mu, logvar)
        if self.kind == "iaf":
            zt, ladj = iaf_flow(self.p, z0.reshape(-1, z0.shape[-1]))
            z, log_q = zt.reshape(z0.shape), log_q - ladj.reshape(log_q.shape)
            log_p = losses.log_standard_normal(z)
        else:
            z, log_p = z0, vamp_log_prior(self.p, self.model, z0)
        k, b = eps.shape[:2]
        params = self.model.decode(z.reshape(k * b, -1))
        x_rep = x.unsqueeze(0).expand(k, *x.shape).reshape(k * b, *x.shape[1:])
        return self.model.log_likelihood(x_rep, params).view(k, b), log_p - log_q

    def terms(self, x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        eps = torch.randn((1, x.shape[0], self.model.latent_dim), generator=g)
        log_px_z, prior_minus_q = self._log_w(x, eps)
        return -log_px_z[0], -prior_minus_q[0]

    def log_weights(self, x: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
        eps = torch.randn((k, x.shape[0], self.model.latent_dim), generator=g)
        return sum(self._log_w(x, eps))  # type: ignore[return-value]

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """The latent reconstructions decode: the posterior mean (IAF: the flow of the base
        Gaussian's mean, as z_T has no closed-form mean)."""
        mu = self.model.posterior(x)[0]
        return iaf_flow(self.p, mu)[0] if self.kind == "iaf" else mu

    def sample(self, n: int, g: torch.Generator) -> torch.Tensor:
        if self.kind == "iaf":  # pythae samples its IAF VAE from N(0, I), as vaekit
            return self.model.sample(n, generator=g)
        c = self.p.number_components  # a pseudo-input at random, then z ~ q(z|u)
        u = self.p.pseudo_inputs(self.p.idle_input).reshape(c, *self.model.input_shape)
        mu, logvar = self.model.posterior(u[torch.randint(c, (n,), generator=g)])
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=g)
        return self.model.decode_images(z)
