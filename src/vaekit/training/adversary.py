"""The discriminator's side of the adversarial term (`loss.adversarial_weight` > 0): the
PatchGAN (models/discriminator.py), its Adam (betas 0.5, 0.9, as the latent-diffusion
recipe), and its update on each step from `loss.adversarial_start` on; and, the same way,
FactorVAE's discriminator on latent codes (`LatentAdversary`, loss.objective factorvae).

The update takes the step's real images and its reconstructions, detached (the VAE's step
computed them: objective.StepTerms.fake), and minimises the hinge loss; like the VAE's
step it applies no update whose loss or gradient is not finite. The discriminator's
weights, BatchNorm statistics, optimizer and gradient scaler are part of state.pt (not of
the saved model); it draws no random numbers after its initialisation, which has a
generator of its own seeded by `train.seed`, so the run's generators are untouched.

Under DDP the term is refused: each rank's discriminator and adaptive weight would see
only its shard, and a sharded run would no longer be the one-process run.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..errors import ConfigError
from ..models import VAE
from ..models.discriminator import build_discriminator, build_latent_discriminator, patch_side
from . import objective
from .optim import OPTIMIZERS, grad_norm
from .precision import autocast

BETAS = (0.5, 0.9)  # the recipe's discriminator Adam (and Kim & Mnih's)
# the PatchGAN's columns in a step's record: g_loss, its weight, the hinge loss, on, skipped
ADVERSARIAL = ("adv_loss", "adv_weight", "disc_loss", "adv_on", "disc_skipped")


class Adversary:
    """The discriminator and its optimizer: `update(real, fake)` takes one step.

    `columns`: its columns in a step's record (step.py): the term's values
    (`term_values`), the discriminator's loss, 1.0 where the term was on, 1.0 where the
    discriminator's update was skipped."""

    columns: tuple[str, ...] = ADVERSARIAL

    def __init__(
        self, config: Config, model: VAE, device: torch.device, precision: str, distributed: bool
    ) -> None:
        cfg = config.loss
        check_fits(config, model, distributed)
        c = model.input_shape[0]
        d = build_discriminator(
            c, cfg.adversarial_channels, cfg.adversarial_layers, config.train.seed, device
        )
        self._start(d, cfg.adversarial_lr or config.optim.lr, config, device, precision)

    def term_values(self, terms: objective.StepTerms) -> list[torch.Tensor]:
        """The record's values of the term in the VAE's loss: g_loss and its weight."""
        assert terms.adversarial is not None and terms.adversarial_weight is not None
        return [terms.adversarial, terms.adversarial_weight]

    @staticmethod
    def loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """The discriminator's loss on its logits: the hinge loss."""
        return objective.hinge_d_loss(real, fake)

    def _start(
        self, d: nn.Module, lr: float, config: Config, device: torch.device, precision: str
    ) -> None:
        """Hold discriminator d, frozen outside its update, and make its Adam."""
        self.discriminator = d.requires_grad_(False)  # on in update only
        self.params = list(d.parameters())
        kwargs: dict[str, Any] = {"lr": lr, "betas": BETAS}
        self.optimizer: torch.optim.Optimizer = OPTIMIZERS["adam"](self.params, **kwargs)
        if config.optim.fused:
            try:  # as the VAE's optimizer: fused kernels where torch has them
                self.optimizer = OPTIMIZERS["adam"](self.params, fused=True, **kwargs)
            except (RuntimeError, TypeError, ValueError):
                pass
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
        self.device, self.precision = device, precision
        self.skip_on_device = (  # see step.Step: no host sync per step on a GPU
            device.type != "cpu"
            and bool(self.optimizer.defaults.get("fused"))
            and not self.scaler.is_enabled()
        )

    def update(self, x: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One discriminator step on real inputs x (images) and `fake` ones (reconstructions;
        detached); its loss and 1.0 where the update was skipped (non-finite), on the device."""
        loss = self.backward(x, fake, first=True)
        return loss, self.apply(loss)

    def backward(
        self, x: torch.Tensor, fake: torch.Tensor, *, first: bool, scale: float = 1.0
    ) -> torch.Tensor:
        """Add the gradient of `scale` x the loss on (x, fake) to the discriminator's
        (from zero when `first`): one of the batches of an accumulated step. The loss."""
        self.discriminator.requires_grad_(True)
        try:
            with autocast(self.device, self.precision):
                real_logits, fake_logits = self.logits(x.detach(), fake.detach())
            loss = self.loss(real_logits, fake_logits)
            if first:
                self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss if scale == 1.0 else loss * scale).backward()
        finally:
            self.discriminator.requires_grad_(False)
        return loss.detach()

    def logits(self, x: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The discriminator's logits on x and on `fake`: two passes, as its BatchNorm
        layers normalise each batch by its own statistics (the recipe's)."""
        return self.discriminator(x), self.discriminator(fake)

    def apply(self, loss: torch.Tensor) -> torch.Tensor:
        """The update of the gradients `backward` added up, unless they or `loss` (the
        step's losses, summed) are not finite; 1.0 where it was skipped, on the device."""
        self.scaler.unscale_(self.optimizer)
        norm = grad_norm(self.params, 0.0)
        bad = (~torch.isfinite(loss + norm)).float()
        if self.skip_on_device:
            self.optimizer.found_inf = bad  # type: ignore[attr-defined]
            self.optimizer.step()
        elif not bad.item():
            self.scaler.step(self.optimizer)
        self.scaler.update()
        return bad

    def state_dict(self) -> dict[str, Any]:
        return {
            "discriminator": self.discriminator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])


