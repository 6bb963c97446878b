"""Priors p(z) beside the standard normal: the VampPrior (Tomczak & Welling 2018, "VAE
with a VampPrior").

The VampPrior is the mixture of the encoder's posteriors at K learned pseudo-inputs u_k
(images in the model's units, trained with the rest of the model):

    p(z) = (1/K) sum_k q(z|u_k),   log p(z) = logsumexp_k log N(z; mu_k, sigma_k^2) - log K,

where (mu_k, log sigma_k^2) are the Gaussian heads' outputs for u_k (with an IAF
posterior, the Gaussian before the flow: the flow's density at a given z would need the
flow inverted, D sequential passes). The KL(q(z|x) || p(z)) has no closed form; the
model (composed.py) estimates it as log q(z|x) - log p(z) at its sampled z. A sample
of p(z) is a random pseudo-input's posterior: k ~ U{1..K}, z = mu_k + sigma_k * eps.
Pseudo-inputs of bounded data (images in [0, 1]) pass through hardtanh(0, 1), as the
paper's do, and start near the middle of the range. A class-conditional model's encoder
reads a label too: pseudo-input k carries the fixed pseudo-label k mod (the number of
classes), so every class has K / classes components and p(z) stays one density for all
labels (composed.py). Their range is checked when they are first read and again only after
they change (`checked_labels`), not at every step: the check reads two values, a host
sync each on a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import losses
from . import protocol

STANDARD, VAMP = "standard", "vamp"
ROWS_PER_PASS = 4_000_000  # z rows x components x D values per pass of `log_mixture`


class VampPrior(nn.Module):
    """K pseudo-inputs of `input_shape` (C, H, W); `bounded`: the data are in [0, 1];
    `classes` (a class-conditional model's): the pseudo-labels are k mod `classes`."""

    labels: torch.Tensor | None

    def __init__(
        self, count: int, input_shape: Sequence[int], bounded: bool, classes: int = 0
    ) -> None:
        super().__init__()
        start = 0.5 if bounded else 0.0
        g = torch.Generator().manual_seed(0)  # the same start for a rebuilt model
        init = start + 0.01 * torch.randn((count, *input_shape), generator=g)
        self.pseudo_inputs = nn.Parameter(init)  # (K, C, H, W)
        self.bounded = bool(bounded)
        # fixed, so rebuilt with the model rather than saved (K,) or None
        labels = torch.arange(count) % classes if classes else None
        self.register_buffer("labels", labels, persistent=False)
        self.classes = int(classes)
        self._checked: tuple[torch.Tensor, int] | None = None  # the labels last checked

    def checked_labels(self) -> torch.Tensor:
        """The pseudo-labels, their range checked if they are not the tensor last checked
        or were written in place since (its version counter moved); else no check."""
        labels = self.labels
        assert labels is not None, "an unconditional VampPrior has no pseudo-labels"
        last = self._checked
        if last is None or last[0] is not labels or last[1] != labels._version:
            protocol.check_classes(labels, self.classes)
            self._checked = (labels, labels._version)
        return labels

    def inputs(self) -> torch.Tensor:
        """The pseudo-inputs as the encoder reads them: (K, C, H, W)."""
        u = self.pseudo_inputs
        return F.hardtanh(u, 0.0, 1.0) if self.bounded else u

    @staticmethod
    def sample(
        n: int, mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """n draws of the mixture whose components are N(mu_k, exp(logvar_k)), (K, D)
        each: a component uniformly, then its Gaussian. Returns (n, D)."""
        k = torch.randint(mu.shape[0], (n,), generator=generator, device=mu.device)
        eps = torch.randn((n, mu.shape[1]), generator=generator, device=mu.device)
        return mu[k] + torch.exp(0.5 * losses.clamp_logvar(logvar[k])) * eps


def log_mixture(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log (1/K) sum_k N(z; mu_k, exp(logvar_k)) for z (..., D), components (K, D) each:
    (...,). Each component's density is computed directly (no expanded square, which
    loses precision), ROWS_PER_PASS values at a time."""
    shape = z.shape[:-1]
    flat = z.reshape(-1, z.shape[-1])  # (N, D)
    k, d = mu.shape
    rows = max(1, ROWS_PER_PASS // max(1, k * d))
    parts = [
        losses.log_normal_diag(flat[i : i + rows, None, :], mu, logvar)  # (n, K)
        for i in range(0, flat.shape[0], rows)
    ]
    log_comp = torch.cat(parts) if parts else flat.new_zeros((0, k))
    return (torch.logsumexp(log_comp, -1) - math.log(k)).reshape(shape)
