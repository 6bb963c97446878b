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

import torch

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


def log_weights(
    batch: int, dataset_size: int, estimator: str, device: torch.device
) -> torch.Tensor:
    """The log importance weights (B, B) of posterior j for sample i in the estimate
    log q(z_i) = logsumexp_j [log q(z_i|x_j) + w_ij]: MWS's -log(N B) everywhere, or MSS's
    log(1/N) for the sample's own posterior and log((N-1)/(N (B-1))) for the others."""
    n, b = dataset_size, batch
    if estimator == "mws" or b < 2:
        return torch.full((b, b), -math.log(n * b), device=device)
    w = torch.full((b, b), (n - 1) / (n * (b - 1)), device=device)
    return w.fill_diagonal_(1.0 / n).log()


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
    pairs = log_q_pairs(z, mu, logvar)  # (B, B, D)
    w = log_weights(z.shape[0], max(dataset_size, z.shape[0]), estimator, z.device)
    log_qz_x = pairs.diagonal(dim1=0, dim2=1).sum(0)  # (B,): log q(z_i|x_i)
    log_qz = torch.logsumexp(pairs.sum(2) + w, dim=1)  # (B,)
    log_qz_marginals = torch.logsumexp(pairs + w.unsqueeze(2), dim=1).sum(1)  # (B,)
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
