"""The CPU kernel work-arounds of models/fast_ops.py against the plain torch computation:
the same values and gradients (float64), under bf16 autocast, in both memory layouts, on
the map sizes where each path runs, and on empty and unbatched input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vaekit.models.fast_ops import Conv2d, GroupNorm, _GroupNormAct, upsample_conv


def _contiguous(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous()


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _attention_output(x: torch.Tensor) -> torch.Tensor:
    """channels_last with the strides diffusers' attention block hands on (its output
    reshaped from (B, HW, C), plus the residual): for a batch of one, a batch stride of C,
    which torch's `suggest_memory_format` takes for NCHW (the failure of issue 22)."""
    n, c, h, w = x.shape
    y = x.contiguous(memory_format=torch.channels_last)
    return y.as_strided(y.shape, (c if n == 1 else c * h * w, 1, w * c, c))


def _permuted(x: torch.Tensor) -> torch.Tensor:
    """Neither contiguous nor channels_last: (N, C, W, H) memory seen as (N, C, H, W)."""
    return x.transpose(2, 3).contiguous().transpose(2, 3)


def _sliced(x: torch.Tensor) -> torch.Tensor:
    """Neither contiguous nor channels_last: every other channel of a wider tensor."""
    return torch.stack([x, torch.zeros_like(x)], 2).flatten(1, 2)[:, ::2]


LAYOUTS = {
    "contiguous": (_contiguous, torch.contiguous_format),
    "channels_last": (_channels_last, torch.channels_last),
    "attention-output": (_attention_output, torch.channels_last),
    "permuted": (_permuted, torch.contiguous_format),
    "sliced": (_sliced, torch.contiguous_format),
}


# below and above the 32x32 at which the forward keeps channels_last, and non-square
@pytest.mark.parametrize("size", [(5, 7), (32, 32), (32, 48)])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("act", [False, True])
def test_group_norm_matches_torch_in_value_and_gradient(
    size: tuple[int, int], batch: int, layout: str, act: bool
) -> None:
    """Any input layout, on both forward paths: torch's native_group_norm refuses input
    that is not contiguous in the layout it infers from the strides; ours must not."""
    view, out_layout = LAYOUTS[layout]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 8, *size, generator=g, dtype=torch.float64)
    w = torch.randn(8, generator=g, dtype=torch.float64)
    b = torch.randn(8, generator=g, dtype=torch.float64)
    gy = torch.randn(batch, 8, *size, generator=g, dtype=torch.float64)
    ref_in = [t.clone().requires_grad_(True) for t in (x, w, b)]
    ours_in = [t.requires_grad_(True) for t in (view(x.clone()), w, b)]
    assert torch.equal(ours_in[0], x)
    ours = _GroupNormAct.apply(*ours_in, 4, 1e-5, act)
    ref = F.group_norm(ref_in[0], 4, ref_in[1], ref_in[2], 1e-5)
    ref = F.silu(ref) if act else ref
    assert ours.is_contiguous(memory_format=out_layout)  # the layout it came in
    torch.testing.assert_close(ours, ref)
    ours.backward(view(gy))
    ref.backward(gy)
    for a, r in zip(ours_in, ref_in, strict=True):
        torch.testing.assert_close(a.grad, r.grad)


def test_group_norm_gradcheck() -> None:
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64).to(memory_format=torch.channels_last)
    w, b = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda *t: _GroupNormAct.apply(*t, 2, 1e-5, True),
        [t.requires_grad_(True) for t in (x, w, b)],
    )


