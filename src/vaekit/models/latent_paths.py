"""Paths through the latent space between two posterior means: straight, or spherical
(which keeps the points at the prior's typical radius, where a straight line between two
codes dips towards the origin, a region the decoder rarely saw)."""

from __future__ import annotations

import torch

from ..errors import ConfigError

METHODS = ("linear", "slerp")


def latent_path(mu1: torch.Tensor, mu2: torch.Tensor, steps: int, method: str) -> torch.Tensor:
    """`steps` points from mu1 to mu2 (each (N, D)), both ends included: (N, steps, D)."""
    check_method(method)
    t = torch.linspace(0.0, 1.0, steps, device=mu1.device).view(1, steps, 1)
    a, b = mu1.unsqueeze(1), mu2.unsqueeze(1)
    return (1 - t) * a + t * b if method == "linear" else slerp(a, b, t)


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ConfigError(f"unknown interpolation {method!r}: use 'linear' or 'slerp'")


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between a and b (..., D); linear where they are parallel."""
    a_n = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    b_n = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    omega = torch.acos((a_n * b_n).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    linear = (1 - t) * a + t * b
    spherical = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / so.clamp_min(1e-8)
    return torch.where(so.abs() < 1e-4, linear, spherical)
