"""How far a minibatch's aggregate posterior q(z) lies from a prior, as pure functions of
tensors: beta-TCVAE's decomposition of the KL, and the maximum mean discrepancy (MMD).

beta-TCVAE (Chen et al. 2018, eq. 2): for z_i ~ q(z|x_i),

    log q(z_i|x_i) - log p(z_i) = [log q(z_i|x_i) - log q(z_i)]           index-code MI
                                + [log q(z_i) - prod_d log q(z_id)]        total correlation
                                + [sum_d log q(z_id) - log p(z_id)]        dimension-wise KL

The aggregate q(z) = (1/N) sum_n q(z|x_n) over the N training examples is estimated from
the minibatch of B by minibatch-stratified sampling (MSS, the paper's Appendix, stratified
by the sample's own posterior): q(z_i) ~ (1/N) q(z_i|x_i) + (N-1)/(N (B-1)) sum_{j != i}
q(z_i|x_j), unbiased for q(z_i) when the batch is drawn without replacement, and exact
when B = N. (The reference implementation's `log_importance_weight_matrix` puts the 1/N
on the batch's first posterior in every row, not on the sample's own; this does not copy
that.) Or by minibatch-weighted sampling (MWS, the paper's eq. 3: log q(z_i) ~
logsumexp_j log q(z_i|x_j) - log(N B), as the reference code has it), whose weights sum
to 1/N, not 1: its log q(z) is about log N too low for the joint and for each of the D
marginals, so its TC is (D - 1) log N too high and its dimension-wise KL as much too low
(their sum and every gradient are unaffected; tests/test_objectives_family.py measures
it). The three terms add up to log q(z_i|x_i) - log p(z_i), the one-sample estimate of
KL(q(z|x_i) || p(z)), exactly, whatever the estimator.

MMD (Gretton et al. 2012): the unbiased U-statistic of MMD^2 between samples of q(z) and
of p(z), with WAE's kernels (Tolstikhin et al. 2018): the inverse multiquadric
k(a, b) = sum_s C_s / (C_s + ||a - b||^2), C_s = 2 D s over the scales s of SCALES, or the
RBF k(a, b) = exp(-||a - b||^2 / (2 D)), for D latent dimensions (a prior of unit
variance: WAE's C = 2 D sigma_z^2). Written here because neither torchmetrics nor torch has
these estimators with gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from . import limits
from .losses import LOG_2PI, clamp_logvar, log_standard_normal

SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)  # WAE's IMQ kernel, summed over these


@dataclass
class TCTerms:
    """beta-TCVAE's terms per example, each (B,), in nats."""

    mi: torch.Tensor  # index-code mutual information: log q(z|x) - log q(z)
    tc: torch.Tensor  # total correlation: log q(z) - sum_d log q(z_d)
    dim_kl: torch.Tensor  # dimension-wise KL: sum_d log q(z_d) - log p(z_d)


