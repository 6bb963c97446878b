"""One optimisation step, and the state it moves: optimizer, schedule, gradient scaler and
the weight average.

A step is forward (under the run's precision), backward, the gradient norm (clipped when
`optim.grad_clip` says so), and an update that happens only when the loss and the norm
are finite (openai/vdvae's guard: non-finite values never reach the weights). It returns
the step's record, left on the device; steplog.py reads records in batches.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import Config
from ..objectives import StepTerms
from .adversary import Adversary
from .distributed import Dist
from .optim import WeightAverage, grad_norm, make_optimizer, make_schedule
from .precision import autocast


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
        self.objective: nn.Module | None = None
        self.adversary = adversary  # the discriminator's side of the adversarial term

    def attach(self, objective: nn.Module) -> None:
        """The objective to minimise (objectives.Objective); wrapped for DDP when distributed.

        Attach after a resume has restored the weights: DDP starts every rank from rank
        0's."""
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            objective = nn.parallel.DistributedDataParallel(objective, device_ids=ids)
        self.objective = objective

    def __call__(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None,
        step: int,
        generator: torch.Generator,
        shard: tuple[int, int] | None,
    ) -> torch.Tensor:
        """One step on batch x (B, C, H, W); its record on the device: loss, -ELBO,
        reconstruction, KL, gradient norm, [with an adversary: the columns of
        `_adversary_step`,] and 1.0 where the update was skipped."""
        assert self.objective is not None, "attach() the objective first"
        with autocast(self.device, self.precision):
            terms = self.objective(x, y, step, generator, shard)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms.loss).backward()
        self.scaler.unscale_(self.optimizer)
        norm = grad_norm(self.params, self.grad_clip)
        # 1.0 when the loss or the gradient is not finite: then no update may happen
        bad = self.dist.max_((~torch.isfinite(terms.loss.detach() + norm)).float())
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
        adversarial = self._adversary_step(x, terms) if self.adversary is not None else []
        values = [terms.loss.detach(), terms.nelbo, terms.recon, terms.kl, norm]
        return torch.stack([*values, *adversarial, bad])

    def _adversary_step(self, x: torch.Tensor, terms: StepTerms) -> list[torch.Tensor]:
        """The discriminator's update where the term is on. Its record columns: the
        generator term g_loss, its weight, the discriminator's hinge loss, 1.0 where the
        term was on, 1.0 where the discriminator's update was skipped (non-finite)."""
        assert self.adversary is not None
        if terms.fake is None or terms.adversarial is None or terms.adversarial_weight is None:
            off = torch.zeros((), device=terms.loss.device)
            return [off, off, off, off, off]  # before adversarial_start: not counted
        d_loss, d_bad = self.adversary.update(x, terms.fake)
        on = torch.ones((), device=d_loss.device)
        return [terms.adversarial, terms.adversarial_weight, d_loss, on, d_bad]

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
