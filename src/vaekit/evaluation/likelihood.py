"""The bound and the likelihood: the test-set ELBO and its terms (one seeded z-sample per
example), and the importance-weighted estimate of log p(x) (Burda et al. 2015), batched
over examples and samples, seeded per example, parallel on CPU threads."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .. import losses
from ..errors import ConfigError
from ..models import VAE, LadderVAE
from ..progress import bar as progress_bar

# Values per forward pass of the log p(x) estimate, counted in the decoder's widest tensor
# (see `decoder_width`): large enough for efficient matmuls, small enough that a pass's
# temporaries stay in the caches (measured in benchmarks/eval_speed.py) and each stays
# below glibc's 32 MiB limit for reusing freed memory (allocator.py); a pass then holds
# ~5 such tensors (~80 MB).
DEFAULT_BUDGET = 4_000_000
PRECISIONS = ("fp32", "bf16")


def _batches(n: int, batch_size: int) -> list[slice]:
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def _device_of(model: VAE, device: torch.device | str | None) -> torch.device:
    return torch.device(device) if device is not None else model.device


@torch.no_grad()
def elbo_stats(
    model: VAE,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    batch_size: int = 1000,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Mean negative ELBO, reconstruction and KL per example over x, one z-sample each.

    The draw of z is seeded, so the same model and data always give the same numbers.
    """
    device = _device_of(model, device)
    g = torch.Generator(device=device).manual_seed(seed)
    total = {"nelbo": 0.0, "recon": 0.0, "kl": 0.0}
    n = x.shape[0]
    for s in _batches(n, batch_size):
        xb = model.prepare(x[s].to(device))
        yb = None if y is None else y[s].to(device)
        terms, _ = model.elbo_terms(xb, yb, generator=g)
        total["nelbo"] += float(terms.nelbo.double().sum())
        total["recon"] += float(terms.recon.double().sum())
        total["kl"] += float(terms.kl.double().sum())
    return {k: v / max(n, 1) for k, v in total.items()}


