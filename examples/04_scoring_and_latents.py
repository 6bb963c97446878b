# %% [markdown]
# # Latent codes and scores: encode a dataset, detect what does not belong
#
# A trained VAE gives two things per example: its latent code (the posterior mean and
# log-variance), for search, clustering or a downstream model; and a score (the negative
# ELBO, or the importance-weighted log p(x)), for anomaly and out-of-distribution
# detection. `vaekit.encode` and `vaekit.score` read any data source vaekit reads, a
# chunk at a time; `vaekit encode` and `vaekit score` are the same from a shell.

# %%
import os

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc

import vaekit

TINY = os.environ.get("VAEKIT_EXAMPLES_TINY") == "1"
rng = np.random.default_rng(0)

# %% [markdown]
# ## A model of one kind of image
#
# Bright blobs on a dark background, as uint8 images; a short conv-free MLP VAE learns them.


# %%
def blobs(n: int, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    cy, cx = g.uniform(8, 20, (2, n, 1, 1))
    return (255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18.0)).astype(np.uint8)[:, None]


np.savez("blobs.npz", x_train=blobs(512 if TINY else 4096, 0), x_test=blobs(256, 1))
config = vaekit.load_config(
    "noise-demo",
    {
        "data.name": "blobs.npz",
        "model.latent_dim": 4,
        "train.epochs": 2 if TINY else 20,
        "train.out": "runs/blobs",
        "train.progress": False,
    },
)
model = vaekit.Trainer(None, config, overwrite=True).fit().model

# %% [markdown]
# ## Encode: one code per example

# %%
codes = vaekit.encode(model, "blobs.npz", split="test")
print(codes["mu"].shape, codes["logvar"].shape)  # (256, 4) each
vaekit.encode(model, "blobs.npz", split="test", out="codes.parquet")  # one column per value

# nearest neighbours in latent space: the test images closest to the first one
distance = np.linalg.norm(codes["mu"] - codes["mu"][0], axis=1)
print("closest to image 0:", np.argsort(distance)[1:6])

# %% [markdown]
# ## Score: in-distribution images against shifted ones
#
# The same blobs, inverted, are out of distribution. A higher -ELBO (in nats) means the
# model finds an example less likely; the AUROC of that score tells the two sets apart.

# %%
np.save("inverted.npy", 255 - blobs(256, 1))
inside = vaekit.score(model, "blobs.npz", split="test", iw_samples=8)
shifted = vaekit.score(model, "inverted.npy", iw_samples=8)
scores = torch.tensor(np.concatenate([-inside["log_px"], -shifted["log_px"]]))
labels = torch.cat([torch.zeros(len(inside["log_px"])), torch.ones(len(shifted["log_px"]))])
print(f"AUROC of -log p(x): {binary_auroc(scores, labels.long()).item():.3f}")
