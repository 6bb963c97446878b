"""Convolutional encoder and decoder: residual blocks, GroupNorm and SiLU, for 28 to 256 px.

Each level of `cfg.channels` halves the resolution with a stride-2 conv on the way down
and doubles it back with nearest upsampling + a 3x3 conv on the way up (the function of
a resize-conv, so no checkerboard artifacts; computed as the equivalent stride-2
transposed conv, see `upsample_conv`). The sizes are recorded on the way down and the
decoder upsamples to exactly those, so odd and non-power-of-two sizes (28 -> 14 -> 7 ->
4 -> 2) round-trip without padding. The latent is a vector; a label embedding, when
given, is concatenated to the encoder's flattened features (the decoder gets it
concatenated with z, see `VAE.decode`).
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig


def _layout(x: torch.Tensor) -> torch.memory_format:
    if (
        x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    ):
        return torch.channels_last
    return torch.contiguous_format


class _GroupNormAct(torch.autograd.Function):
    """GroupNorm (+ SiLU) with a fast path for channels_last tensors on the CPU.

    torch's CPU channels_last group-norm kernels are up to 30x slower than the contiguous
    ones for some shapes: the bf16 backward always, the forward below 32x32 (16x16 with 64
    channels, for one). So the backward always runs on contiguous copies, and the forward
    too where the spatial size is small; the copies cost far less than they save (forward +
    backward of a (64, 32, 64, 64) bf16 tensor, one core: 52 ms against torch's 279 ms).
    Fusing the SiLU keeps one activation.
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
        if fmt == torch.channels_last and hw < 32 * 32:
            x = x.contiguous()
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

    def __init__(self, groups: int, channels: int, act: bool = False) -> None:
        super().__init__(groups, channels)
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


def conv_norm_act(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv (no bias: GroupNorm re-centres) -> GroupNorm -> SiLU."""
    return nn.Sequential(
        Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), group_norm(c_out, act=True)
    )


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


class ResBlock(nn.Module):
    """y = SiLU(x + GN(conv(SiLU(GN(conv(x)))))): two 3x3 convs around an identity skip."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = group_norm(channels, act=True)
        self.conv2 = Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = group_norm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(self.conv1(x))
        return F.silu(x + self.norm2(self.conv2(h)))


def level_sizes(height: int, width: int, levels: int) -> list[tuple[int, int]]:
    """Spatial size at each level: a 3x3 stride-2 conv with padding 1 maps n to ceil(n/2)."""
    sizes = [(height, width)]
    for _ in range(levels):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def _check(input_shape: tuple[int, int, int], channels: list[int]) -> None:
    from ..errors import ConfigError

    c, h, w = input_shape
    if not channels:
        raise ConfigError("model.channels must list at least one level for model.arch conv")
    if min(level_sizes(h, w, len(channels))[-2]) == 1:  # the last level would see 1x1
        most = math.ceil(math.log2(min(h, w)))
        raise ConfigError(
            f"model.channels has {len(channels)} levels, too many for {h}x{w} "
            f"images (each halves the size); use at most {most}"
        )


class ConvEncoder(nn.Module):
    """x (B, C, H, W) [+ a label embedding (B, E)] -> features (B, F)."""

    def __init__(
        self, input_shape: tuple[int, int, int], cfg: ModelConfig, cond_dim: int = 0
    ) -> None:
        super().__init__()
        _check(input_shape, cfg.channels)
        c, h, w = input_shape
        layers: list[nn.Module] = []
        c_prev = c
        for ch in cfg.channels:
            layers.append(conv_norm_act(c_prev, ch, stride=2))  # halves the resolution
            layers += [ResBlock(ch) for _ in range(cfg.blocks_per_level)]
            c_prev = ch
        self.body = nn.Sequential(*layers)
        bottom_h, bottom_w = level_sizes(h, w, len(cfg.channels))[-1]
        self.flat_features = c_prev * bottom_h * bottom_w
        self.cond_dim = cond_dim
        self.out_features = self.flat_features + cond_dim

    @property
    def stem(self) -> nn.Conv2d:
        """The first conv: its weights' layout is the model's (channels_last or not)."""
        return cast(nn.Conv2d, cast(nn.Sequential, self.body[0])[0])

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if self.stem.weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)  # match the weights' layout
        h = self.body(x).flatten(1)  # (B, C_L * H_L * W_L)
        if self.cond_dim:
            if cond is None:
                raise ValueError("this encoder is conditional: pass the label embedding")
            h = torch.cat([h, cond.to(h.dtype)], dim=1)  # (B, F)
        return h


class ConvDecoder(nn.Module):
    """z (B, D) [+ a label embedding] -> likelihood parameters (B, C*k, H, W)."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        cfg: ModelConfig,
        in_features: int,
        params_per_pixel: int = 1,
    ) -> None:
        super().__init__()
        _check(input_shape, cfg.channels)
        c, h, w = input_shape
        channels = list(cfg.channels)
        self.sizes = level_sizes(h, w, len(channels))  # [(H, W), ..., (H_L, W_L)]
        self.bottom = (channels[-1], *self.sizes[-1])
        self.fc = nn.Linear(in_features, math.prod(self.bottom))
        self.levels = nn.ModuleList()
        for i in reversed(range(len(channels))):
            c_out = channels[i - 1] if i > 0 else channels[0]
            blocks = [ResBlock(channels[i]) for _ in range(cfg.blocks_per_level)]
            # upsample to level i's size happens in forward; then this conv
            self.levels.append(
                nn.ModuleDict(
                    {"blocks": nn.Sequential(*blocks), "up": conv_norm_act(channels[i], c_out)}
                )
            )
        self.head = Conv2d(channels[0], c * params_per_pixel, 3, padding=1)
        self.out_shape = (c * params_per_pixel, h, w)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(-1, *self.bottom)  # (B, C_L, H_L, W_L)
        if self.head.weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        for level, size in zip(self.levels, reversed(self.sizes[:-1]), strict=True):
            blocks, up = level.values()  # type: ignore[operator]
            x = blocks(x)
            conv, norm = up  # upsample to the encoder's size at this level (odd sizes too)
            x = norm(upsample_conv(x, conv, size))
        return self.head(x)  # (B, C*k, H, W)
