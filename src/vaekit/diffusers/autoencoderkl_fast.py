"""fast_ops' CPU paths fitted into diffusers' AutoencoderKL halves, weight for weight.

diffusers' Encoder and Decoder are kept as diffusers builds them (autoencoderkl.py); this
swaps, in place, the few submodules whose function fast_ops computes faster, without
changing a parameter name or shape, so state dicts still map 1:1 to AutoencoderKL's:

- each `ResnetBlock2D` (no time embedding, no resampling, SiLU) gets fast_ops' GroupNorm
  with the SiLU fused, for `norm1` and `norm2`, and its `nonlinearity` becomes Identity
  (the block applies it right after each norm and nowhere else); the halves'
  `conv_norm_out` + `conv_act` the same. Under bf16 autocast the norm then runs on the
  bf16 activations (statistics in float32 inside the kernel) instead of autocast's
  float32 group_norm with a cast back and forth around every conv;
- each `Upsample2D` (nearest 2x, then a 3x3 conv) runs as `fast_ops.upsample_conv`: one
  stride-2 transposed conv with the equivalent 4x4 kernel, 4/9 of the multiply-adds.
- each `Attention` (the mid blocks') hands its output back in its input's layout.
  diffusers' processor returns a channels_last-strided view (a transpose and reshape) of
  NCHW input. torch's GroupNorm happens to make it NCHW again at batch 1 only (it reads a
  batch of one's strides as NCHW); fast_ops' GroupNorm keeps its input's layout, so every
  later conv of the half, forward and backward, would run channels_last on NCHW weights:
  slower on the CPU (benchmarks/results/vqmodel_step_256.md against _256_nchw.md: the
  whole step 0.73x diffusers' before this, 1.10x after), and each weight's gradient
  copied back to NCHW. The copy here is one activation of the lowest resolution.

In float32 the norms are bit-identical to torch.nn.GroupNorm + SiLU; the upsampling
agrees to float32 rounding (tests/test_autoencoderkl_fast.py). diffusers is imported only
by the caller (autoencoderkl.py), which passes its classes in.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..models.fast_ops import GroupNorm, _layout, upsample_conv


def _fused(norm: nn.Module, act: bool) -> GroupNorm | None:
    """fast_ops' GroupNorm holding `norm`'s parameters, or None where it is not a plain
    affine torch GroupNorm."""
    if type(norm) is not nn.GroupNorm or not norm.affine:
        return None
    fast = GroupNorm(norm.num_groups, norm.num_channels, act=act, eps=norm.eps)
    fast.weight, fast.bias = norm.weight, norm.bias  # the same Parameters: nothing copied
    return fast


class UpsampleConv(nn.Module):
    """diffusers' Upsample2D (nearest 2x or to `output_size`, then `conv`) via
    `fast_ops.upsample_conv`; `conv` keeps its name, so the weights' keys do not change."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(
        self, hidden_states: torch.Tensor, output_size: Any = None, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        h, w = hidden_states.shape[-2:]
        size = (2 * h, 2 * w) if output_size is None else tuple(output_size)
        return upsample_conv(hidden_states, self.conv, size)


def _plain_resnet(block: Any) -> bool:
    return (
        getattr(block, "upsample", 0) is None
        and getattr(block, "downsample", 0) is None
        and getattr(block, "time_emb_proj", 0) is None
        and type(getattr(block, "nonlinearity", None)) is nn.SiLU
    )


def _plain_upsampler(up: Any) -> bool:
    conv = getattr(up, "conv", None)
    return (
        getattr(up, "use_conv", False)
        and not getattr(up, "use_conv_transpose", True)
        and getattr(up, "interpolate", False)
        and getattr(up, "norm", 0) is None
        and getattr(up, "name", "") == "conv"
        and type(conv) is nn.Conv2d
    )


def _input_layout(module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> Any:
    """A forward hook (with_kwargs): a 4-d output in the layout of the 4-d input, passed
    by position or as `hidden_states=` (see the docstring)."""
    x = args[0] if args else kwargs.get("hidden_states")
    if isinstance(output, torch.Tensor) and isinstance(x, torch.Tensor) and output.dim() == 4:
        return output.contiguous(memory_format=_layout(x))
    return output


def use_fast_ops(
    half: nn.Module, resnet_cls: Any, upsample_cls: Any, attention_cls: Any = None
) -> int:
    """Swap the fast paths into diffusers' Encoder or Decoder `half`, in place; returns how
    many modules were swapped (or, for attentions, hooked). `resnet_cls` / `upsample_cls` /
    `attention_cls`: diffusers' ResnetBlock2D, Upsample2D and Attention (only blocks of
    exactly these classes, in the plain configuration the VAE builds, are touched; anything
    else keeps diffusers' own code)."""
    swapped = 0
    module: Any
    for module in list(half.modules()):
        if attention_cls is not None and type(module) is attention_cls:
            module.register_forward_hook(_input_layout, with_kwargs=True)
            swapped += 1
        if type(module) is resnet_cls and _plain_resnet(module):
            norm1, norm2 = _fused(module.norm1, True), _fused(module.norm2, True)
            if norm1 is not None and norm2 is not None:
                module.norm1, module.norm2, module.nonlinearity = norm1, norm2, nn.Identity()
                swapped += 1
        upsamplers = getattr(module, "upsamplers", None)
        if isinstance(upsamplers, nn.ModuleList):
            up: Any
            for i, up in enumerate(upsamplers):
                if type(up) is upsample_cls and _plain_upsampler(up):
                    upsamplers[i] = UpsampleConv(up.conv)
                    swapped += 1
    norm, act = getattr(half, "conv_norm_out", None), getattr(half, "conv_act", None)
    fused = _fused(norm, True) if norm is not None and type(act) is nn.SiLU else None
    if fused is not None:
        half.conv_norm_out, half.conv_act = fused, nn.Identity()
        swapped += 1
    return swapped
