"""The explorer's request parameters, parsed strictly: each error a BadRequest whose one
line says what was wrong."""

from __future__ import annotations

import re
from typing import Literal, overload

from .latents import Z_LIMIT, BadRequest

NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
INDEX = re.compile(r"\d{1,9}")


def one(params: dict[str, list[str]], name: str, required: bool = True) -> str | None:
    values = params.get(name)
    if not values:
        if required:
            raise BadRequest(f"missing parameter '{name}'")
        return None
    if len(values) > 1:
        raise BadRequest(f"parameter '{name}' is given {len(values)} times; give it once")
    return values[0]


@overload
def parse_index(
    params: dict[str, list[str]], name: str, n: int, required: Literal[True] = True
) -> int: ...
@overload
def parse_index(params: dict[str, list[str]], name: str, n: int, required: bool) -> int | None: ...
def parse_index(
    params: dict[str, list[str]], name: str, n: int, required: bool = True
) -> int | None:
    text = one(params, name, required)
    if text is None:
        return None
    if not INDEX.fullmatch(text) or int(text) >= n:
        raise BadRequest(f"'{name}' must be a whole number from 0 to {n - 1}; got {text[:40]!r}")
    return int(text)


def parse_z(text: str, dim: int, limit: float = Z_LIMIT) -> list[float]:
    """A comma-separated latent vector: exactly `dim` finite decimal numbers within `limit`."""
    parts = text.split(",") if text else []
    if len(parts) != dim:
        raise BadRequest(
            f"z has {len(parts)} values; this model's latent space has {dim} dimensions"
        )
    z = []
    for i, part in enumerate(parts):
        part = part.strip()
        if not NUMBER.fullmatch(part):
            raise BadRequest(f"z[{i}] = {part[:40]!r} is not a finite decimal number")
        value = float(part)
        if not abs(value) <= limit:  # also catches overflow to inf (1e999)
            raise BadRequest(f"z[{i}] = {part[:40]} is outside [-{limit:g}, {limit:g}]")
        z.append(value)
    return z


def check_params(params: dict[str, list[str]], allowed: tuple[str, ...], route: str) -> None:
    for name in params:
        if name not in allowed:
            expected = ", ".join(allowed) or "none"
            raise BadRequest(f"unknown parameter {name[:40]!r} for {route}; expected: {expected}")


def parse_codes(text: str, count: int, codebook_size: int) -> list[int]:
    """A VQ-VAE's map of codes, flat and comma-separated: exactly `count` whole numbers from
    0 to codebook_size - 1."""
    parts = text.split(",") if text else []
    if len(parts) != count:
        raise BadRequest(f"codes has {len(parts)} values; this model's code map has {count}")
    codes = []
    for i, part in enumerate(parts):
        part = part.strip()
        if not INDEX.fullmatch(part) or int(part) >= codebook_size:
            raise BadRequest(
                f"codes[{i}] = {part[:40]!r} is not a code: give a whole number from 0 to "
                f"{codebook_size - 1}"
            )
        codes.append(int(part))
    return codes
