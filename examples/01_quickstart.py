# %% [markdown]
# # Quick start: train a VAE, evaluate it, sample, and write the report
#
# The `noise-demo` preset trains on generated images, so this notebook needs no dataset.
# Set `TINY = False` (or unset `VAEKIT_EXAMPLES_TINY`) for a longer run; the test suite
# runs every example with `VAEKIT_EXAMPLES_TINY=1`.

# %%
import os

import torch

import vaekit

TINY = os.environ.get("VAEKIT_EXAMPLES_TINY") == "1"
config = vaekit.load_config(
    "noise-demo",
    {
        "train.epochs": 1 if TINY else 5,
        "data.noise_examples": 256 if TINY else 4096,
        "train.out": "runs/quickstart",
        "train.progress": False,
    },
)
result = vaekit.Trainer(None, config, overwrite=True).fit()
print("validation -ELBO per epoch:", [round(h["val_nelbo"], 1) for h in result.history])

# %% [markdown]
# ## Evaluate on held-out images
#
# The ELBO is a bound; with `iw_samples` the importance-weighted estimate of log p(x) is
# tighter (Burda et al. 2015). Both are in nats per example.

# %%
model = vaekit.load(result.run_dir)
x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
stats = vaekit.evaluate(model, x, iw_samples=10)
print(f"-ELBO {stats['nelbo']:.1f}, log p(x) >= {stats['log_px']:.1f} nats")

# %% [markdown]
# ## Sample, reconstruct, interpolate

# %%
samples = model.sample(16, generator=torch.Generator().manual_seed(1))  # (16, 1, 28, 28)
recon = model.reconstruct(x[:8])  # decoded posterior means, in [0, 1]
path = model.interpolate(x[0], x[1], steps=8, method="slerp")  # (1, 8, 1, 28, 28)
print(samples.shape, recon.shape, path.shape)

# %% [markdown]
# ## The report: one offline HTML page with every number and picture of the run

# %%
from vaekit.cli import main  # the same as `vaekit report RUN` in a shell  # noqa: E402

main(["report", str(result.run_dir), "--max-test", "64", "--iw-samples", "10"])
print((result.run_dir / "report.html").exists())
