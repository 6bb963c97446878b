"""How well a VQ-VAE's prior over its codes (models/code_prior.py) predicts the codes of
a set of examples: -log p(codes) in nats per example, and in bits per code and per
dimension of the examples (C x H x W values). These are the prior's numbers alone, not a
bound on log p(x): a VQ-VAE's decoder adds -log p(x|z_q), which its objective reports."""

from __future__ import annotations

import math
from typing import Any, cast

import torch

from ..models import VAE, VQVAE
from ..models.code_prior import CodePrior, bits, code_map


@torch.no_grad()
def code_nll(prior: CodePrior, codes: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """-log p(codes) of each code map (N, h, w), nats: (N,)."""
    was_training = prior.training
    prior.eval()
    try:
        parts = [prior.nll(codes[i : i + batch_size]) for i in range(0, len(codes), batch_size)]
    finally:
        prior.train(was_training)
    return torch.cat(parts)


def prior_stats(model: VAE, x: torch.Tensor, batch_size: int = 1000) -> dict[str, Any]:
    """prior_nll (nats per example), prior_bits_per_code and prior_bits_per_dim (per value
    of an example) of the codes of x (user's units) under the model's code prior."""
    model = cast(VQVAE, model)
    prior = model.code_prior
    assert prior is not None
    prior.to(model.device)
    codes = torch.cat(
        [code_map(model.encode_codes(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    )
    nats = float(code_nll(prior, codes, batch_size).mean())
    return {
        "prior_nll": nats,
        "prior_bits_per_code": bits(nats, math.prod(prior.code_shape)),
        "prior_bits_per_dim": bits(nats, math.prod(model.input_shape)),
    }
