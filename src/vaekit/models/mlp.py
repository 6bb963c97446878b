"""Fully connected encoder and decoder: the paper's setting (Kingma & Welling 2013, App. C)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .registry import register

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
}


def _mlp(sizes: list[int], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(fan_in, fan_out), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers)


@register("mlp-encoder")
class MLPEncoder(nn.Module):
    """x (B, C, H, W) [+ a label embedding (B, E)] -> features (B, hidden[-1])."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        hidden: list[int],
        activation: str,
        cond_dim: int = 0,
    ) -> None:
        super().__init__()
        self.body = _mlp([math.prod(input_shape) + cond_dim, *hidden], activation)
        self.out_features = hidden[-1]

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = x.flatten(1)  # (B, C*H*W)
        if cond is not None:
            h = torch.cat([h, cond.to(h.dtype)], dim=1)
        return self.body(h)


@register("mlp-decoder")
class MLPDecoder(nn.Module):
    """z (B, D) [+ a label embedding] -> likelihood parameters (B, C*k, H, W)."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        hidden: list[int],
        activation: str,
        in_features: int,
        params_per_pixel: int = 1,
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        self.out_shape = (c * params_per_pixel, h, w)
        self.body = _mlp([in_features, *reversed(hidden)], activation)
        self.head = nn.Linear(hidden[0], math.prod(self.out_shape))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(z)).view(-1, *self.out_shape)
