"""One optimisation step, and the state it moves: optimizer, schedule, gradient scaler and
the weight average.

A step is forward (under the run's precision), backward, the gradient norm (clipped when
`optim.grad_clip` says so), and an update that happens only when the loss and the norm
are finite (openai/vdvae's guard: non-finite values never reach the weights). It returns
the step's record, left on the device; steplog.py reads records in batches.

Gradient accumulation (`train.accumulate` N): a step is then N calls, one per batch
(`part` = (i, n)): each backpropagates its loss / n into the gradients, and the last one
clips, checks and applies them. N batches of B take the update one batch of N x B would:
every loss is a batch mean, so the mean of n batch means is the big batch's (the noise
comes from the run's one generator in the same order: on the CPU, when a batch's noise is
whole blocks of 16 values, even the draws are the same).
A non-finite loss in any of the n batches, or a non-finite accumulated gradient, skips
the whole step, and with it what the forward passes moved in place (a VQ-VAE's EMA
codebook and dead-code restarts: put back as they were before the step). The
adversarial term's discriminator accumulates its gradients alike and
steps once per optimizer step, after the VAE's, so every batch of a step is judged by the
same discriminator as in one big batch; the recipe's adaptive weight is the one part
computed per batch (a ratio of gradient norms does not add up over batches).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from ..config import Config
from ..models.hierarchical import LadderVAE
from ..models.quantizer import VectorQuantizer
from .adversary import ADVERSARIAL, Adversary
from .distributed import Dist
from .latent_objectives import COLUMNS
from .objective import StepTerms
from .optim import WeightAverage, grad_norm, make_optimizer, make_schedule
from .precision import autocast

# A step's record (what `Step.__call__` returns, left on the device; steplog.py reads it):
# one value per column, in this order: the ELBO's terms, another objective's own terms
# (latent_objectives.COLUMNS: tcvae's mi, tc, dim_kl...), the gradient norm, an
# adversary's columns (adversary.Adversary.columns: the PatchGAN's generator term g_loss,
# its weight and the discriminator's hinge loss (means over the step's batches), 1.0 where
# the term was on and 1.0 where the discriminator's update was skipped), and "skipped",
# 1.0 where the VAE's update was.
TERMS = ("loss", "nelbo", "recon", "kl")


def record_columns(
    adversarial: bool | tuple[str, ...], extra: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """The names of a step record's columns, in order: with an adversary's columns (True:
    the PatchGAN's) and an objective's `extra` terms."""
    columns = ADVERSARIAL if adversarial is True else adversarial or ()
    return (*TERMS, *extra, "grad_norm", *columns, "skipped")


def optimizer_steps(batches: int, accumulate: int) -> int:
    """Optimizer steps in an epoch of `batches` batches: one per `accumulate`, and one
    for a remainder."""
    return -(-batches // accumulate)


def accumulation_part(i: int, batches: int, accumulate: int) -> tuple[int, int]:
    """Batch i of an epoch of `batches` as (its place in its optimizer step, the step's
    batches): `accumulate`, or fewer for the epoch's remainder."""
    start = i - i % accumulate
    return i - start, min(accumulate, batches - start)


class Step:
    """The update rule of a run: call it with a batch to take one step."""

    def __init__(
        self,
        model: nn.Module,
        config: Config,
        device: torch.device,
        precision: str,
        total_steps: int,
        dist: Dist,
        adversary: Adversary | None = None,
    ) -> None:
        self.optimizer = make_optimizer(model, config, device)
        self.schedule = make_schedule(self.optimizer, config, total_steps)
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
        self.average = WeightAverage(model, config.optim.ema) if config.optim.ema else None
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.grad_clip = config.optim.grad_clip
        self.device, self.precision, self.dist = device, precision, dist
        # on a GPU, reading the skip flag every step would stall the queue: fused kernels
        # take it as a tensor (found_inf) instead; on the CPU reading it is free
        self.skip_on_device = (
            device.type != "cpu"
            and bool(self.optimizer.defaults.get("fused"))
            and not self.scaler.is_enabled()
        )
        # what the model's training forward pass moves in place (a VQ-VAE's EMA codebook):
        # kept at each step's start, put back when the step is skipped ([]: a Gaussian VAE)
        # (the tensors are read at each step: moving the model replaces its buffers)
        self.quantizers = [m for m in model.modules() if isinstance(m, VectorQuantizer)]
        self.moving: list[torch.Tensor] = []
        self._before: list[torch.Tensor] = []
        self.objective: nn.Module | None = None
        self.adversary = adversary  # the discriminator's side of the adversarial term
        self.extra = COLUMNS[config.loss.objective]  # another objective's record columns
        if isinstance(model, LadderVAE):  # and a ladder's KL per layer: kl_1 ... kl_L
            self.extra = (*self.extra, *model.layer_names())
        # the records of the batches of the step being accumulated (see __call__)
        self._parts: list[torch.Tensor] = []
        self._adversarial: list[torch.Tensor] = []

    def attach(self, objective: nn.Module) -> None:
        """The objective to minimise (objective.Objective); wrapped for DDP when distributed.

        Attach after a resume has restored the weights: DDP starts every rank from rank
        0's."""
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            objective = nn.parallel.DistributedDataParallel(objective, device_ids=ids)
        self.objective = objective

    def release(self) -> None:
        """Drop the DDP wrapper (keeping the objective it wraps), so that its reducer and
        the reducer's hold on the process group go before the group is destroyed: a gloo
        group outliving `destroy_process_group` inside a live reducer could abort the
        process at exit ("terminate called without an active exception")."""
        if isinstance(self.objective, nn.parallel.DistributedDataParallel):
            self.objective = self.objective.module

    def __call__(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None,
        step: int,
        part: tuple[int, int] = (0, 1),
    ) -> torch.Tensor | None:
        """Batch x (B, C, H, W), the i-th of the n batches of optimizer step `step` (`part`
        = (i, n)). At the last, the step's record on the device (the columns of
        `record_columns`; losses are means over the n batches); else None."""
        assert self.objective is not None, "attach() the objective first"
        i, n = part
        last = i == n - 1
        if i == 0:
            self.optimizer.zero_grad(set_to_none=True)
            self._parts = []
            if self.quantizers:
                self.moving = [t for q in self.quantizers for t in q.moving_state()]
                self._before = [t.detach().clone() for t in self.moving]
        with self._no_sync(last), autocast(self.device, self.precision):
            terms = self.objective(x, y, step)
        with self._no_sync(last):
            loss = terms.loss if n == 1 else terms.loss / n  # n batch means: their mean
            self.scaler.scale(loss).backward()
        if self.adversary is not None:
            self._adversary_backward(x, terms, i, n)
        losses = [terms.loss.detach(), terms.nelbo, terms.recon, terms.kl, *terms.extra]
        if n > 1:  # the step's means: one batch of n x B would report them
            self._parts.append(torch.stack(losses))
            if not last:
                return None
            losses = list(torch.stack(self._parts).mean(0).unbind())
            self._parts = []
        self.scaler.unscale_(self.optimizer)
        norm = grad_norm(self.params, self.grad_clip)
        # 1.0 when a loss or the gradient is not finite: then no update may happen
        bad = self.dist.max_((~torch.isfinite(losses[0] + norm)).float())
        if self.skip_on_device:
            self.optimizer.found_inf = bad  # type: ignore[attr-defined]
            self.optimizer.step()
            self.schedule.step()  # take_back() undoes the steps that turn out skipped
            if self.average is not None:
                self.average.update()
        elif not bad.item():  # CPU, unfused optimizers, fp16's scaler
            self.scaler.step(self.optimizer)
            self.schedule.step()  # the schedule counts applied updates
            if self.average is not None:
                self.average.update()
        self.scaler.update()
        if self.moving:
            self._put_back(bad)
        adversarial = self._adversary_apply() if self.adversary is not None else []
        return torch.stack([*losses, norm, *adversarial, bad])  # record_columns' order

    @torch.no_grad()
    def _put_back(self, bad: torch.Tensor) -> None:
        """What the step's forward passes moved in place, as it was before them where the
        step was skipped (`bad` 1.0; on the device: no sync)."""
        skipped = bad > 0
        for now, before in zip(self.moving, self._before, strict=True):
            now.copy_(torch.where(skipped, before, now))

    def _no_sync(self, last: bool) -> Any:
        """DDP all-reduces the gradients once per optimizer step: at its last batch."""
        if last or not self.dist.enabled:
            return contextlib.nullcontext()
        assert self.objective is not None
        return self.objective.no_sync()  # type: ignore[operator]

    def _adversary_backward(self, x: torch.Tensor, terms: StepTerms, i: int, n: int) -> None:
        """Where the term is on: the discriminator's gradient on this batch (1/n of it);
        its record columns kept for `_adversary_apply`: the term's values (the PatchGAN's
        g_loss and its weight) and the discriminator's loss."""
        assert self.adversary is not None
        if i == 0:
            self._adversarial = []
        if terms.fake is None:
            return  # before adversarial_start (the same for every batch of a step)
        scale = 1.0 if n == 1 else 1.0 / n
        real = x if terms.real is None else terms.real  # FactorVAE's: q(z)'s draws
        d_loss = self.adversary.backward(real, terms.fake, first=i == 0, scale=scale)
        self._adversarial.append(torch.stack([*self.adversary.term_values(terms), d_loss]))

    def _adversary_apply(self) -> list[torch.Tensor]:
        """The discriminator's update where the term is on; the record's adversary columns
        (a non-finite discriminator loss skips its update)."""
        assert self.adversary is not None
        parts, self._adversarial = self._adversarial, []
        if not parts:
            off = torch.zeros((), device=self.device)
            return [off] * len(self.adversary.columns)  # before adversarial_start: not counted
        means = parts[0] if len(parts) == 1 else torch.stack(parts).mean(0)
        # the sum of the batches' losses (the last value): non-finite when any of them is
        d_bad = self.adversary.apply(torch.stack(parts)[:, -1].sum())
        on = torch.ones((), device=d_bad.device)
        return [*means, on, d_bad]

    def take_back(self, skipped: int) -> None:
        """The schedule counts applied updates only: undo `skipped` of its steps (on a GPU
        they were stepped before the skip flag was read)."""
        if skipped and self.skip_on_device:
            self.schedule.last_epoch -= skipped + 1
            self.schedule.step()

    def state_dict(self) -> dict[str, Any]:
        state = {
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
        }
        if self.average is not None:
            state["ema"] = self.average.state_dict()
        if self.adversary is not None:
            state["adversary"] = self.adversary.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.average is not None:
            self.average.load_state_dict(state["ema"])
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        if self.adversary is not None:
            self.adversary.load_state_dict(state["adversary"])
