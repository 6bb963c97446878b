"""Distributed data parallel: this process's place in a torchrun job.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them the run is rank 0 of 1 and
every method here is a no-op. Ranks train disjoint shards of each global batch; rank 0
alone writes the run directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from ..errors import VaekitError

T = TypeVar("T")


class Dist:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1 and "RANK" in os.environ

    @property
    def main(self) -> bool:
        return self.rank == 0

    def setup(self, device: torch.device) -> torch.device:
        if not self.enabled:
            return device
        import torch.distributed as td

        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        if not td.is_initialized():
            td.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return device

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if `flag` is true on any rank."""
        if not self.enabled:
            return flag
        import torch.distributed as td

        t = torch.tensor([1.0 if flag else 0.0], device=device)
        td.all_reduce(t, op=td.ReduceOp.MAX)
        return bool(t.item() > 0)

    def max_(self, t: torch.Tensor) -> torch.Tensor:
        """t, in place, as its elementwise maximum over the ranks."""
        if self.enabled:
            import torch.distributed as td

            td.all_reduce(t, op=td.ReduceOp.MAX)
        return t

    def mean_(self, t: torch.Tensor) -> torch.Tensor:
        """t, in place, as its mean over the ranks (equal shards: the global-batch mean)."""
        if self.enabled:
            import torch.distributed as td

            td.all_reduce(t, op=td.ReduceOp.SUM)
            t /= self.world
        return t

    def share(self, make: Callable[[], T]) -> T:
        """make() run on rank 0 only; every rank gets its result, or raises its error."""
        if not self.enabled:
            return make()
        import torch.distributed as td

        box: list[Any] = [None]
        if self.main:
            try:
                box[0] = make()
            except VaekitError as e:
                box[0] = e
        td.broadcast_object_list(box, src=0)
        if isinstance(box[0], VaekitError):
            raise box[0]
        return box[0]

    def teardown(self, finished: bool = False) -> None:
        """Leave the process group; `finished` ranks first wait for each other."""
        if self.enabled:
            import gc

            import torch.distributed as td

            if td.is_initialized():
                if finished:  # rank 0 may still be writing; leave together
                    td.barrier()
                gc.collect()  # free the DDP reducer (and its hold on the group) first
                td.destroy_process_group()
