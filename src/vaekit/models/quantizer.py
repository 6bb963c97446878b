"""The vector quantiser of a VQ-VAE (van den Oord et al. 2017, "Neural Discrete
Representation Learning"): a codebook of K vectors e_k, each encoder output z_e replaced
by its nearest e_k, gradients passed straight through to z_e.

    z_q = e_k, k = argmin_j ||z_e - e_j||          (the code of z_e)
    loss = ||sg[z_e] - e_k||^2 + beta * ||z_e - sg[e_k]||^2     (eq. 3: codebook + commitment)

Conventions are diffusers' `VectorQuantizer` (models/autoencoders/vae.py), so that a
VQModel export is exact: the codebook is `embedding.weight` (K, C), started uniform in
[-1/K, 1/K]; the nearest code is `argmin(torch.cdist(z, weight))` over rows z of C values;
a spatial map (B, C, h, w) is quantised cell by cell (its C-vector), codes (B, h, w).
Unlike diffusers' default (`legacy=True`, whose beta weighs the codebook term, a bug it
keeps for old checkpoints), beta weighs the commitment term, as the paper does. The terms
are summed over each example's latent values (squared norms, as in the paper, and like
every vaekit loss term: summed per example, averaged over the batch by the caller).

Options: `ema_decay` > 0 moves the codebook by exponential moving averages of the
assigned encoder outputs instead of the codebook loss (the paper's appendix A.1, with
Laplace smoothing of the counts as in Sonnet's VectorQuantizerEMA); `restart_dead` > 0
puts a code whose moving-average count (assignments per batch) falls below it onto a
random encoder output of the batch (Dhariwal et al. 2020, Jukebox). Both happen in the
training forward pass, under no_grad; the moving averages are buffers, so they are saved
and resumed with the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

USAGE_DECAY = 0.99  # the moving average of code counts that restarts read without ema_decay
# distances computed at once (rows x codes): above it, the rows go in chunks, so that a big
# codebook and a big batch never need a distance matrix of gigabytes
DISTANCES = 1 << 25
EPS = 1e-5  # Laplace smoothing of the moving-average counts


@dataclass
class Quantized:
    """What `VectorQuantizer` gives for a batch of B examples."""

    z_q: torch.Tensor  # the quantised latents, shaped like z_e, straight-through gradients
    codes: torch.Tensor  # (B, h, w) for a map, (B, D // C) for vectors: int64 code indices
    codebook: torch.Tensor  # (B,) ||sg[z_e] - e||^2 summed per example (0 with EMA updates)
    commitment: torch.Tensor  # (B,) ||z_e - sg[e]||^2 summed per example (before beta)
    counts: torch.Tensor  # (K,) how many latents each code took in this batch


def perplexity(counts: torch.Tensor) -> float:
    """exp(entropy) of the code frequencies `counts` (K,): K when all codes are used
    equally, 1 when one code takes everything."""
    p = counts.double() / counts.sum().clamp(min=1)
    return float(torch.exp(-torch.special.xlogy(p, p).sum()))


def usage(counts: torch.Tensor) -> float:
    """The fraction of the codebook used at least once in `counts` (K,)."""
    return float((counts > 0).double().mean())


class VectorQuantizer(nn.Module):
    """A codebook of `codebook_size` vectors of `code_dim` values (see the module doc)."""

    cluster_size: torch.Tensor  # (K,) buffers, with ema_decay or restart_dead
    embed_sum: torch.Tensor  # (K, C) with ema_decay

    def __init__(
        self,
        codebook_size: int,
        code_dim: int,
        commitment: float = 0.25,
        ema_decay: float = 0.0,
        restart_dead: float = 0.0,
    ) -> None:
        super().__init__()
        self.codebook_size, self.code_dim = int(codebook_size), int(code_dim)
        self.commitment = float(commitment)  # beta
        self.ema_decay = float(ema_decay)
        self.restart_dead = float(restart_dead)
        self.embedding = nn.Embedding(self.codebook_size, self.code_dim)
        self.embedding.weight.data.uniform_(-1.0 / self.codebook_size, 1.0 / self.codebook_size)
        if self.ema_decay or self.restart_dead:
            # the moving average of each code's count per batch; starts at 1 so that
            # embed_sum / cluster_size is the codebook itself
            self.register_buffer("cluster_size", torch.ones(self.codebook_size))
        if self.ema_decay:  # the codebook moves by moving averages, not by gradients
            self.embedding.weight.requires_grad_(False)
            self.register_buffer("embed_sum", self.embedding.weight.detach().clone())

    def extra_repr(self) -> str:
        return (
            f"codebook_size={self.codebook_size}, code_dim={self.code_dim}, "
            f"commitment={self.commitment}, ema_decay={self.ema_decay}, "
            f"restart_dead={self.restart_dead}"
        )

    def moving_state(self) -> list[torch.Tensor]:
        """What a training forward pass moves in place (EMA updates, restarts): the codebook
        and its moving averages; [] when neither option is on. A training step that is
        skipped puts them back (training/step.py)."""
        if not (self.ema_decay or self.restart_dead):
            return []
        averages = [self.cluster_size] + ([self.embed_sum] if self.ema_decay else [])
        return [self.embedding.weight, *averages]

    # -- shapes ---------------------------------------------------------------------------
    def rows(self, z: torch.Tensor) -> torch.Tensor:
        """z_e as rows of code_dim values (B * cells, C): a map (B, C, h, w) cell by cell
        (diffusers' order: b, h, w), a vector (B, D) in consecutive groups of C."""
        if z.dim() == 4:
            return z.permute(0, 2, 3, 1).reshape(-1, self.code_dim)
        return z.reshape(-1, self.code_dim)

    def code_shape(self, z: torch.Tensor) -> tuple[int, ...]:
        """The codes' shape for latents z: (B, h, w) for a map, (B, D // C) for vectors."""
        if z.dim() == 4:
            return (z.shape[0], z.shape[2], z.shape[3])
        return (z.shape[0], z.shape[1] // self.code_dim)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """The latents that integer `codes` stand for: (B, h, w) -> (B, C, h, w),
        (B, n) -> (B, n * C) (diffusers' `get_codebook_entry`)."""
        e = self.embedding(codes)  # (..., C)
        if codes.dim() == 3:
            return e.permute(0, 3, 1, 2).contiguous()
        return e.reshape(codes.shape[0], -1)

    # -- the quantisation -------------------------------------------------------------------
    def nearest(self, rows: torch.Tensor) -> torch.Tensor:
        """The index of the nearest code of each row (N, C), as diffusers computes it."""
        weight = self.embedding.weight.float()
        step = max(1, DISTANCES // self.codebook_size)
        with torch.no_grad():
            if rows.shape[0] <= step:  # one pass: diffusers' computation exactly
                return torch.argmin(torch.cdist(rows.float(), weight), dim=1)
            return torch.cat(
                [
                    torch.argmin(torch.cdist(part.float(), weight), dim=1)
                    for part in rows.split(step)
                ]
            )

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> Quantized:
        """Quantise z_e, a map (B, C, h, w) or vectors (B, D); in training mode also move
        the codebook (EMA) and restart dead codes, drawing from `generator`."""
        b = z.shape[0]
        rows = self.rows(z.float())  # (N, C)
        codes = self.nearest(rows)  # (N,)
        counts = torch.bincount(codes, minlength=self.codebook_size)
        e = self.embedding(codes)  # (N, C): this batch's codes, before the codebook moves
        if self.training and (self.ema_decay or self.restart_dead):
            self._update(rows.detach(), codes, counts, generator)
        shape = self.code_shape(z)
        per_example = (b, math.prod(shape[1:]) * self.code_dim)  # an empty batch too
        commitment = (rows - e.detach()).pow(2).reshape(per_example).sum(1)
        if self.ema_decay:
            codebook = torch.zeros_like(commitment)
        else:
            codebook = (e - rows.detach()).pow(2).reshape(per_example).sum(1)
        straight = rows + (e - rows).detach()  # the value of e, the gradient of z_e
        if z.dim() == 4:
            _, _, h, w = z.shape
            z_q = straight.reshape(b, h, w, self.code_dim).permute(0, 3, 1, 2)
        else:
            z_q = straight.reshape(per_example)
        return Quantized(z_q, codes.reshape(shape), codebook, commitment, counts)

    def loss(self, q: Quantized) -> torch.Tensor:
        """The latent term of the objective per example (B,): codebook + beta * commitment."""
        return q.codebook + self.commitment * q.commitment

    @torch.no_grad()
    def _update(
        self,
        rows: torch.Tensor,
        codes: torch.Tensor,
        counts: torch.Tensor,
        generator: torch.Generator | None,
    ) -> None:
        """One training batch's moving averages, EMA codebook and restarts. Under DDP the
        counts and sums are the global batch's (all-reduced), so every rank moves the
        codebook alike; restarted codes take rank 0's encoder outputs."""
        decay = self.ema_decay or USAGE_DECAY
        size = self.cluster_size
        counts = _all_reduced(counts.to(size.dtype))
        size.mul_(decay).add_(counts, alpha=1.0 - decay)
        weight = self.embedding.weight
        if self.ema_decay:
            sums = torch.zeros_like(self.embed_sum).index_add_(0, codes, rows)  # (K, C)
            self.embed_sum.mul_(decay).add_(_all_reduced(sums), alpha=1.0 - decay)
            n = size.sum()
            smoothed = (size + EPS) / (n + self.codebook_size * EPS) * n  # no division by 0
            weight.copy_(self.embed_sum / smoothed.unsqueeze(1))
        if self.restart_dead:
            dead = (size < self.restart_dead).nonzero().squeeze(1)
            if dead.numel():
                pick = torch.randint(
                    rows.shape[0], (dead.numel(),), generator=generator, device=rows.device
                )
                weight[dead] = _from_rank0(rows[pick].to(weight.dtype))
                size[dead] = self.restart_dead  # a grace of one batch before the next check
                if self.ema_decay:
                    self.embed_sum[dead] = weight[dead] * self.restart_dead


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _all_reduced(t: torch.Tensor) -> torch.Tensor:
    """t summed over the processes of a distributed run (t itself in one process)."""
    if _distributed() and torch.distributed.get_world_size() > 1:
        t = t.clone()
        torch.distributed.all_reduce(t)
    return t


def _from_rank0(t: torch.Tensor) -> torch.Tensor:
    """Rank 0's t on every process of a distributed run (t itself in one process)."""
    if _distributed() and torch.distributed.get_world_size() > 1:
        t = t.contiguous()
        torch.distributed.broadcast(t, src=0)
    return t
