"""The inverse autoregressive flow (Kingma et al. 2016, "Improved Variational Inference
with Inverse Autoregressive Flow"): a posterior richer than a diagonal Gaussian.

z_0 = mu + sigma_0 * eps comes from the Gaussian heads; each of T steps then maps
z_{t-1} to z_t with the paper's numerically stable, LSTM-like update

    (m_t, s_t) = MADE_t(z_{t-1}),   sigma_t = sigmoid(s_t),
    z_t = sigma_t * z_{t-1} + (1 - sigma_t) * m_t,

where MADE_t (Germain et al. 2015) is a masked MLP: output d sees only the inputs
before d in the step's ordering, so dz_t/dz_{t-1} is triangular under that ordering with
diagonal sigma_t, and log |det| = sum_d log sigma_t,d (log-sigmoid, stable for any s).
The steps alternate the ordering (natural, reversed), as the paper's do. Then

    log q(z_T|x) = log N(z_0; mu, sigma_0^2) - sum_t sum_d log sigma_t,d

exactly (models/composed.py uses it in the KL and the importance weights). The s outputs
start near +2 (the paper: "close to +1 or +2"), so each step starts close to the identity.

The context h (model.flow_context; the paper's full IAF, whose encoder gives h beside mu
and sigma_0 as an extra input to every step): `context` values, read by each step's MADE
beside z_{t-1}, unmasked, (m_t, s_t) = MADE_t(z_{t-1}, h): one more linear map of h into
the MADE's hidden layer and straight into m_t and s_t (the first value in the ordering
reads no hidden unit, so only the latter reaches it). h depends on x only, not on z, so
dz_t/dz_{t-1} stays triangular with diagonal sigma_t and the log-det above is unchanged.
Without it (`context` 0, pythae's VAE_IAF's form) the steps are shared by all x, and
q(z|x) varies with x through mu and sigma_0 only.

A spatial latent (C, h, w) takes `SpatialIAF`: the same steps over the C channels at each
of the h*w positions, shared by all positions, i.e. MADE's masked layers as masked 1x1
convolutions (a linear map of the channels at each position is a 1x1 convolution). Each
position's channels are a flow of their own, so the Jacobian is block diagonal with
triangular blocks, and log |det| = the sum over positions of each position's log-det.
Its context is a map of `context` channels at the latent's h*w positions, each position's
steps reading the context there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GATE_BIAS = 2.0  # the s outputs' initial bias: sigma_t starts near sigmoid(2) ~ 0.88


def hidden_width(dim: int) -> int:
    """The MADE's hidden width for a latent of `dim` values."""
    return max(2 * dim, 16)


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (out, in)."""

    mask: torch.Tensor

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.float(), persistent=False)  # rebuilt, not saved

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def made_masks(order: torch.Tensor, hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MADE's masks for inputs whose autoregressive degrees are `order` (D,) (a permutation
    of 1..D): hidden unit k has degree 1 + k mod (D - 1) and sees inputs of degree <= its
    own; an output of degree d sees hidden units of degree < d, so it depends on the inputs
    before it only. Returns the (hidden, D) and (D, hidden) masks."""
    dim = order.numel()
    degrees = torch.arange(hidden) % max(1, dim - 1) + 1  # (H,)
    first = degrees[:, None] >= order[None, :]  # (H, D)
    second = order[:, None] > degrees[None, :]  # (D, H)
    return first, second


class IAFStep(nn.Module):
    """One flow step: a MADE over z (ordering `order`, degrees 1..D) giving m and s; with
    `context` > 0 its hidden layer, m and s also read a context vector h of that size,
    unmasked."""

    def __init__(self, order: torch.Tensor, hidden: int, context: int = 0) -> None:
        super().__init__()
        dim = order.numel()
        first, second = made_masks(order, hidden)
        self.hidden = MaskedLinear(first)
        self.m = MaskedLinear(second)
        self.s = MaskedLinear(second)
        # h into the hidden layer and straight into m and s (the first output in the
        # ordering reads no hidden unit: without this it would not see h)
        self.context = nn.Linear(context, hidden + 2 * dim, bias=False) if context else None
        with torch.no_grad():
            self.s.weight.mul_(0.1)
            self.s.bias.fill_(GATE_BIAS)
            if self.context is not None:
                self.context.weight[hidden + dim :].mul_(0.1)  # the gates start as without h
        self.dim, self.width = dim, hidden

    def forward(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z (..., D) [and h (..., context)] -> (z_t (..., D), log |det dz_t/dz| (...,))."""
        if self.context is None:
            h = F.elu(self.hidden(z))  # (..., H)
            m, s = self.m(h), self.s(h)  # (..., D) each
        else:
            if context is None:
                raise ValueError("this flow step reads a context: pass it")
            sizes = [self.width, self.dim, self.dim]
            to_hidden, to_m, to_s = self.context(context).split(sizes, -1)
            h = F.elu(self.hidden(z) + to_hidden)
            m, s = self.m(h) + to_m, self.s(h) + to_s
        gate = torch.sigmoid(s)
        return gate * z + (1.0 - gate) * m, F.logsigmoid(s).sum(-1)


class IAF(nn.Module):
    """T inverse autoregressive steps over a latent vector of `dim` values, the orderings
    alternating natural and reversed, each reading a context vector of `context` values
    (0: none); `forward(z0, h)` gives z_T and the summed log-det."""

    def __init__(self, dim: int, steps: int, context: int = 0) -> None:
        super().__init__()
        natural = torch.arange(1, dim + 1)
        self.context = int(context)
        self.steps = nn.ModuleList(
            IAFStep(natural if t % 2 == 0 else natural.flip(0), hidden_width(dim), context)
            for t in range(steps)
        )

    def forward(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z_0 (..., D) [and h (B, context), B the last of z's leading sizes: the same h for
        each of an example's samples] -> (z_T (..., D), sum_t log |det dz_t/dz_{t-1}|
        (...,))."""
        if context is not None:
            context = context.to(z.dtype).expand(*z.shape[:-1], context.shape[-1])
        log_det = torch.zeros(z.shape[:-1], device=z.device, dtype=z.dtype)
        for step in self.steps:
            z, step_log_det = step(z, context)
            log_det = log_det + step_log_det
        return z, log_det


class SpatialIAF(IAF):
    """The IAF over a spatial latent `latent_shape` (C, h, w), flattened (..., C*h*w) as the
    VAE holds it: at every position, T steps autoregressive over its C channels (masked 1x1
    convolutions: one per-position MADE, its weights shared by all positions). The same
    weights' names as `IAF(C, steps, context)`'s."""

    def __init__(self, latent_shape: tuple[int, ...], steps: int, context: int = 0) -> None:
        super().__init__(int(latent_shape[0]), steps, context)
        self.latent_shape = tuple(int(s) for s in latent_shape)

    def forward(
        self, z: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z_0 (..., C*h*w) [and the context map h (B, context, h, w)] -> (z_T (...,
        C*h*w), the log-det summed over positions (...,))."""
        c = self.latent_shape[0]
        lead = z.shape[:-1]
        per_position = z.reshape(*lead, c, -1).transpose(-1, -2)  # (..., h*w, C)
        if context is not None:  # (B, K, h, w) -> (B, h*w, K): each position's own
            context = context.flatten(2).transpose(-1, -2)
            context = context.expand(*lead, *context.shape[-2:])
        out, log_det = super().forward(per_position, context)  # log_det: (..., h*w)
        return out.transpose(-1, -2).reshape(z.shape), log_det.sum(-1)
