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
from .step import record_columns

SYNC_EVERY = 25  # steps between reads of the step records
AVERAGED = ("nelbo", "recon", "kl", "grad_norm")  # over the steps whose update was applied


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
        adversarial: bool | tuple[str, ...] = False,
        names: tuple[str, ...] = AVERAGED[:3],
        extra: tuple[str, ...] = (),
        diverged: Callable[[int, int], str] | None = None,
    ) -> None:
        self.state, self.dist = state, dist
        # the one line when max_skipped updates in a row were non-finite: (skips, step) -> it
        self.diverged = diverged or self._diverged
        # the terms' columns under the model's term_names (a VQ-VAE: objective, recon, vq)
        self.names = dict(zip(AVERAGED[:3], names, strict=True))
        self.max_skipped, self.run_dir, self.batch_size = max_skipped, run_dir, batch_size
        self.take_back = take_back
        self.pending: list[torch.Tensor] = []
        self.batches = 0  # the batches of the pending records (the bar counts batches)
        self.columns = record_columns(adversarial, extra)
        # averaged over the applied updates: the ELBO's terms and the objective's own
        self.sums = dict.fromkeys((*AVERAGED, *extra), 0.0)
        self.applied = 0  # updates applied this epoch
        # an adversary's columns: its values, then "on" and "skipped"
        adversary = self.columns[self.columns.index("grad_norm") + 1 : -1]
        self.adversarial = bool(adversary)
        self.on, self.skipped = adversary[-2:] if adversary else ("", "")
        # over the steps whose discriminator update was applied (PatchGAN: adv_loss,
        # adv_weight, disc_loss)
        self.adv_sums = dict.fromkeys(adversary[:-2], 0.0)
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

    def _diverged(self, skips: int, step: int) -> str:
        return (
            f"training diverged: {skips} consecutive non-finite updates up to step {step}; "
            f"the last good checkpoint in {self.run_dir} is kept. Lower {option('lr')} or set "
            "optim.grad_clip"
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
        for i, row in enumerate(rows):
            record = dict(zip(self.columns, row, strict=True))
            if self.adversarial:
                self._add_adversarial(record)
            if not record["skipped"]:
                self.state.consecutive_skips = 0
                for name in self.sums:
                    self.sums[name] += record[name]
                self.applied += 1
                continue
            skipped += 1  # never written into the weights
            self.state.consecutive_skips += 1
            if self.state.consecutive_skips >= self.max_skipped:
                self.bar.close()
                step = self.state.global_step - len(rows) + i + 1
                raise TrainingDiverged(self.diverged(self.state.consecutive_skips, step))
        self.state.skipped_updates += skipped
        self.take_back(skipped)
        self.bar.update(self.batches)
        self.batches = 0
        if not self.bar.disable:
            rate = (self.bar.n - self.first) * self.batch_size / self.seconds()
            loss = f"{record['loss']:.2f}"  # the last step's
            self.bar.set_postfix(loss=loss, samples_s=f"{rate:,.0f}", refresh=False)

    def _add_adversarial(self, record: dict[str, float]) -> None:
        """Count one record's adversarial columns."""
        if record[self.on] and record[self.skipped]:
            self.disc_skipped += 1
        elif record[self.on]:
            self.disc_applied += 1
            for name in self.adv_sums:
                self.adv_sums[name] += record[name]

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
        for name, total in self.sums.items():
            name = self.names.get(name, name)  # the model's name of the term
            record[f"train_{name}"] = total / done if done else float("nan")
        if self.adversarial:  # NaN in epochs before loss.adversarial_start
            for name, total in self.adv_sums.items():
                n = self.disc_applied
                record[f"train_{name}"] = total / n if n else float("nan")
            record["disc_skipped_updates"] = self.disc_skipped
        return record
