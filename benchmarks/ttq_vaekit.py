"""vaekit's side of time_to_quality.py: a preset trained as `vaekit train` trains it, with
the test -ELBO after every epoch appended to a JSON-lines file.

    python benchmarks/ttq_vaekit.py PRESET OUT RECORDS [THREADS]

Training itself never reads the test set (it evaluates a validation set), but this
benchmark races the reference loop to the reference's own test -ELBO, epoch by epoch, so
it measures the test set from a callback, as the reference does, and trains on all
60,000 images as the reference does (`data.val_fraction 0`). It is a measurement: nothing
here chooses a model.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import vaekit
from vaekit.data import load_data
from vaekit.evaluation.likelihood import elbo_stats


class TestSetLog(vaekit.Callback):
    """After every epoch, the epoch's record with the test set's numbers, as one line."""

    def __init__(self, x_test: Any, path: str, batch_size: int, seed: int) -> None:
        self.x_test, self.path, self.batch_size, self.seed = x_test, path, batch_size, seed

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        stats = elbo_stats(trainer.shown.eval(), self.x_test, None, self.batch_size, self.seed)
        line = {**record, **{f"test_{k}": v for k, v in stats.items()}}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")


def main() -> None:
    preset, out, records = sys.argv[1:4]
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    overrides = {"train.out": out, "train.progress": False, "train.threads": threads}
    cfg = vaekit.load_config(preset, {**overrides, "data.val_fraction": 0})
    data = load_data(cfg.data, cfg.train.seed, progress=False)
    log = TestSetLog(data.x_test, records, cfg.train.eval_batch_size, cfg.train.seed)
    vaekit.Trainer(None, cfg, data=data, callbacks=[log], overwrite=True).fit()


if __name__ == "__main__":
    main()
