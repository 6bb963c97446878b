"""Models: the VAE and its encoder/decoder families."""

from .vae import VAE, VAEOutput, slerp

__all__ = ["VAE", "VAEOutput", "slerp"]