def log_q_pairs(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log q(z_id | x_j) for every sample i and posterior j, per dimension: (B, B, D)."""
    mu, logvar = mu.float(), clamp_logvar(logvar)
    diff = z.float().unsqueeze(1) - mu.unsqueeze(0)  # (B, B, D)
    return -0.5 * (diff.pow(2) * torch.exp(-logvar).unsqueeze(0) + logvar.unsqueeze(0) + LOG_2PI)


def log_weight_values(batch: int, dataset_size: int, estimator: str) -> tuple[float, float]:
    """The log importance weights of `log_weights`: (the sample's own posterior's, each
    other posterior's)."""
    n, b = dataset_size, batch
    if estimator == "mws" or b < 2:
        return -math.log(n * b), -math.log(n * b)
    return math.log(1.0 / n), math.log((n - 1) / (n * (b - 1)))


def log_weights(
    batch: int, dataset_size: int, estimator: str, device: torch.device
) -> torch.Tensor:
    """The log importance weights (B, B) of posterior j for sample i in the estimate
    log q(z_i) = logsumexp_j [log q(z_i|x_j) + w_ij]: MWS's -log(N B) everywhere, or MSS's
    log(1/N) for the sample's own posterior and log((N-1)/(N (B-1))) for the others."""
    own, other = log_weight_values(batch, dataset_size, estimator)
    return torch.full((batch, batch), other, device=device).fill_diagonal_(own)


class _Aggregate(torch.autograd.Function):
    """From samples z (B, D) of the diagonal Gaussians (mu, logvar) (B, D) (float32 or 64)
    and the log weights w_ij = `own` where i = j, else `other`, the log densities of
    `tc_decomposition`, each (B,): log q(z_i|x_i), log q(z_i) = logsumexp_j [log q(z_i|x_j)
    + w_ij] and sum_d log q(z_id), log q(z_id) = logsumexp_j [log q(z_id|x_j) + w_ij].

    The value of log_q_pairs' (B, B, D) reduced by torch.logsumexp, to float precision
    (tests/test_objectives_family.py checks value and gradient), in fewer and cheaper
    passes over the B x B x D values, its backward written out: the pairs are laid out
    (i, d, j), so that each sum over j runs over contiguous memory (torch's broadcasting
    lays them out (i, j, d)); each exponential is taken once, in place, and the backward
    reuses it as the softmax; and each exponent is clamped at -87 first (`_log_sum_exp`)."""

    @staticmethod
    def forward(
        ctx: Any, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, own: float, other: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, d = z.shape
        inv_std = torch.exp(-0.5 * logvar).T.contiguous()  # (D, B): posterior j's, per dim
        t = torch.empty((b, d, b), dtype=z.dtype, device=z.device)  # laid out (i, d, j)
        torch.sub(z.unsqueeze(2), mu.T, out=t).mul_(inv_std)  # (z_id - mu_jd) / std_jd
        c = -0.5 * (logvar.T + LOG_2PI)  # (D, B)
        pairs = torch.addcmul(c, t, t, value=-0.5, out=torch.empty_like(t))  # log q(z_id|x_j)
        joint = pairs.sum(1)  # (B, B): log q(z_i|x_j)
        log_qz_x = joint.diagonal().clone()
        joint.diagonal().add_(own - other)  # the weights, less `other`
        pairs.diagonal(dim1=0, dim2=2).add_(own - other)
        log_qz, soft = _log_sum_exp(joint, other)  # (B,), (B, B)
        log_qz_d, e = _log_sum_exp(pairs, other)  # (B, D), (B, D, B)
        ctx.save_for_backward(t, e, soft, inv_std)
        return log_qz_x, log_qz, log_qz_d.sum(1)

    @staticmethod
    @once_differentiable  # the backward treats its saved tensors as constants
    def backward(
        ctx: Any, g_own: torch.Tensor, g_joint: torch.Tensor, g_marginals: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        t, e, soft, inv_std = ctx.saved_tensors
        # d(out) / d log q(z_id|x_j): from log q(z_i|x_i), log q(z_i), sum_d log q(z_id)
        g_pairs = soft * g_joint.unsqueeze(1)
        g_pairs.diagonal().add_(g_own)
        g = torch.addcmul(g_pairs.unsqueeze(1), e, g_marginals.view(-1, 1, 1))
        g_sum = g.sum(0)
        # d log q(z_id|x_j) / d logvar_jd = (t^2 - 1) / 2, / d mu_jd = t / std_jd = -/ d z_id
        gt = g.mul_(t)
        g_logvar = 0.5 * ((gt * t).sum(0) - g_sum)
        gt.mul_(inv_std)
        return -gt.sum(2), gt.sum(0).T, g_logvar.T, None, None


def _log_sum_exp(x: torch.Tensor, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """logsumexp over x's last dimension, + `shift`, and the softmax there, taken in x's
    memory. Each exponent (x - its row's max) is clamped at -87 first: exp of less is under
    float32's smallest normal, nothing beside the maximum's 1 in the sum (under 1e-37 of
    it), and many times slower to take than of -87."""
    top = x.amax(-1, keepdim=True)
    e = x.sub_(top).clamp_min_(-87.0).exp_()
    total = e.sum(-1, keepdim=True)
    return (total.log() + top).squeeze(-1) + shift, e.div_(total)


def tc_decomposition(
    z: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    dataset_size: int,
    estimator: str = "mss",
) -> TCTerms:
    """MI, TC and dimension-wise KL of samples z (B, D) of the diagonal Gaussian posteriors
    (mu, logvar) of a minibatch from a training set of `dataset_size`, against N(0, I)."""
    b, d = z.shape
    if b * b * d > 2**24:  # the (B, B, D) pairs take several float32 copies of that
        limits.check_fits(
            16 * b * b * d,
            f"beta-TCVAE's log q(z) over a batch of {b:,} with {d:,} latents",
            "lower train.batch_size, or use loss.objective factorvae",
        )
    n = max(dataset_size, b)
    own, other = log_weight_values(b, n, estimator)
    mu, logvar = mu.float(), clamp_logvar(logvar)
    log_qz_x, log_qz, log_qz_marginals = _Aggregate.apply(z.float(), mu, logvar, own, other)
    log_pz = log_standard_normal(z.float())
    return TCTerms(log_qz_x - log_qz, log_qz - log_qz_marginals, log_qz_marginals - log_pz)


def kernel(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    """k(a_i, b_j) for rows of a (n, D) and b (m, D): (n, m), in float32."""
    a, b = a.float(), b.float()
    d2 = (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1) - 2.0 * a @ b.T).clamp_min(0.0)
    dim = a.shape[1]
    if kind == "rbf":
        return torch.exp(-d2 / (2.0 * dim))
    return sum((2.0 * dim * s / (2.0 * dim * s + d2) for s in SCALES), torch.zeros_like(d2))


def mmd(q: torch.Tensor, p: torch.Tensor, kind: str = "imq") -> torch.Tensor:
    """The unbiased estimate of MMD^2 between samples q (n, D) and p (m, D), n, m >= 2: ()
    (it can be below 0; its mean is 0 when both come from one distribution)."""
    n, m = q.shape[0], p.shape[0]
    k_qq, k_pp, k_qp = kernel(q, q, kind), kernel(p, p, kind), kernel(q, p, kind)
    within_q = (k_qq.sum() - k_qq.diagonal().sum()) / (n * (n - 1))
    within_p = (k_pp.sum() - k_pp.diagonal().sum()) / (m * (m - 1))
    return within_q + within_p - 2.0 * k_qp.mean()
