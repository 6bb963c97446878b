"""vaekit: variational autoencoders (Kingma & Welling, 2013) as real software.

import vaekit
run_dir = vaekit.train(vaekit.load_config("noise-demo"))
model = vaekit.load(run_dir)
images = model.sample(16)

Your own encoder and decoder: register their classes (`@vaekit.register("my-encoder")`),
wrap them in `vaekit.VAE(encoder, decoder, latent_dim=..., input_shape=...)` and train
them with `vaekit.Trainer(model, config).fit()`.
"""

# the public API checks its arguments against their annotations (vaekit.arguments); the
# VAE's methods, load and register are checked in vaekit.models
from .arguments import check_methods, checked  # noqa: E402
from .config import Config, load_config  # noqa: E402
from .errors import VaekitError  # noqa: E402
from .evaluation.encode import encode  # noqa: E402
from .evaluation.evaluate import evaluate  # noqa: E402
from .evaluation.score import score  # noqa: E402
from .loading import load  # noqa: E402
from .models import VAE, VQVAE, LadderVAE, register  # noqa: E402
from .training.callbacks import Callback  # noqa: E402
from .training.prior import PriorResult, train_prior  # noqa: E402
from .training.trainer import Trainer, TrainResult, train  # noqa: E402
from .version import __version__

train, evaluate, load_config = checked(train), checked(evaluate), checked(load_config)
encode, score, load = checked(encode), checked(score), checked(load)
train_prior = checked(train_prior)
check_methods(Trainer, ["__init__"])

__all__ = [
    "VAE",
    "VQVAE",
    "LadderVAE",
    "Callback",
    "Config",
    "PriorResult",
    "TrainResult",
    "Trainer",
    "VaekitError",
    "__version__",
    "encode",
    "evaluate",
    "load",
    "load_config",
    "register",
    "score",
    "train",
    "train_prior",
]
