"""The model protocol, checked once when a VAE is built, so that a network that does not
fit fails at construction in one line instead of deep inside a training step.

An encoder maps x (B, C, H, W) to features (B, F) or to (mu, logvar), each (B, D) or, for
a spatial latent of shape (C_z, h, w), each (B, C_z, h, w); a decoder maps z (B, D') or
(B, C_z, h, w) to the likelihood's parameters (B, C*k, H, W), D' = D plus the label
embedding's size for a conditional model. Each half is probed with one zero input,
in eval mode, without gradients, and its training flags are put back.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import limits
from ..arguments import is_whole
from ..errors import ConfigError, DataError, VaekitError, first_line

LIKELIHOODS = ("bernoulli", "gaussian", "laplace")
# a probe input of more values than this (a 3 x 1024 x 1024 image has 3.1 M) runs on the
# meta device: an edited config.json of input_shape [3, 16000, 16000] asks for no memory
PROBE_VALUES = 1 << 22


def check_settings(
    latent_dim: Any,
    input_shape: Any,
    likelihood: Any,
    obs_scale: Any,
    num_classes: Any,
    label_dim: Any,
) -> None:
    """The VAE's own settings, each a clear error when it cannot work."""
    if not is_whole(latent_dim, 1):
        raise ConfigError(f"latent_dim must be a whole number >= 1; got {latent_dim!r}")
    if (
        not isinstance(input_shape, Sequence)
        or len(input_shape) != 3
        or not all(is_whole(s, 1) for s in input_shape)
    ):
        raise ConfigError(
            f"input_shape must be (C, H, W), three whole numbers >= 1; got {input_shape!r}"
        )
    if likelihood not in LIKELIHOODS:
        raise ConfigError(f"likelihood must be one of {', '.join(LIKELIHOODS)}; got {likelihood!r}")
    if not isinstance(obs_scale, (int, float)) or not math.isfinite(obs_scale) or obs_scale <= 0:
        raise ConfigError(f"obs_scale must be a finite number > 0; got {obs_scale!r}")
    if not is_whole(num_classes, 0) or not is_whole(label_dim, 1):
        raise ConfigError(
            f"num_classes must be >= 0 and label_dim >= 1; got {num_classes!r}, {label_dim!r}"
        )


def check_latent_shape(latent_shape: Any, latent_dim: Any, num_classes: Any) -> None:
    """A spatial latent's (C, h, w): whole numbers, as many values as latent_dim says, and a
    model without labels (a label embedding joins a latent vector only)."""
    if latent_shape is None:
        return
    if (
        not isinstance(latent_shape, Sequence)
        or len(latent_shape) != 3
        or not all(is_whole(s, 1) for s in latent_shape)
    ):
        raise ConfigError(
            f"latent_shape must be (C, h, w), three whole numbers >= 1; got {latent_shape!r}"
        )
    if math.prod(latent_shape) != latent_dim:
        raise ConfigError(
            f"latent_shape {tuple(latent_shape)} holds {math.prod(latent_shape)} values, "
            f"but latent_dim is {latent_dim}"
        )
    if num_classes:
        raise ConfigError(
            "a class-conditional VAE needs a latent vector (its label embedding joins z); "
            "drop the spatial latent or the labels"
        )


def encoder_features(
    encoder: nn.Module,
    input_shape: tuple[int, int, int],
    latent_dim: int,
    cond_dim: int,
    latent_shape: tuple[int, ...] | None = None,
) -> int | None:
    """F for an encoder of features (B, F), None for one that returns (mu, logvar), each
    (B, latent_dim) or, given a spatial `latent_shape`, (B, *latent_shape): one zero
    image (and, with cond_dim, a zero label embedding) goes through the encoder. An
    `out_features` attribute, where the encoder declares one, must agree."""
    device = next(encoder.parameters(), torch.empty(0)).device
    x = torch.zeros(1, *input_shape, device=_probe_device(input_shape, device))
    cond = torch.zeros(1, cond_dim, device=device) if cond_dim else None
    out = probe(encoder, "encoder", x, cond, f"one image of shape {input_shape}")
    declared = getattr(encoder, "out_features", None)
    if torch.is_tensor(out) and out.dim() == 2 and latent_shape is None:
        heads = 2 * (int(out.shape[1]) + 1) * latent_dim * 4  # the VAE's mean and log-variance
        limits.check_fits(heads, f"the mean and log-variance heads of latent_dim {latent_dim:,}",
                          "make latent_dim smaller")  # fmt: skip
        if isinstance(declared, int) and declared != out.shape[1]:
            raise ConfigError(
                f"the encoder {type(encoder).__name__} declares out_features {declared} but "
                f"returned features (1, {out.shape[1]})"
            )
        return int(out.shape[1])
    pair = isinstance(out, (tuple, list)) and len(out) == 2
    each = (1, latent_dim) if latent_shape is None else (1, *latent_shape)
    if pair and all(torch.is_tensor(t) and tuple(t.shape) == each for t in out):
        return None
    expected = (
        f"features (B, F) or a pair (mu, logvar), each (B, {latent_dim})"
        if latent_shape is None
        else f"a pair (mu, logvar), each (B, {', '.join(map(str, latent_shape))})"
    )
    raise ConfigError(
        f"the encoder {type(encoder).__name__} returned {shapes(out)} for one image of shape "
        f"{input_shape}; an encoder of this model returns {expected}"
    )


