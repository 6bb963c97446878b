"""vaekit: variational autoencoders (Kingma & Welling, 2013) as real software.

import vaekit
run_dir = vaekit.train(vaekit.load_config("noise-demo"))
model = vaekit.load(run_dir)
images = model.sample(16)
"""

__version__ = "0.1.0"

from .config import Config, load_config  # noqa: E402
from .errors import VaekitError  # noqa: E402
from .evaluation.evaluate import evaluate  # noqa: E402
from .io.checkpoint import load  # noqa: E402
from .models import VAE  # noqa: E402
from .training.trainer import train  # noqa: E402

__all__ = [
    "VAE",
    "Config",
    "VaekitError",
    "__version__",
    "evaluate",
    "load",
    "load_config",
    "train",
]
