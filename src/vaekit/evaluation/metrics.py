"""Numbers beyond the bound: bits per dimension, reconstruction MSE / PSNR / SSIM, KL per
latent dimension, active units, and FID of prior samples (LPIPS and rFID of reconstructions:
perceptual_scores.py; the Inception weights: inception.py).

PSNR, SSIM and FID are torchmetrics' (imported when first used), so that vaekit's numbers
are the ones other libraries report; tests/test_metrics.py checks they stay equal."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from .. import losses
from ..data.core.dataset import to_float
from ..errors import ConfigError, first_line
from ..models import VAE, LadderVAE
from . import fidelity, inception

fidelity.prepare()  # before torchmetrics is first imported (see fidelity.py)

if TYPE_CHECKING:  # the [metrics] extra, imported at run time only when FID is asked for
    from torchmetrics.image.fid import FrechetInceptionDistance

INCEPTION_WEIGHTS = inception.FILE  # the file torch-fidelity loads


def bits_per_dim(
    nats: float, dims: int, likelihood: str = "bernoulli", pixels: bool = True
) -> float:
    """Nats per example -> bits per dimension: nats / (D ln 2).

    Bernoulli likelihoods are probabilities of discrete pixels. Gaussian and Laplace are
    densities over [0, 1]; with `pixels` (8-bit images read as x / 255) the probability of
    a pixel's bin (width 1/256) is about density / 256, so they get log2(256) = 8 more
    bits per dimension. Other data (table rows, normalised values) are continuous: their
    density's bits, without the 8.
    """
    bits = nats / (dims * math.log(2.0))
    return bits if likelihood == "bernoulli" or not pixels else bits + 8.0


# -- image metrics ---------------------------------------------------------------------------
def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image, (N,)."""
    return (x.double() - y.double()).pow(2).flatten(1).mean(1)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB, (N,): torchmetrics' PSNR, capped at
    100 dB where the images are identical (the library says +inf)."""
    from torchmetrics.functional.image.psnr import peak_signal_noise_ratio

    dims = tuple(range(1, x.dim()))
    value = peak_signal_noise_ratio(
        x.double(), y.double(), data_range=data_range, reduction="none", dim=dims
    )
    return value.clamp(max=100.0)


def ssim_sigma(height: int, width: int) -> float:
    """The Gaussian window's sigma: 1.5 (Wang et al. 2004), narrower for images under 6
    pixels on a side, whose reflection padding (3.5 sigma) must stay inside the image."""
    side = min(height, width)
    return min(1.5, (side - 0.5) / 3.5 - 1e-3)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004), (N,) float64, for x, y (N, C, H, W):
    torchmetrics' SSIM (Gaussian window, sigma 1.5, K1 0.01, K2 0.03), the map averaged over
    positions and channels. See `ssim_sigma` for tiny images. Computed in float32, as
    torchmetrics users compute it: within ~1e-6 of float64 on natural images, ~1e-4 on flat
    ones (E[x^2] - E[x]^2 cancels); the library's float64 path is 9x slower (22 s instead
    of 2.5 s for the 10,000 Fashion-MNIST test images on 2 cores)."""
    from torchmetrics.functional.image.ssim import structural_similarity_index_measure

    if x.shape != y.shape or x.dim() != 4:
        raise ConfigError(
            f"ssim expects two (N, C, H, W) tensors of one shape; got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    value = structural_similarity_index_measure(
        x.float(),
        y.float(),
        sigma=ssim_sigma(*x.shape[-2:]),
        data_range=data_range,
        reduction="none",
    )
    assert isinstance(value, torch.Tensor)
    return value.double()


def _labels(y: torch.Tensor | None, s: slice, device: torch.device) -> torch.Tensor | None:
    return None if y is None else torch.as_tensor(y[s], device=device).long()


@torch.no_grad()
def reconstruction_metrics(
    model: VAE, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 1000
) -> dict[str, float]:
    """mse (per value, in the model's units), and for images in [0, 1] psnr (dB) and
    ssim, of the decoded posterior means, averaged over examples (x in the user's units).
    PSNR and SSIM need a known data range and a picture: tables and unbounded data get
    mse only."""
    device = model.device
    images = model.normalization.bounded and min(model.input_shape[1:]) > 1
    sums = torch.zeros(3, dtype=torch.float64)
    for i in range(0, x.shape[0], batch_size):
        s = slice(i, i + batch_size)
        yb = _labels(y, s, device)
        xb = model.prepare(x[s].to(device))
        recon = model.mean(model.decode(model.posterior(xb, yb)[0], yb))
        parts = [mse(xb, recon).sum()]
        if images:
            parts += [psnr(xb, recon).sum(), ssim(xb, recon).sum()]
        sums[: len(parts)] += torch.stack(parts).cpu()
    sums /= max(1, x.shape[0])
    out = {"mse": float(sums[0])}
    if images:
        out.update(psnr=float(sums[1]), ssim=float(sums[2]))
    return out


