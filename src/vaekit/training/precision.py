"""Matmul precision: fp32, or bf16 / fp16 autocast, and which one 'auto' picks here."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> 'bf16' where bf16 matmuls run natively (faster than fp32), else 'fp32'."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    try:  # emulated bf16 (no AMX / AVX512-BF16) is slower than fp32
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return "fp32"
    return "bf16" if "amx_bf16" in flags or "avx512_bf16" in flags else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