@torch.no_grad()
def layer_kl_stats(
    model: LadderVAE,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    batch_size: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """A hierarchical VAE's KL per layer, kl_1 (z_1, read by the decoder) ... kl_L (the top),
    mean per example over x: the draw of `elbo_stats` with the same seed, so they sum to
    its kl."""
    device = model.device
    g = torch.Generator(device=device).manual_seed(seed)
    total = torch.zeros(len(model.latent_dims), dtype=torch.float64)
    for s in _batches(x.shape[0], batch_size):
        xb = model.prepare(x[s].to(device))
        yb = None if y is None else y[s].to(device)
        _, kl_per_dim = model.elbo_terms(xb, yb, generator=g)
        total += model.layer_kls(kl_per_dim).double().sum(0).cpu()
    means = (total / max(x.shape[0], 1)).tolist()
    return {f"kl_{i + 1}": v for i, v in enumerate(means)}


# -- the importance-weighted estimate of log p(x) ---------------------------------------------
@dataclass
class IWEstimate:
    """Per-example results of importance sampling with K samples, each (N,) float64."""

    log_px: torch.Tensor  # log (1/K) sum_k w_k: the IW estimate (a lower bound in expectation)
    elbo: torch.Tensor  # (1/K) sum_k log w_k over the same samples: never above log_px
    ess: torch.Tensor  # effective sample size (sum w)^2 / sum w^2, in [1, K]


def _example_noise(index: int, k: int, d: int, seed: int, device: torch.device) -> torch.Tensor:
    """eps ~ N(0, I) of one example, (K, D): seeded by (seed, index) alone, so an example's
    estimate does not depend on its batch, the memory budget or the other examples."""
    # the CPU generator keeps 32 bits of its seed: an odd multiplier makes (index -> seed)
    # one-to-one within a seed, and the seed shifts the whole sequence
    g = torch.Generator(device=device).manual_seed(
        (index * 0x9E3779B1 + seed * 0x85EBCA77 + 0x165667B1) % 2**32
    )
    return torch.randn((k, d), generator=g, device=device)


def log_likelihood_broadcast(model: VAE, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """log p(x|z) for K decodings of each of B images: x (B, C, H, W), params (K*B, ...)
    ordered sample-major; returns (K, B).

    Bernoulli: log p = sum_j x_j l_j - softplus(l_j), the same value as losses.log_bernoulli
    (tests/test_evaluate.py checks it) computed against a broadcast x, without a (K*B)-row
    copy of x and in two passes over the logits instead of BCE's five.
    """
    b = x.shape[0]
    k = params.shape[0] // b
    if model.likelihood == "bernoulli":
        logits = params.float().view(k, b, -1)  # (K, B, P)
        xf = x.float().flatten(1)  # (B, P)
        data_term = torch.einsum("kbp,bp->kb", logits, xf)
        return data_term - F.softplus(logits).sum(-1)
    x_rep = x.unsqueeze(0).expand(k, *x.shape).reshape(k * b, *x.shape[1:])
    return model.log_likelihood(x_rep, params).view(k, b)


def decoder_width(model: VAE) -> int:
    """Values per example in the decoder's widest tensor: its output for an MLP, an early
    feature map for a conv decoder (32 x 64 x 64 values against an output of 3 x 64 x 64
    for shapes64). A pass's memory grows with it, not with the output."""
    widest = 0

    def seen(module: torch.nn.Module, inputs: Any, output: Any) -> None:
        nonlocal widest
        if isinstance(output, torch.Tensor) and output.dim() > 0:
            widest = max(widest, output[0].numel())

    device = model.device
    y = torch.zeros(1, dtype=torch.long, device=device) if model.conditional else None
    hooks = [m.register_forward_hook(seen) for m in model.decoder.modules()]
    was_training = model.decoder.training
    model.decoder.eval()  # a probe: no normalisation statistics may move
    try:
        with torch.no_grad():
            out = model.decode(torch.zeros(1, model.latent_dim, device=device), y)
    finally:
        model.decoder.train(was_training)
        for hook in hooks:
            hook.remove()
    return max(widest, out[0].numel())


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@contextlib.contextmanager
def _single_threaded_ops(workers: int) -> Any:
    """With several CPU workers, run each op on one thread (restored afterwards): passes
    then run side by side and never wait at an intra-op barrier, which on a shared machine
    made two-thread ops 2-4x slower than one thread (measured in benchmarks/)."""
    before = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if workers > 1:
            torch.set_num_threads(before)


def importance_sampling(
    model: VAE,
    x: torch.Tensor,
    k: int,
    y: torch.Tensor | None = None,
    *,
    seed: int = 0,
    budget: int = DEFAULT_BUDGET,
    precision: str = "fp32",
    progress: bool = False,
    device: torch.device | str | None = None,
    workers: int = 0,
    first: int = 0,
) -> IWEstimate:
    """log p(x) ~ log (1/K) sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x) (Burda et al. 2015).

    Examples and samples are batched together: each pass holds about `budget` values in
    the decoder's widest tensor (`decoder_width`), as several examples with all K samples
    or, for large K, one example's samples in chunks.
    Weights are summed with logsumexp in float64. On the CPU, `workers` passes (default:
    torch's thread count) run at once, each single-threaded. `precision` 'bf16' runs the
    decoder under bf16 autocast (faster on CPUs with AMX; its error is in benchmarks/).
    `first`: the index of x[0] in the whole set when x is one chunk of it (each example's
    samples are seeded by that index, so chunks give the estimate of the whole).
    """
    _check(k, precision)
    device = _device_of(model, device)
    workers = 1 if device.type != "cpu" else workers or torch.get_num_threads()
    rows = max(1, budget // decoder_width(model))  # decoded examples per pass
    per_pass, k_chunk = (max(1, rows // k), k) if rows >= k else (1, rows)
    n, d = x.shape[0], model.latent_dim
    result = IWEstimate(*(torch.empty(n, dtype=torch.float64) for _ in range(3)))
    bar = progress_bar(
        total=n * k,
        show=progress,
        unit="sample",
        unit_scale=True,
        desc=f"log p(x), K={k}",
        leave=False,
    )

    def one_pass(s: slice) -> None:  # examples s: all K samples, in chunks of k_chunk
        if device.type == "cpu":  # per thread: softplus of very negative logits is denormal
            torch.set_flush_denormal(True)
        with torch.no_grad():  # grad mode is per thread
            xb = model.prepare(x[s].to(device))
            yb = None if y is None else torch.as_tensor(y[s], device=device).long()
            eps = torch.stack(
                [_example_noise(first + i, k, d, seed, device) for i in range(s.start, s.stop)], 1
            )  # (K, B, D)
            log_w = log_weights(model, xb, yb, eps, k_chunk, precision, bar)  # (K, B)
            result.log_px[s], result.elbo[s], result.ess[s] = _estimates(log_w)

    _run(one_pass, _batches(n, per_pass), workers)
    bar.close()
    return result


def _check(k: int, precision: str) -> None:
    if k < 1:
        raise ConfigError(f"the number of importance samples K must be at least 1; got {k}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")


def _estimates(log_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From the log weights (K, B) of B examples: log p(x), the ELBO and the effective
    sample size, each (B,) on the CPU."""
    lse = torch.logsumexp(log_w, 0)
    log_px = lse - math.log(log_w.shape[0])
    ess = torch.exp(2 * lse - torch.logsumexp(2 * log_w, 0))
    return log_px.cpu(), log_w.mean(0).cpu(), ess.cpu()


def _run(one_pass: Callable[[slice], None], passes: list[slice], workers: int) -> None:
    """Each pass, `workers` at a time (each single-threaded) where there are several."""
    with _single_threaded_ops(workers):
        if workers > 1 and len(passes) > 1:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(one_pass, passes))  # list(): re-raises a worker's exception
        else:
            for s in passes:
                one_pass(s)


def log_weights(
    model: VAE,
    x: torch.Tensor,
    y: torch.Tensor | None,
    eps: torch.Tensor,
    k_chunk: int,
    precision: str = "fp32",
    bar: Any = None,
) -> torch.Tensor:
    """log p(x, z_k) - log q(z_k|x) for z_k = mu + sigma * eps_k: eps (K, B, D) for the
    B images x, decoded k_chunk samples at a time; (K, B) in float64. A model whose KL is
    not the closed form (a VampPrior, a flow: models/composed.py), or whose weights are
    its own (a ladder's whole top-down path: models/hierarchical.py), gives its own
    weights for the same eps, with its own densities."""
    own = type(model).log_importance_weights is not VAE.log_importance_weights
    if not model.closed_form_kl or own:
        return _model_log_weights(model, x, y, eps, k_chunk, precision, bar)
    mu, logvar = model.posterior(x, y)  # (B, D) each
    k, b, d = eps.shape
    chunks = []
    for start in range(0, k, k_chunk):
        kk = min(k_chunk, k - start)
        z = mu + torch.exp(0.5 * logvar) * eps[start : start + kk]  # (kk, B, D)
        with _autocast(x.device, precision):
            params = model.decode(z.reshape(kk * b, d), None if y is None else y.repeat(kk))
        log_w = (
            log_likelihood_broadcast(model, x, params)
            + losses.log_standard_normal(z)
            - losses.log_normal_diag(z, mu, logvar)
        )
        chunks.append(log_w.double())  # (kk, B)
        if bar is not None:
            bar.update(kk * b)
    return torch.cat(chunks, 0)


def _model_log_weights(
    model: VAE,
    x: torch.Tensor,
    y: torch.Tensor | None,
    eps: torch.Tensor,
    k_chunk: int,
    precision: str,
    bar: Any,
) -> torch.Tensor:
    """`log_weights` through the model's own `log_importance_weights`, k_chunk samples at
    a time (the model keeps its densities in float32 under bf16 autocast)."""
    k, b = eps.shape[:2]
    chunks = []
    for start in range(0, k, k_chunk):
        kk = min(k_chunk, k - start)
        with _autocast(x.device, precision):
            log_w = model.log_importance_weights(x, kk, y, eps=eps[start : start + kk])
        chunks.append(log_w.double())  # (kk, B)
        if bar is not None:
            bar.update(kk * b)
    return torch.cat(chunks, 0)
