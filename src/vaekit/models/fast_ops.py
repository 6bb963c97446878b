"""CPU kernel work-arounds for the conv VAE: the same functions as torch's modules, faster
on this hardware. Kept apart from the architecture (conv.py), each with parity tests
against the plain torch computation (tests/test_fast_ops.py).

- `GroupNorm`: torch's CPU channels_last group-norm kernels are up to 30x slower than
  the contiguous ones for some shapes; this one takes the fast layout (and fuses SiLU).
- `Conv2d`: oneDNN's convolutions are slow on maps of a few positions with hundreds of
  channels; there the conv runs as unfold + matmul.
- `upsample_conv`: nearest 2x upsampling then a 3x3 conv, computed as one stride-2
  transposed conv with the equivalent 4x4 kernel (4/9 of the multiply-adds).

Each falls back to the plain torch computation off the CPU and where its conditions do
not hold; the parameters are those of the torch module it replaces, so checkpoints load
either way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _layout(x: torch.Tensor) -> torch.memory_format:
    if (
        x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    ):
        return torch.channels_last
    return torch.contiguous_format


# the spatial size (H*W) from which the CPU forward runs torch's channels_last kernel on
# channels_last input; below it, on a contiguous copy (see _GroupNormAct)
CHANNELS_LAST_NORM = 32 * 32


def _kernel_input(x: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """x in a layout torch's native_group_norm accepts: it requires its input to be
    contiguous in the layout `suggest_memory_format` names, which is stricter than
    `is_contiguous(memory_format=)`. Channels_last input of a large map is re-viewed with
    the canonical channels_last strides (x is channels_last-contiguous, so only the strides
    of size-1 dimensions change and the view reads the same elements: a batch of one out
    of diffusers' attention has a batch stride of C, which torch takes for NCHW); any other
    input, a permuted or sliced view included, becomes a contiguous copy (or stays itself)."""
    if fmt != torch.channels_last or math.prod(x.shape[2:]) < CHANNELS_LAST_NORM:
        return x.contiguous()
    n, c, h, w = x.shape
    return x.as_strided((n, c, h, w), (c * h * w, 1, w * c, c))


class _GroupNormAct(torch.autograd.Function):
    """GroupNorm (+ SiLU) with a fast path for channels_last tensors on the CPU.

    torch's CPU channels_last group-norm kernels are up to 30x slower than the contiguous
    ones for some shapes: the bf16 backward always, the forward below 32x32 (16x16 with 64
    channels, for one). So the backward always runs on contiguous copies, and the forward
    too where the spatial size is small; the copies cost far less than they save (forward +
    backward of a (64, 32, 64, 64) bf16 tensor, one core: 52 ms against torch's 279 ms).
    Fusing the SiLU keeps one activation. The output has the input's layout.
    """

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        groups: int,
        eps: float,
        act: bool,
    ) -> torch.Tensor:
        n, c = x.shape[:2]
        hw = math.prod(x.shape[2:])
        fmt = _layout(x)
        x = _kernel_input(x, fmt)
        y, mean, rstd = torch.native_group_norm(x, weight, bias, n, c, hw, groups, eps)
        ctx.groups, ctx.act, ctx.fmt = groups, act, fmt
        ctx.save_for_backward(x, weight, mean, rstd, y if act else None)
        return (F.silu(y) if act else y).contiguous(memory_format=fmt)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, mean, rstd, y = ctx.saved_tensors
        if ctx.act:  # in y's layout: elementwise ops on mixed layouts are slow
            grad = torch.ops.aten.silu_backward(grad.contiguous(memory_format=_layout(y)), y)
        n, c = x.shape[:2]
        dx, dw, db = torch.ops.aten.native_group_norm_backward(
            grad.contiguous(),
            x.contiguous(),
            mean,
            rstd,
            weight,
            n,
            c,
            math.prod(x.shape[2:]),
            ctx.groups,
            list(ctx.needs_input_grad[:3]),
        )
        if dx is not None:
            dx = dx.contiguous(memory_format=ctx.fmt)
        return dx, dw, db, None, None, None


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm with an optional fused SiLU and a layout-aware implementation."""

    def __init__(self, groups: int, channels: int, act: bool = False, eps: float = 1e-5) -> None:
        super().__init__(groups, channels, eps=eps)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":  # the layout detour is for torch's CPU kernels
            y = F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
            return F.silu(y) if self.act else y
        return _GroupNormAct.apply(x, self.weight, self.bias, self.num_groups, self.eps, self.act)


def group_norm(channels: int, act: bool = False) -> GroupNorm:
    """GroupNorm with up to 32 groups that divide `channels` (channels <= 32: per channel)."""
    return GroupNorm(math.gcd(channels, 32), channels, act)


# oneDNN's CPU convolutions are slow on feature maps of a few positions with hundreds of
# channels (a VanillaVAE-sized 2x2 level, batch 64, bf16: 14 ms forward + backward for a
# 256 -> 512 stride-2 conv that unfold + matmul does in 7; 33 ms against 10 for the 512 ->
# 256 upsampling conv); at 4x4 the convolution kernels win again. Hence this threshold.
SMALL_MAP = 4  # output positions at or below which CPU convs run as matmuls


class Conv2d(nn.Conv2d):
    """nn.Conv2d that runs as unfold + matmul on CPU feature maps of <= SMALL_MAP positions.

    Same parameters and the same function (up to float rounding): only the kernel choice
    differs. Elsewhere it is nn.Conv2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.device.type != "cpu"
            or x.dim() != 4  # unbatched (C, H, W)
            or x.shape[0] == 0
            or self.groups != 1
            or self.padding_mode != "zeros"
            or isinstance(self.padding, str)  # "same", "valid"
        ):
            return super().forward(x)
        kh, kw = self.kernel_size
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        ho = (x.shape[-2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        wo = (x.shape[-1] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        if ho * wo > SMALL_MAP:
            return super().forward(x)
        b = x.shape[0]
        cols = F.unfold(x, (kh, kw), (dh, dw), (ph, pw), (sh, sw))  # (B, C_in*kh*kw, L)
        weight = self.weight.reshape(self.out_channels, -1)
        rows = cols.transpose(1, 2).reshape(b * ho * wo, -1)
        y = rows @ weight.t()  # autocast runs it in bf16 like the conv it replaces
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        # (B, H, W, C) viewed as NCHW: channels_last, the layout conv models train in
        y = y.view(b, ho, wo, self.out_channels).permute(0, 3, 1, 2)
        return y if _layout(x) == torch.channels_last else y.contiguous()


# Nearest 2x upsampling followed by a 3x3 conv (padding 1) sees, in each output phase, only
# two rows and two columns of the input: row 2m of the upsampled image reads input rows
# m-1 (tap 0) and m (taps 1 + 2); row 2m+1 reads rows m (taps 0 + 1) and m+1 (tap 2). That
# is a stride-2 transposed conv whose 4x4 kernel is K = U W U^T with U below, per pair of
# channels: the same function with the same parameters at 4/9 of the multiply-adds.
_UPSAMPLE_TAPS = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))


def upsample_conv(x: torch.Tensor, conv: nn.Conv2d, size: tuple[int, int]) -> torch.Tensor:
    """conv(nearest-upsample(x, size)) for a 3x3, stride-1, padding-1 `conv`.

    Where `size` is exactly twice x's it runs as one transposed conv (see `_UPSAMPLE_TAPS`;
    equal up to float rounding); other sizes (odd levels: 7 -> 14 -> 28 goes 4 -> 7 first),
    any other conv and empty or unbatched input upsample and convolve as written.
    """
    h, w = x.shape[-2:]
    if (
        tuple(size) != (2 * h, 2 * w)
        or (conv.kernel_size, conv.stride, conv.padding, conv.dilation)
        != ((3, 3), (1, 1), (1, 1), (1, 1))
        or conv.groups != 1
        or conv.padding_mode != "zeros"
        or x.dim() != 4
        or x.shape[0] == 0
    ):
        return conv(F.interpolate(x, size=size, mode="nearest"))
    taps = torch.tensor(_UPSAMPLE_TAPS, dtype=conv.weight.dtype, device=conv.weight.device)
    c_out, c_in = conv.weight.shape[:2]
    # (C_out, C_in, 3, 3) -> the transposed conv's (C_in, C_out, 4, 4): K[a, b] =
    # sum_kl U[a, k] U[b, l] W[k, l], one (9 -> 16) matmul per channel pair
    kernel = conv.weight.reshape(c_out, c_in, 9) @ torch.kron(taps, taps).t()
    kernel = kernel.transpose(0, 1).reshape(c_in, c_out, 4, 4)
    if x.device.type != "cpu" or h * w > SMALL_MAP:
        return F.conv_transpose2d(x, kernel, conv.bias, stride=2, padding=1)
    # a tiny map (see SMALL_MAP): every input position times the whole kernel, one matmul,
    # then fold adds the overlapping 4x4 patches into the 2h x 2w output
    b = x.shape[0]
    rows = x.permute(0, 2, 3, 1).reshape(b * h * w, c_in)
    patches = (rows @ kernel.reshape(c_in, -1)).view(b, h * w, -1).transpose(1, 2)
    y = F.fold(patches, (2 * h, 2 * w), 4, stride=2, padding=1)  # (B, C_out, 2h, 2w)
    if conv.bias is not None:
        y = y + conv.bias.to(y.dtype).view(1, -1, 1, 1)
    return y.contiguous(memory_format=_layout(x))
