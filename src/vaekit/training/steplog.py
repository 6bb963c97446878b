"""The per-step bookkeeping of an epoch: records stay on the device and are read every
SYNC_EVERY steps (on a GPU, the only host syncs), summed into the epoch's means, checked
for skipped updates and divergence, and shown on the progress bar."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import TrainingDiverged
from ..progress import bar as progress_bar
from ..wording import option
from .distributed import Dist
from .state import TrainState

SYNC_EVERY = 25  # steps between reads of the step records
COLUMNS = ("nelbo", "recon", "kl", "grad_norm")  # the record's columns 1-4, averaged
# with the adversarial term, columns 5-9 (step.Step._adversary_step): the first three averaged
# over the steps whose discriminator update was applied, the skipped ones counted
ADVERSARIAL = ("adv_loss", "adv_weight", "disc_loss")


class StepLog:
    """One epoch's step records (see step.Step): `add` each, `flush` to read them."""

    def __init__(
        self,
        state: TrainState,
        dist: Dist,
        *,
        max_skipped: int,
        run_dir: Path,
        batch_size: int,
        take_back: Callable[[int], None],
        description: str,
        total: int,
        show: bool,
        adversarial: bool = False,
        names: tuple[str, ...] = COLUMNS[:3],
    ) -> None:
        self.state, self.dist = state, dist
        self.names = (*names, COLUMNS[3])  # the model's term_names, then grad_norm
        self.max_skipped, self.run_dir, self.batch_size = max_skipped, run_dir, batch_size
        self.take_back = take_back
        self.pending: list[torch.Tensor] = []
        self.batches = 0  # the batches of the pending records (the bar counts batches)
        self.sums = [0.0] * len(COLUMNS)
        self.applied = 0  # updates applied this epoch
        self.adversarial = adversarial
        self.adv_sums = [0.0] * len(ADVERSARIAL)
        self.disc_applied = self.disc_skipped = 0  # the discriminator's updates this epoch
        self.first = state.step_in_epoch  # a resumed epoch starts part-way
        self.started = time.perf_counter()
        self.bar = progress_bar(
            total=total,
            initial=self.first,
            show=show,
            leave=False,
            desc=description,
            unit="step",
        )

    def add(self, record: torch.Tensor, batches: int = 1) -> None:
        """One optimizer step's record; `batches`: the batches it was accumulated over."""
        self.pending.append(record)
        self.batches += batches
        if len(self.pending) >= SYNC_EVERY:
            self.flush()

    def flush(self) -> None:
        """Read the pending records (one sync): sums, skipped updates, divergence."""
        if not self.pending:
            return
        rows = self.dist.mean_(torch.stack(self.pending).double()).tolist()  # global means
        self.pending.clear()
        skipped = 0
        for i, (_loss, *values, bad) in enumerate(rows):
            if self.adversarial:
                values = self._add_adversarial(values)
            if not bad:
                self.state.consecutive_skips = 0
                self.sums = [s + v for s, v in zip(self.sums, values, strict=True)]
                self.applied += 1
                continue
            skipped += 1  # never written into the weights
            self.state.consecutive_skips += 1
            if self.state.consecutive_skips >= self.max_skipped:
                self.bar.close()
                step = self.state.global_step - len(rows) + i + 1
                raise TrainingDiverged(
                    f"training diverged: {self.state.consecutive_skips} consecutive non-finite "
                    f"updates up to step {step}; the last good checkpoint in {self.run_dir} is "
                    f"kept. Lower {option('lr')} or set optim.grad_clip"
                )
        self.state.skipped_updates += skipped
        self.take_back(skipped)
        self.bar.update(self.batches)
        self.batches = 0
        if not self.bar.disable:
            rate = (self.bar.n - self.first) * self.batch_size / self.seconds()
            self.bar.set_postfix(loss=f"{rows[-1][0]:.2f}", samples_s=f"{rate:,.0f}", refresh=False)

    def _add_adversarial(self, values: list[float]) -> list[float]:
        """Count one record's adversarial columns; its other columns."""
        *values, g_loss, weight, d_loss, on, d_skipped = values
        if on and d_skipped:
            self.disc_skipped += 1
        elif on:
            self.disc_applied += 1
            self.adv_sums = [
                s + v for s, v in zip(self.adv_sums, (g_loss, weight, d_loss), strict=True)
            ]
        return values

    def seconds(self) -> float:
        return max(time.perf_counter() - self.started, 1e-9)

    def close(self) -> dict[str, float]:
        """Flush, close the bar; the epoch's train_ means and its samples per second."""
        self.flush()
        self.bar.close()
        seconds = self.seconds()
        done = self.applied
        record = {
            "seconds": seconds,
            "samples_per_s": (self.state.step_in_epoch - self.first) * self.batch_size / seconds,
        }
        for name, total in zip(self.names, self.sums, strict=True):
            record[f"train_{name}"] = total / done if done else float("nan")
        if self.adversarial:  # NaN in epochs before loss.adversarial_start
            for name, total in zip(ADVERSARIAL, self.adv_sums, strict=True):
                n = self.disc_applied
                record[f"train_{name}"] = total / n if n else float("nan")
            record["disc_skipped_updates"] = self.disc_skipped
        return record
