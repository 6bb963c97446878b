"""Which class a (posterior, prior) pair builds: the registry of priors beside N(0, I).

A model is a posterior, a prior and an objective (docs/families.md). The posterior's class
comes from `pretrained.POSTERIORS` (`posterior_class`); a prior other than the standard
normal is registered here by the module that builds it (composed.py: the VampPrior), as
the class that composes it with the Gaussian posterior. Another posterior takes a prior
where its class lists it in `priors`. config.json records the prior under PRIOR where it
is not STANDARD, so a Gaussian VAE's files stay as they were.
"""

from __future__ import annotations

from typing import Any, TypeVar

from ..errors import CheckpointError

T = TypeVar("T", bound=type)
PRIORS: dict[str, type] = {}  # filled by the modules that build them (composed.py)
PRIOR, STANDARD = "prior", "standard"


def model_class(cls: type, model: T, posterior: Any, prior: Any, source: str) -> T:
    """The class to build: `model` (the posterior's class, a subclass of `cls`) for the
    standard prior; else the prior's registered class (with the Gaussian posterior) or
    `model` where it takes that prior; else a CheckpointError naming what is wrong."""
    if prior == STANDARD:
        return model
    composed = PRIORS.get(prior) if isinstance(prior, str) else None
    if composed is None or not issubclass(composed, cls):
        known = ", ".join([STANDARD, *sorted(PRIORS)])
        raise CheckpointError(f"{source}: unknown prior {prior!r} (known: {known})")
    if posterior == "gaussian":
        return composed  # type: ignore[return-value]  # a subclass of cls, as model is
    if prior not in getattr(model, "priors", (STANDARD,)):
        raise CheckpointError(
            f"{source}: the prior {prior} does not compose with the posterior {posterior}"
        )
    return model
