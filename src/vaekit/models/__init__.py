"""Models: the VAE, its protocol for encoders and decoders, the built-in MLP and conv
families (registered as mlp-encoder, mlp-decoder, conv-encoder, conv-decoder), the
registry that names architectures in config.json, and saving and loading.

The VAE's public methods, `load` and `register` check their arguments against their
annotations on every call (`vaekit.arguments`), except INTERNAL: the training loop's
building blocks, called on tensors the model made itself, in its own units."""

from ..arguments import check_methods, checked, public_methods
from .composed import IAFVAE, ComposedVAE
from .hierarchical import LadderVAE  # registers model.posterior ladder
from .latent_paths import slerp
from .registry import register
from .vae import VAE, VAEOutput, load
from .vqvae import VQVAE

INTERNAL = frozenset(
    {"forward", "elbo_terms", "log_importance_weights", "log_likelihood", "mean", "prepare",
     "from_folder", "set_normalization", "posterior", "pre_quantize", "quantized",
     "gaussian", "transform", "components", "log_prior", "sample_prior"}
)  # fmt: skip
check_methods(VAE, public_methods(VAE, skip=INTERNAL))
# the VQ-VAE's own methods (those it inherits are checked above)
check_methods(VQVAE, [m for m in public_methods(VQVAE, skip=INTERNAL) if m in vars(VQVAE)])
# the ladder's own (its passes are internal, as the VAE's posterior is)
LADDER_INTERNAL = INTERNAL | {"bottom_up", "top_down", "prior_step", "layer_kls", "layer_names"}
check_methods(
    LadderVAE, [m for m in public_methods(LadderVAE, skip=LADDER_INTERNAL) if m in vars(LadderVAE)]
)
load = checked(load)
register = checked(register)

__all__ = [
    "INTERNAL",
    "VAE",
    "ComposedVAE",
    "IAFVAE",
    "LadderVAE",
    "VQVAE",
    "VAEOutput",
    "load",
    "register",
    "slerp",
]