def test_group_norm_in_bf16_stays_close_to_float32() -> None:
    norm = GroupNorm(8, 32, act=True)
    x = torch.randn(4, 32, 16, 16).to(memory_format=torch.channels_last)
    y = norm(x.bfloat16())
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    ref = F.silu(F.group_norm(x, 8, norm.weight, norm.bias))
    assert (y.float() - ref).abs().max() < 0.05  # bf16 keeps ~3 significant digits
    y.float().sum().backward()
    assert norm.weight.grad is not None and norm.weight.grad.dtype == torch.float32


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("size", [(5, 7), (1, 1), (2, 2), (1, 2), (2, 1)])
def test_upsample_conv_is_nearest_upsampling_then_the_conv(
    layout: torch.memory_format, bias: bool, size: tuple[int, int]
) -> None:
    g = torch.Generator().manual_seed(2)
    conv = torch.nn.Conv2d(6, 4, 3, padding=1, bias=bias).double()
    x = torch.randn(2, 6, *size, generator=g, dtype=torch.float64).to(memory_format=layout)
    target = (2 * size[0], 2 * size[1])
    ours_x, ref_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ours = upsample_conv(ours_x, conv, target)
    ours_grads = torch.autograd.grad(ours.square().sum(), [ours_x, *conv.parameters()])
    ref = conv(F.interpolate(ref_x, size=target, mode="nearest"))
    ref_grads = torch.autograd.grad(ref.square().sum(), [ref_x, *conv.parameters()])
    torch.testing.assert_close(ours, ref)
    for a, r in zip(ours_grads, ref_grads, strict=True):
        torch.testing.assert_close(a, r)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(("size", "stride"), [((4, 4), 2), ((3, 3), 2), ((2, 2), 1), ((5, 6), 2)])
def test_conv_on_small_maps_is_the_same_conv(
    layout: torch.memory_format, bias: bool, size: tuple[int, int], stride: int
) -> None:
    """Maps of <= SMALL_MAP output positions go through unfold + matmul: same values,
    same gradients, the input's layout; (5, 6) stride 2 (9 positions) is nn.Conv2d's."""
    torch.manual_seed(3)
    ours = Conv2d(5, 7, 3, stride=stride, padding=1, bias=bias).double()
    ref = torch.nn.Conv2d(5, 7, 3, stride=stride, padding=1, bias=bias).double()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 5, *size, dtype=torch.float64).to(memory_format=layout)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = ours(xa), ref(xb)
    torch.testing.assert_close(ya, yb)
    assert ya.is_contiguous(memory_format=layout)
    ga = torch.autograd.grad(ya.square().sum(), [xa, *ours.parameters()])
    gb = torch.autograd.grad(yb.square().sum(), [xb, *ref.parameters()])
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b)


def test_conv_on_small_maps_under_bf16_autocast_matches_the_conv() -> None:
    conv = Conv2d(16, 8, 3, stride=2, padding=1)
    x = torch.randn(4, 16, 4, 4).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = conv(x)
        ref = F.conv2d(x, conv.weight, conv.bias, stride=2, padding=1)
    assert ours.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(ours.float(), ref.float(), atol=0.05, rtol=0.02)


def test_upsample_conv_under_bf16_autocast_stays_close_and_keeps_float32_grads() -> None:
    conv = torch.nn.Conv2d(8, 4, 3, padding=1, bias=False)
    for size in ((2, 2), (6, 6)):  # the fold path and the transposed-conv path
        x = torch.randn(3, 8, *size).to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = upsample_conv(x, conv, (2 * size[0], 2 * size[1]))
        assert y.dtype == torch.bfloat16
        ref = conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        torch.testing.assert_close(y.float(), ref, atol=0.05, rtol=0.02)
        (grad,) = torch.autograd.grad(y.float().sum(), [conv.weight])
        assert grad.dtype == torch.float32 and torch.isfinite(grad).all()


def test_conv_on_empty_and_unbatched_input_is_nn_conv2d() -> None:
    ours = Conv2d(3, 4, 3, padding=1)
    ref = torch.nn.Conv2d(3, 4, 3, padding=1)
    ref.load_state_dict(ours.state_dict())
    for x in (torch.randn(0, 3, 2, 2), torch.randn(3, 2, 2)):
        torch.testing.assert_close(ours(x), ref(x))
    empty = upsample_conv(torch.randn(0, 3, 2, 2), ref, (4, 4))
    assert empty.shape == (0, 4, 4, 4)


def test_upsample_conv_to_a_size_other_than_double_upsamples_as_written() -> None:
    conv = torch.nn.Conv2d(3, 2, 3, padding=1)
    x = torch.randn(1, 3, 4, 4)
    ref = conv(F.interpolate(x, size=(7, 7), mode="nearest"))
    torch.testing.assert_close(upsample_conv(x, conv, (7, 7)), ref)