class LatentAdversary(Adversary):
    """FactorVAE's discriminator (loss.objective factorvae): LatentDiscriminator on z, its
    Adam at `loss.factorvae_lr` (Kim & Mnih's betas, the recipe's), trained on the step's
    z as q(z) (real) against z permuted per dimension (fake) with the logistic loss; the
    TC it gives the VAE's loss is latent_objectives.py's. Saved and resumed as the
    PatchGAN is. DDP is refused before (latent_objectives.check)."""

    columns = ("disc_loss", "disc_on", "disc_skipped")

    def __init__(self, config: Config, model: VAE, device: torch.device, precision: str) -> None:
        cfg = config.loss
        d = build_latent_discriminator(
            model.latent_dim, cfg.factorvae_hidden, cfg.factorvae_layers, config.train.seed, device
        )
        self._start(d, cfg.factorvae_lr, config, device, precision)

    def term_values(self, terms: objective.StepTerms) -> list[torch.Tensor]:
        return []  # its TC is a column of the objective's (latent_objectives.COLUMNS)

    def logits(self, x: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass over x and `fake` stacked: D treats each row alone (no BatchNorm), so
        this is the two passes' value with one matrix product per layer, and each layer's
        weight gradient one product rather than two added up (2-14% of a step's CPU time
        at benchmarks/families.py's settings)."""
        logits = self.discriminator(torch.cat([x, fake]))
        return logits[: x.shape[0]], logits[x.shape[0] :]

    @staticmethod
    def loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """-(mean log D(real) + mean log(1 - D(fake))) from logits, in float32."""
        real, fake = real.float(), fake.float()
        return F.softplus(-real).mean() + F.softplus(fake).mean()


def check_fits(config: Config, model: VAE, distributed: bool) -> None:
    """Refuse what the term cannot do, before any step: DDP, images too small for the
    discriminator's layers, a decoder without a weight to take the adaptive weight at."""
    cfg = config.loss
    if distributed:
        raise ConfigError(
            "loss.adversarial_weight is not supported with several processes (torchrun): "
            "train the adversarial term in one process, or set loss.adversarial_weight 0"
        )
    _, h, w = model.input_shape
    if patch_side(min(h, w), cfg.adversarial_layers) < 1:
        fits = [n for n in range(1, cfg.adversarial_layers) if patch_side(min(h, w), n) >= 1]
        fix = (
            f"lower loss.adversarial_layers to {fits[-1]}"
            if fits
            else "images under 6 pixels a side cannot take the term: set loss.adversarial_weight 0"
        )
        raise ConfigError(
            f"loss.adversarial_layers {cfg.adversarial_layers} needs images of at least "
            f"{3 * 2**cfg.adversarial_layers} pixels a side, but the model takes {h}x{w}; {fix}"
        )
    objective.last_layer(model.decoder)


def build_adversary(
    config: Config, model: VAE, device: torch.device, precision: str, distributed: bool
) -> Adversary | None:
    """The run's Adversary: FactorVAE's (loss.objective factorvae), the PatchGAN (when
    loss.adversarial_weight > 0), or None (the default)."""
    if config.loss.objective == "factorvae":
        return LatentAdversary(config, model, device, precision)
    if config.loss.adversarial_weight <= 0:
        return None
    return Adversary(config, model, device, precision, distributed)