def check_decoder(
    decoder: nn.Module,
    input_shape: tuple[int, int, int],
    z_shape: int | tuple[int, ...],
    likelihood: str,
    learn_scale: bool,
) -> None:
    """The decoder maps one zero latent, a vector of `z_shape` values or a map of shape
    `z_shape`, to (1, C*k, H, W), or fails here."""
    c, h, w = input_shape
    expected = (1, c * (2 if learn_scale else 1), h, w)
    shape = (z_shape,) if isinstance(z_shape, int) else tuple(z_shape)
    z = torch.zeros(1, *shape, device=_probe_device(shape, next(decoder.parameters(), None)))
    size = str(z_shape) if isinstance(z_shape, int) else f"shape {tuple(z_shape)}"
    out = probe(decoder, "decoder", z, None, f"a latent of {size}")
    if not torch.is_tensor(out) or tuple(out.shape) != expected:
        scales = " with learned scales" if learn_scale else ""
        raise ConfigError(
            f"the decoder {type(decoder).__name__} returned {shapes(out)} for one latent of "
            f"{'size ' if isinstance(z_shape, int) else ''}{size}; a {likelihood} "
            f"likelihood{scales} needs parameters {expected}"
        )


def probe(
    module: nn.Module, role: str, x: torch.Tensor, cond: torch.Tensor | None, what: str
) -> Any:
    """module(x) or module(x, cond), in eval mode and without gradients; every submodule's
    training flag is put back afterwards. A module that fails on `what` (a description of
    x) is a ConfigError naming it."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            if x.is_meta:  # shapes only: no image of gigabytes is allocated
                return _on_meta(module, x, cond)
            return module(x) if cond is None else module(x, cond)
    except (RuntimeError, ValueError, TypeError, IndexError, NotImplementedError) as e:
        raise ConfigError(
            f"the {role} {type(module).__name__} failed on {what}: {first_line(e)}"
        ) from None
    finally:
        for m, flag in flags:
            m.training = flag


def _probe_device(shape: Sequence[int], near: Any) -> torch.device:
    """Where a probe input of `shape` is made: beside the module's weights (`near`, a
    device or a tensor), or on the meta device when it holds more than PROBE_VALUES."""
    if math.prod(shape) > PROBE_VALUES:
        return torch.device("meta")
    return near.device if torch.is_tensor(near) else torch.device(near or "cpu")


def _on_meta(module: nn.Module, x: torch.Tensor, cond: torch.Tensor | None) -> Any:
    """module(x[, cond]) on PyTorch's meta device, its weights swapped for meta tensors of
    their shapes for the call (torch.func.functional_call): shapes are computed and checked,
    and nothing the size of x or of an activation is allocated."""
    from torch.func import functional_call

    meta = {
        name: torch.empty_like(t, device="meta")
        for name, t in itertools.chain(module.named_parameters(), module.named_buffers())
    }
    args = (x.to("meta"),) if cond is None else (x.to("meta"), cond.to("meta"))
    return functional_call(module, meta, args, strict=False, tie_weights=True)


def shapes(out: Any) -> str:
    """What a module returned, in words: 'a tensor (1, 8)', '(a tensor ..., ...)'."""
    if torch.is_tensor(out):
        return f"a tensor {tuple(out.shape)}"
    if isinstance(out, (tuple, list)):
        return "(" + ", ".join(shapes(o) for o in out) + ")"
    return type(out).__name__


def count(name: str, value: object, low: int = 0) -> int:
    """A whole number >= low, or a one-line ConfigError naming the argument."""
    if not is_whole(value, low):
        raise ConfigError(f"{name} must be a whole number >= {low}; got {value!r}")
    return value


def check_size(
    halves: Callable[[], tuple[nn.Module, nn.Module]], latent_dim: int, what: str, copies: int = 2
) -> None:
    """Build the encoder and decoder on the meta device first (shapes only, no memory) and
    refuse, before anything is allocated, a model whose weights would not fit `copies`
    times (loading holds the file's and the model's). The halves are not run: a meta
    forward pass would import torch's compiler, a second of every start. The mean and
    log-variance heads count when the encoder declares `out_features`. A half that cannot
    be built on meta goes unchecked."""
    try:
        with torch.device("meta"):
            encoder, decoder = halves()
    except VaekitError:
        raise
    except Exception:  # user code that needs real tensors to construct itself
        return
    tensors = itertools.chain(*(m.parameters() for m in (encoder, decoder)))
    count = sum(t.numel() for t in tensors)
    features = getattr(encoder, "out_features", None)
    if isinstance(features, int):
        count += 2 * (features + 1) * latent_dim
    limits.check_fits(
        count * 4 * copies,
        f"{what}, {count:,} parameters,",
        "make it smaller (latent_dim, hidden, channels)",
    )


def check_z(z: Any, latent_dim: int, latent_shape: tuple[int, ...] | None) -> None:
    """z a float tensor (B, latent_dim), or for a spatial latent also the map (B, C_z, h, w);
    a DataError that says which shapes the model takes otherwise."""
    shapes_ok = [(latent_dim,)] + ([tuple(latent_shape)] if latent_shape is not None else [])
    if (
        torch.is_tensor(z)
        and (z.is_floating_point() or z.is_meta)
        and z.dim() >= 2
        and tuple(z.shape[1:]) in shapes_ok
    ):
        return
    what = f"a tensor {tuple(z.shape)} of {z.dtype}" if torch.is_tensor(z) else type(z).__name__
    takes = " or ".join(f"(B, {', '.join(map(str, s))})" for s in shapes_ok)
    raise DataError(f"latent codes z must be a float tensor {takes} for this model; got {what}")


def check_labels(y: Any, n: int) -> None:
    """Labels for n examples: one label (for all) or n of them."""
    if y is None or isinstance(y, int):
        return
    count = y.numel() if torch.is_tensor(y) else np.size(y)
    if count not in (1, n):
        raise DataError(f"labels y must be one class or {n} classes (one per example); got {count}")


def check_classes(y: torch.Tensor, classes: int) -> None:
    """Labels y (integers) all classes 0 to classes - 1; reads two values (a host sync on
    a GPU)."""
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise DataError(
            f"labels must be classes 0 to {classes - 1}; got {int(y.min())}..{int(y.max())}"
        )


def check_examples(x: Any, input_shape: tuple[int, int, int]) -> None:
    """x a float tensor (B, C, H, W) of the model's input shape (the model's units)."""
    if not (torch.is_tensor(x) and x.dim() == 4 and tuple(x.shape[1:]) == tuple(input_shape)):
        got = f"a tensor {tuple(x.shape)}" if torch.is_tensor(x) else type(x).__name__
        raise DataError(
            f"examples must be a tensor (B, {', '.join(map(str, input_shape))}) for this "
            f"model; got {got}"
        )


def as_input(x: Any, input_shape: tuple[int, int, int]) -> torch.Tensor:
    """x (a numeric tensor or numpy array; uint8 read as x / 255) as float32 (N, C, H, W)
    for a model of `input_shape`; a model of table rows ((F, 1, 1)) also takes (N, F)."""
    if isinstance(x, np.ndarray) and x.dtype.kind in "biuf":
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor) or x.dtype.is_complex or x.dtype == torch.bool:
        kind = x.dtype if isinstance(x, torch.Tensor | np.ndarray) else type(x).__name__
        raise DataError(f"examples must be a numeric tensor or numpy array; got {kind}")
    x = x.div(255.0) if x.dtype == torch.uint8 else x.float()
    table = tuple(input_shape[1:]) == (1, 1)
    if table and x.dim() == 2:
        x = x.view(*x.shape, 1, 1)
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(input_shape):
        raise DataError(
            f"examples of shape {tuple(x.shape)} do not fit this model, which takes "
            f"(N, {', '.join(map(str, input_shape))})"
            + (f" or rows (N, {input_shape[0]})" if table else "")
            + f": it expects each example to be {tuple(input_shape)} (C, H, W)"
        )
    return x