# -- the latent space -----------------------------------------------------------------------
@torch.no_grad()
def posterior(
    model: VAE, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """The posterior mean and log-variance of every image in x: two (N, D) on the CPU."""
    device = model.device
    mus, logvars = [], []
    for i in range(0, x.shape[0], batch_size):
        s = slice(i, i + batch_size)
        mu, logvar = model.posterior(model.prepare(x[s].to(device)), _labels(y, s, device))
        mus.append(mu.cpu())
        logvars.append(logvar.cpu())
    if not mus:
        empty = torch.zeros(0, model.latent_dim)
        return empty, empty
    return torch.cat(mus), torch.cat(logvars)


def kl_per_dimension(
    model: VAE, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 1000
) -> torch.Tensor:
    """Mean KL(q(z_d|x) || p(z_d)) over x for each latent dimension d, nats: (D,) float64.

    The dimensions sum to the KL term of the ELBO (closed form, no sampling). A hierarchical
    VAE's (its layers z_1 ... z_L, concatenated) are each layer's KL to its prior given the
    layer above, on elbo_stats' seeded draw (seed 0), whose KL they then sum to.
    """
    if isinstance(model, LadderVAE):
        return _sampled_kl_per_dimension(model, x, y, batch_size)
    mu, logvar = posterior(model, x, y, batch_size)
    if mu.shape[0] == 0:
        return torch.zeros(model.latent_dim, dtype=torch.float64)
    return losses.kl_standard_normal(mu, logvar).double().mean(0)


@torch.no_grad()
def _sampled_kl_per_dimension(
    model: LadderVAE, x: torch.Tensor, y: torch.Tensor | None, batch_size: int
) -> torch.Tensor:
    device = model.device
    g = torch.Generator(device=device).manual_seed(0)
    total = torch.zeros(model.latent_dim, dtype=torch.float64)
    for i in range(0, x.shape[0], batch_size):
        s = slice(i, i + batch_size)
        xb = model.prepare(x[s].to(device))
        _, kl_per_dim = model.elbo_terms(xb, _labels(y, s, device), generator=g)
        total += kl_per_dim.double().sum(0).cpu()
    return total / max(x.shape[0], 1)


@dataclass(frozen=True)
class ActiveUnits:
    """Burda et al. (2015): unit d is active when A_d = Cov_x(E_q[z_d|x]) > threshold."""

    activity: torch.Tensor  # (D,) float64: the variance over x of each posterior mean
    count: int  # how many exceed the threshold

    def __iter__(self) -> Iterator[torch.Tensor | int]:  # unpacks as (activity, count)
        return iter((self.activity, self.count))


def active_units(
    model: VAE,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    threshold: float = 0.01,
    batch_size: int = 1000,
) -> ActiveUnits:
    """The activity of each latent unit over images x, and the number of active units."""
    mu, _ = posterior(model, x, y, batch_size)
    if mu.shape[0] < 2:
        return ActiveUnits(torch.zeros(model.latent_dim, dtype=torch.float64), 0)
    activity = mu.double().var(0, unbiased=False)
    return ActiveUnits(activity, int((activity > threshold).sum()))


# -- FID ------------------------------------------------------------------------------------
class RandomFeatures(nn.Module):
    """A seeded, randomly initialised conv net: a feature network for FID when the Inception
    weights are not available. Its scores compare models with each other, never with
    published FIDs."""

    def __init__(self, channels: int = 1, num_features: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.num_features = num_features
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = nn.Sequential(
                nn.Conv2d(channels, 32, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(32, 64, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(64, num_features, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )
            for layer in self.net:
                if isinstance(layer, nn.Conv2d):  # variance-preserving: features of order 1
                    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                    nn.init.zeros_(layer.bias)  # type: ignore[arg-type]
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, C, H, W), uint8 or float in [0, 1] -> features (N, num_features)."""
        return self.net(to_float(images))


def _torchmetrics_fid() -> type[FrechetInceptionDistance]:
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance  # imported on first use
    except (ImportError, RuntimeError) as e:  # torch-fidelity installed, torchvision broken
        raise ConfigError(
            f"torchmetrics' FID does not import here ({first_line(e)}): torch-fidelity is "
            "installed but its torchvision does not import beside this torch; fix torchvision, or "
            "pip uninstall torch-fidelity and use --fid random"
        ) from None
    return FrechetInceptionDistance


def _inception_metric(weights: str | None) -> FrechetInceptionDistance:
    """torchmetrics' FID on torch-fidelity's InceptionV3 with checked weights (downloaded on
    first use, see evaluation/inception.py): torch-fidelity is looked for first, so a
    machine without it downloads nothing."""
    from torchmetrics.image import fid as tm_fid

    fid_cls = _torchmetrics_fid()
    if not tm_fid._TORCH_FIDELITY_AVAILABLE:
        raise ConfigError(
            "FID with the Inception network needs torch-fidelity (pip install "
            "'vaekit[inception]', or pip install --no-deps torch-fidelity where torchvision "
            "does not match torch); or use the random feature network (--fid random)"
        )
    path = inception.weights_file(weights)
    try:
        return fid_cls(feature=2048, normalize=False, feature_extractor_weights_path=str(path))
    except Exception as e:  # a state_dict that does not fit surfaces as several types
        raise ConfigError(
            f"the Inception weights {path} could not be loaded ({first_line(e)}); pass "
            f"--fid-weights PATH to a local {inception.FILE}, or use --fid random"
        ) from None


def fid_metric(
    feature: str | nn.Module, channels: int, weights: str | None = None, seed: int = 0
) -> tuple[FrechetInceptionDistance, Callable[[torch.Tensor], torch.Tensor]]:
    """An empty torchmetrics FID and the function that turns images (N, `channels`, H, W),
    uint8 or float in [0, 1], into its input. `feature` as in `fid_images`."""
    if feature == "inception":

        def inception_input(t: torch.Tensor) -> torch.Tensor:  # InceptionV3: 3-channel uint8
            t = (to_float(t).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)  # no wrap-around
            return t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t

        return _inception_metric(weights), inception_input
    if feature == "random":
        feature = RandomFeatures(channels, seed=seed)
    if not isinstance(feature, nn.Module):
        raise ConfigError(
            f"FID feature network {feature!r} is unknown; use 'inception', 'random' or an nn.Module"
        )
    return _torchmetrics_fid()(feature=feature, normalize=True), to_float


def fid_images(
    real: torch.Tensor,
    fake: torch.Tensor,
    feature: str | nn.Module = "random",
    batch_size: int = 500,
    weights: str | None = None,
    seed: int = 0,
) -> float:
    """Frechet distance between the feature statistics of two image sets (N, C, H, W).

    `feature`: 'inception' (torchmetrics' InceptionV3, 2048 features, on torch-fidelity's
    weights: `weights` a local copy, else downloaded once, see evaluation/inception.py),
    'random' (`RandomFeatures(seed=seed)`) or any nn.Module mapping images in [0, 1] to
    (N, F) features.
    """
    metric, prepare = fid_metric(feature, real.shape[1], weights, seed)
    metric = metric.to(real.device)
    with torch.no_grad():
        for images, is_real in ((real, True), (fake, False)):
            for i in range(0, images.shape[0], batch_size):
                metric.update(prepare(images[i : i + batch_size]), real=is_real)
        return float(metric.compute())


@torch.no_grad()
def fid(
    model: VAE,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    feature: str | nn.Module = "inception",
    n: int = 10_000,
    seed: int = 0,
    batch_size: int = 500,
    weights: str | None = None,
) -> float:
    """FID of n prior samples against (up to) n images of x. A class-conditional model
    samples with the labels y of those images, so both sets have the same class mix."""
    if x.shape[0] < 2 or n < 2:
        raise ConfigError("FID needs at least 2 real images and 2 samples")
    real = x[:n]
    n = real.shape[0]
    if model.conditional and y is None:
        raise ConfigError("FID of a class-conditional model needs the test labels")
    g = torch.Generator(device=model.device).manual_seed(seed)
    fake = []
    for i in range(0, n, batch_size):
        m = min(batch_size, n - i)
        labels = (
            None
            if y is None or not model.conditional
            else _labels(y, slice(i, i + m), model.device)
        )
        fake.append(model.sample(m, labels, generator=g).cpu())
    return fid_images(real, torch.cat(fake), feature, batch_size, weights, seed)
