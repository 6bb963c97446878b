"""The line a run prints at an epoch's end."""

from __future__ import annotations

from vaekit.training.selection import epoch_line


def test_a_slow_run_prints_its_rate_not_zero() -> None:
    record = {"epoch": 1, "train_nelbo": 12092.99, "samples_per_s": 0.4076}
    assert epoch_line(record, 1, False).endswith("12092.99 nats, 0.41 samples/s")
    record = {**record, "val_nelbo": 1.0, "samples_per_s": 8585.2}
    assert epoch_line(record, 2, True).endswith("1.00 (best) nats, 8,585 samples/s")
