# %% [markdown]
# # Your own encoder and decoder
#
# Any `nn.Module` pair that keeps vaekit's small protocol trains, evaluates, saves and
# loads like the built-in models: the encoder maps images (B, C, H, W) to features (the
# VAE adds the mean and log-variance heads) or returns `(mu, logvar)` itself; the decoder
# maps z (B, D) to the likelihood's parameters (Bernoulli logits here). Registering the
# classes by name lets config.json name them without ever running code from a file.

# %%
import os

import torch
from torch import nn

import vaekit

TINY = os.environ.get("VAEKIT_EXAMPLES_TINY") == "1"


@vaekit.register("example-conv-encoder")
class Encoder(nn.Module):  # (B, 1, 28, 28) -> features (B, width * 7 * 7)
    def __init__(self, width: int = 8):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, stride=2, padding=1),
            nn.SiLU(),  # 28 -> 14
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.SiLU(),  # 14 -> 7
            nn.Flatten(),
        )

    def forward(self, x):
        return self.net(x)


@vaekit.register("example-conv-decoder")
class Decoder(nn.Module):  # z (B, D) -> Bernoulli logits (B, 1, 28, 28)
    def __init__(self, latent_dim: int = 8, width: int = 8):
        super().__init__()
        self.width = width
        self.fc = nn.Linear(latent_dim, width * 7 * 7)
        self.net = nn.Sequential(
            nn.SiLU(),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1),  # 7 -> 14
            nn.SiLU(),
            nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1),  # 14 -> 28
        )

    def forward(self, z):
        return self.net(self.fc(z).view(-1, self.width, 7, 7))


# %% [markdown]
# ## Train it through the Trainer, with a callback


# %%
class PrintEpoch(vaekit.Callback):
    def on_epoch_end(self, trainer, record):
        print(f"epoch {record['epoch']}: validation -ELBO {record['val_nelbo']:.1f}")


model = vaekit.VAE(Encoder(), Decoder(latent_dim=8), latent_dim=8, input_shape=(1, 28, 28))
config = vaekit.load_config(
    "noise-demo",
    {
        "data.noise_examples": 256 if TINY else 4096,
        "train.epochs": 1 if TINY else 5,
        "train.out": "runs/own-model",
        "train.progress": False,
    },
)
result = vaekit.Trainer(model, config, callbacks=[PrintEpoch()], overwrite=True).fit()

# %% [markdown]
# ## Load it back (strictly: the architecture, then every weight) and use it

# %%
again = vaekit.VAE.from_pretrained(result.run_dir)
x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
assert torch.allclose(again.reconstruct(x), model.reconstruct(x), atol=1e-6)
print(again.sample(4).shape)
