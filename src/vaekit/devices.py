"""A device a user names in Python (`vaekit.load(run, device=...)`,
`VAE.from_pretrained(..., device=...)`), checked to exist on this machine before anything
is loaded, so that a GPU this machine lacks is one line and not torch's AssertionError
('Torch not compiled with CUDA enabled') or RuntimeError deep inside `.to()`."""

from __future__ import annotations

from typing import Any

import torch

from .errors import ConfigError

KINDS = "'cpu', 'cuda', 'cuda:N', 'mps' or a torch.device"


def check_device(device: Any, what: str = "device") -> torch.device:
    """`device` (a name, a torch.device or a CUDA index) as a torch.device that exists here;
    a ConfigError naming it otherwise."""
    if isinstance(device, bool) or not isinstance(device, (str, torch.device, int)):
        raise ConfigError(f"{what} must be {KINDS}; got {type(device).__name__} {device!r:.60}")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"{what} {device!r:.60} is not a device; use {KINDS}") from None
    if parsed.type == "meta":
        raise ConfigError(f"{what} 'meta' holds no weights; use {KINDS}")
    if parsed.type == "cpu":
        return torch.device("cpu")
    try:
        torch.empty(0, device=parsed)
    except Exception:  # AssertionError without CUDA, RuntimeError for a missing index
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise ConfigError(
            f"{what} {str(parsed)!r} is not available on this machine, which has {have} CUDA "
            "device(s); use 'cpu'" + (f" or 'cuda:0' to 'cuda:{have - 1}'" if have else "")
        ) from None
    return parsed
