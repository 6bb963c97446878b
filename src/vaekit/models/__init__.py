"""Models: the VAE, its protocol for encoders and decoders, the built-in MLP and conv
families (registered as mlp-encoder, mlp-decoder, conv-encoder, conv-decoder), the
registry that names architectures in config.json, and saving and loading."""

from .paths import slerp
from .registry import register
from .vae import VAE, VAEOutput, load

__all__ = ["VAE", "VAEOutput", "load", "register", "slerp"]
