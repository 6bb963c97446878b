"""How a VQ-VAE uses its codebook over a set of examples: the perplexity of the code
frequencies (exp of their entropy: K when every code is used equally, 1 when one code
takes everything) and the fraction of the K codes used at least once."""

from __future__ import annotations

from typing import Any, cast

import torch

from ..models import VAE, VQVAE
from ..models.quantizer import perplexity, usage


@torch.no_grad()
def code_counts(model: VAE, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """How many latents of the examples x (user's units) each code took: (K,) int64."""
    model = cast(VQVAE, model)
    quantize = model.quantize
    device = next(model.parameters()).device
    counts = torch.zeros(quantize.codebook_size, dtype=torch.long, device=device)
    was_training = model.training
    model.eval()  # no codebook update, no restart
    try:
        for i in range(0, x.shape[0], batch_size):
            xb = model.prepare(x[i : i + batch_size].to(device))
            counts += model.quantized(xb).counts
    finally:
        model.train(was_training)
    return counts


def codebook_stats(model: VAE, x: torch.Tensor, batch_size: int = 1000) -> dict[str, Any]:
    """perplexity, codebook_usage (a fraction), codes_used and codebook_size over x."""
    counts = code_counts(model, x, batch_size)
    return {
        "perplexity": perplexity(counts),
        "codebook_usage": usage(counts),
        "codes_used": int((counts > 0).sum()),
        "codebook_size": int(counts.numel()),
    }
