# %% [markdown]
# # Your own data: a table and a folder of images
#
# vaekit trains on what you have: arrays, `.npz`/`.npy` files, `.csv`/`.parquet` tables,
# folders of images, torch and Hugging Face datasets. The saved model remembers how the
# data were scaled (`data.normalize`), so it takes and gives data in your units.

# %%
import os
from pathlib import Path

import numpy as np
from PIL import Image

import vaekit

TINY = os.environ.get("VAEKIT_EXAMPLES_TINY") == "1"
EPOCHS = 1 if TINY else 10
rng = np.random.default_rng(0)

# %% [markdown]
# ## A table: rows of numbers in their own units
#
# Two correlated columns on very different scales; `data.normalize standardize` scales
# each column for the model, and the model gives rows back in the table's units.

# %%
n = 512
a = rng.normal(100.0, 15.0, n)
table = np.stack([a, 0.01 * a + rng.normal(0.0, 0.1, n)], axis=1).astype(np.float32)
np.save("table.npy", table)  # (N, F): a table of F columns
config = vaekit.load_config(
    "noise-demo",
    {
        "data.name": "table.npy",
        "data.normalize": "standardize",
        "model.likelihood": "gaussian",
        "model.latent_dim": 1,
        "model.hidden": [32],
        "train.epochs": EPOCHS,
        "train.out": "runs/table",
        "train.progress": False,
    },
)
table_model = vaekit.Trainer(None, config, overwrite=True).fit().model
rows = table_model.sample(5)  # (5, 2): rows in the table's units
print(rows)

# %% [markdown]
# ## A folder of images
#
# Any folder of PNG/JPEG files (subfolders become labels). Here we draw a few coloured
# squares; images are decoded once and cached as uint8.

# %%
folder = Path("shapes")
for i in range(64):
    image = np.full((32, 32, 3), 255, np.uint8)
    x0, y0 = rng.integers(0, 16, 2)
    image[y0 : y0 + 16, x0 : x0 + 16] = rng.integers(0, 256, 3, dtype=np.uint8)
    (folder / ("a" if i % 2 else "b")).mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / ("a" if i % 2 else "b") / f"{i}.png")

config = vaekit.load_config(
    "noise-demo",
    {
        "data.name": str(folder),
        "data.image_size": 32,
        "model.arch": "conv",
        "model.channels": [8, 16],
        "model.latent_dim": 8,
        "model.likelihood": "laplace",
        "train.epochs": EPOCHS,
        "train.batch_size": 16,
        "train.out": "runs/folder",
        "train.progress": False,
    },
)
folder_model = vaekit.Trainer(None, config, overwrite=True).fit().model
print(folder_model.sample(4).shape)  # (4, 3, 32, 32) in [0, 1]
