"""What the explorer shows for each model family: the numbers beside the latents, the
sliders' range, and the draws of the model's own prior.

- Gaussian VAE, N(0, I) prior: the closed-form KL per dimension, sliders over -4 to 4,
  prior draws N(0, I).
- VampPrior (`model.prior vamp`) and IAF (`model.posterior iaf`): the KL is a Monte Carlo
  estimate, log q(z|x) - log p(z) with the flow's log-det in log q, which does not split by
  dimension: the sliders carry each dimension's activity (Cov_x of the posterior's point,
  f(mu) for the IAF) and the page gives the model's own KL estimate as one number. Prior
  draws are the model's (`sample_prior`: a random pseudo-input's posterior; N(0, I) under
  an IAF).
- Ladder VAE: every layer's dimensions, named z<layer>[i], with the model's KL per
  dimension (each layer's closed-form KL to its prior given the sampled layer above, on a
  seeded draw); prior draws go top-down through the layers.
- VQ-VAE: no sliders and no KL (no density): the page shows the code map (opening on the
  first test image's codes), the codes' use on the test images, and decodes edits of the
  codes; prior draws are the code prior's (`vaekit train-prior`), and without one sampling
  is refused in one line.

Where the prior is not N(0, I) per dimension (VampPrior, ladder), each slider spans the
prior's mean +- 4 sd of that dimension, from RANGE_DRAWS seeded draws, and /decode takes
values up to 4 times the farthest end of a range where that is beyond the explorer's
usual limit (so that the prior's own draws decode).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ...evaluation import codebook, likelihood, metrics
from ...models import VAE, VQVAE, LadderVAE
from ...models.composition import STANDARD
from ...models.quantizer import perplexity

SLIDER_SPAN = 4.0  # a slider spans the prior's mean +- 4 sd of its dimension
RANGE_DRAWS = 2048  # prior draws that set the sliders' ranges where the prior is not N(0, I)
MIN_HALF_WIDTH = 0.5  # a slider of a dimension the prior barely moves still moves


@dataclass
class View:
    """The per-family numbers of /info (see the module doc)."""

    kl: list[float] | None  # the model's KL per dimension, mean over the images; None: none
    activity: list[float] | None  # Cov_x of the posterior's point, where kl is None
    order: list[int]  # the dimensions, most active first
    numbers_note: str  # what the numbers beside the sliders are
    kl_total: float | None  # the model's own KL estimate, mean per image (None: VQ)
    ranges: list[list[float]]  # each dimension's slider range [low, high]
    range_note: str
    sample_note: str  # why the model cannot sample ("" when it can)
    z_limit: float  # the largest |z_d| /decode takes
    codes: dict[str, Any] | None = field(default=None)  # a VQ-VAE's code map and their use

    def info(self) -> dict[str, Any]:
        return {
            "kl": self.kl,
            "activity": self.activity,
            "numbers_note": self.numbers_note,
            "kl_total": self.kl_total,
            "range": self.ranges,
            "range_note": self.range_note,
            "can_sample": not self.sample_note,
            "sample_note": self.sample_note,
            "codes": self.codes,
            "z_limit": self.z_limit,
        }


def prior_kind(model: VAE) -> str:
    return str(getattr(model, "prior", STANDARD))


def family(model: VAE) -> dict[str, Any]:
    """The model's posterior and prior, and a ladder's layer sizes (values per layer: a
    layer of maps holds c_i*h*w), as /info names them."""
    layers = list(model.layer_sizes) if isinstance(model, LadderVAE) else None
    return {"posterior": model.posterior_kind, "prior": prior_kind(model), "layers": layers}


def _order(values: torch.Tensor) -> list[int]:
    return [int(i) for i in torch.argsort(values, descending=True, stable=True)]


def _floats(values: torch.Tensor) -> list[float]:
    return [float(v) for v in values]


@torch.no_grad()
def view(model: VAE, x: torch.Tensor, y: torch.Tensor | None, z_limit: float) -> View:
    """The numbers the page shows for `model`, over the images x (the user's units)."""
    if isinstance(model, VQVAE):
        return _vq_view(model, x, z_limit)
    ranges, range_note = _ranges(model)
    z_limit = max(z_limit, SLIDER_SPAN * max(abs(v) for r in ranges for v in r))
    if model.closed_form_kl:  # the Gaussian VAE's closed form; a ladder's per-layer KLs
        kl = metrics.kl_per_dimension(model, x, y)
        if isinstance(model, LadderVAE):
            note = (
                "Sliders in order of the model's KL per dimension (nats, mean over the test "
                "images): each layer's KL to its prior given the sampled layer above, on one "
                "seeded draw; z1 is the layer the decoder reads."
            )
        else:
            note = (
                "Sliders in order of activity (mean KL per dimension over the test images, nats)."
            )
        kl_total = float(kl.sum())
        return View(_floats(kl), None, _order(kl), note, kl_total, ranges, range_note, "", z_limit)
    activity = metrics.active_units(model, x, y).activity
    kl_total = likelihood.elbo_stats(model, x, y, seed=0)["kl"]
    point = "f(mu), the flow's point at eps = 0" if model.posterior_kind == "iaf" else "mu"
    note = (
        f"Sliders in order of activity: the variance over the test images of the posterior's "
        f"point {point}. No KL per dimension: {model.no_kl_per_dim}; the model's KL "
        f"estimate is {kl_total:.2f} nats per test image (one seeded draw)."
    )
    order = _order(activity)
    return View(None, _floats(activity), order, note, kl_total, ranges, range_note, "", z_limit)


def _ranges(model: VAE) -> tuple[list[list[float]], str]:
    """Each dimension's slider range: -4 to 4 under an N(0, I) prior, else the prior's mean
    +- 4 sd from seeded draws."""
    if prior_kind(model) == STANDARD and not isinstance(model, LadderVAE):
        standard = [[-SLIDER_SPAN, SLIDER_SPAN]] * model.latent_dim
        return standard, "The range shown is the prior's -4 to 4."
    g = torch.Generator(device=model.device).manual_seed(0)
    z = model.sample_prior(RANGE_DRAWS, g).double().cpu()
    mean, half = z.mean(0), (SLIDER_SPAN * z.std(0)).clamp(min=MIN_HALF_WIDTH)
    low, high = mean - half, mean + half
    ranges = [[round(float(a), 2), round(float(b), 2)] for a, b in zip(low, high, strict=True)]
    return ranges, f"Each slider spans its dimension's prior mean +- 4 sd ({RANGE_DRAWS:,} draws)."


def _vq_view(model: VQVAE, x: torch.Tensor, z_limit: float) -> View:
    counts = codebook.code_counts(model, x)
    codes = {
        "shape": list(model.code_shape()),
        "codebook_size": model.codebook_size,
        "counts": [int(c) for c in counts],
        "codes_used": int((counts > 0).sum()),
        "perplexity": perplexity(counts) if int(counts.sum()) else None,
    }
    note = (
        "A VQ-VAE's latent is a map of codes, with no density and no KL: edit a code to "
        "decode the map."
    )
    sample_note = "" if model.has_prior else model.no_prior_reason
    if sample_note:
        sample_note += "; encode a test image and edit its codes instead"
    return View(None, None, [], note, None, [], "", sample_note, z_limit, codes)


def sample(model: VAE, seed: int) -> dict[str, Any]:
    """One draw of the model's own prior, seeded: {"z": ...} (what model.sample with a
    generator seeded `seed` decodes), or a VQ-VAE's {"codes": ..., "z": ...}."""
    g = torch.Generator(device=model.device).manual_seed(seed)
    if isinstance(model, VQVAE):
        codes = model.sample_codes(1, g)  # refuses without a code prior
        z = model.lookup(codes).flatten(1)
        return {"seed": seed, "codes": codes.flatten().tolist(), "z": _floats(z[0])}
    z = model.sample_prior(1, g)
    return {"seed": seed, "z": _floats(z[0])}
