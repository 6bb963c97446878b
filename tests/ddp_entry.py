"""`python -m vaekit` for the DDP tests, plus one check: when a rank leaves the process
group, no DistributedDataParallel wrapper is still alive (its reducer would hold the gloo
group past `destroy_process_group`, which can abort the process at exit with
"terminate called without an active exception"). A live wrapper exits the rank with 3."""

from __future__ import annotations

import gc
import sys

from torch import nn

from vaekit.cli import main
from vaekit.training.distributed import Dist

_teardown = Dist.teardown


def checked_teardown(self: Dist, finished: bool = False) -> None:
    gc.collect()
    live = sum(isinstance(o, nn.parallel.DistributedDataParallel) for o in gc.get_objects())
    if live:
        print(f"rank {self.rank}: {live} DDP wrapper(s) alive at teardown", file=sys.stderr)
        sys.stderr.flush()
        raise SystemExit(3)
    _teardown(self, finished)


if __name__ == "__main__":
    Dist.teardown = checked_teardown  # type: ignore[method-assign]
    raise SystemExit(main(sys.argv[1:]))
