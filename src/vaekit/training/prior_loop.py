"""The loop that trains a code prior (models/code_prior.py) for `train_prior`
(training/prior.py): minibatches of integer code maps, the prior's NLL."""

from __future__ import annotations

import copy
import math
import sys
from typing import Any

import torch

from ..data import batch_indices, epoch_permutation
from ..errors import TrainingDiverged
from ..evaluation.prior import code_nll
from ..models.code_prior import CodePrior, bits


def fit(
    prior: CodePrior,
    train: torch.Tensor,
    val: torch.Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: bool,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Adam on the mean NLL of minibatches of codes, in each epoch's seeded order; a
    line per epoch; the history, and the epoch of the lowest validation NLL with its
    weights."""
    optimizer = torch.optim.Adam(prior.parameters(), lr=lr)
    count = math.prod(prior.code_shape)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"val_nll": math.inf}
    size = min(batch_size, len(train))  # fewer codes than a batch: one batch of them all
    for epoch in range(epochs):
        prior.train()
        order = epoch_permutation(len(train), seed, epoch).to(train.device)
        total = torch.zeros((), device=train.device)
        batches = batch_indices(order, size)
        for idx in batches:
            loss = prior.nll(train[idx]).mean()
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"the code prior's loss is not finite at epoch {epoch + 1}: lower --lr "
                    f"(now {lr:g})"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        record = {"epoch": epoch + 1, "train_nll": float(total) / len(batches)}
        record["val_nll"] = float(code_nll(prior, val, batch_size).mean())
        record["val_bits_per_code"] = bits(record["val_nll"], count)
        history.append(record)
        if record["val_nll"] < best["val_nll"]:
            weights = copy.deepcopy(prior.state_dict())
            best = {"epoch": epoch + 1, "val_nll": record["val_nll"], "weights": weights}
        if progress:
            print(
                f"prior epoch {epoch + 1}/{epochs}: train {record['train_nll']:.3f}, val "
                f"{record['val_nll']:.3f} nats per example ({record['val_bits_per_code']:.4f} "
                "bits per code)" + (" *" if best["epoch"] == epoch + 1 else ""),
                file=sys.stderr,
            )
    return history, best
