"""diffusers' AutoencoderKL and vaekit's pair with the same weights, at the layouts people
use (issue 22), and one run of either: shared by tests/test_autoencoderkl_fast.py (CPU)
and tests/test_cuda.py. diffusers is imported only when a model is built, so importing
this module never skips a test file."""

from __future__ import annotations

import torch
from torch import nn

from vaekit.diffusers import autoencoderkl

# name: (AutoencoderKL's levels, layers per block, image channels, (H, W)). Each puts the
# mid block (attention, then GroupNorm) on a map of 32x32 or more, where the fast GroupNorm
# keeps channels_last; a batch of one is what failed there (training's one-image probe).
LAYOUTS = {
    "diffusers-default-32px": ((64,), 1, 3, (32, 32)),
    "2-levels-64px": ((8, 16), 1, 3, (64, 64)),
    "sd-4-levels-256px": ((4, 8, 8, 8), 2, 3, (256, 256)),
    "1-channel-64px": ((8, 16), 1, 1, (64, 64)),
    "4-channels-64px": ((8, 16), 1, 4, (64, 64)),
    "non-square-64x96": ((8, 16), 1, 3, (64, 96)),
}
PATHS = ["fp32", "channels_last", "bf16-autocast"]


def reference_and_pair(layout: str) -> tuple[nn.Module, nn.ModuleDict, int, tuple[int, int]]:
    """diffusers' AutoencoderKL with non-trivial norms, and vaekit's pair holding the same
    weights (built as `--model.arch autoencoderkl --model.channels ...` builds it), on the
    CPU; with the images' channels and size."""
    import diffusers

    levels, blocks, channels, size = LAYOUTS[layout]
    cfg = type("M", (), {"channels": levels, "blocks_per_level": blocks, "latent_channels": 4})
    encoder_args, decoder_args = autoencoderkl.from_model_config(cfg, channels)
    torch.manual_seed(0)
    reference = diffusers.AutoencoderKL(**{**decoder_args, **encoder_args})
    for norm in reference.modules():
        if isinstance(norm, nn.GroupNorm):
            nn.init.normal_(norm.weight, 1.0, 0.3)
            nn.init.normal_(norm.bias, 0.0, 0.3)
    encoder, decoder = autoencoderkl.halves(encoder_args, decoder_args)
    pair = nn.ModuleDict({"encoder": encoder, "decoder": decoder})
    pair.load_state_dict(autoencoderkl.from_diffusers_keys(reference.state_dict()), strict=True)
    return reference, pair, channels, size


def run(
    model: nn.Module, x: torch.Tensor, bf16: bool, layout: torch.memory_format
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(mean, logvar, the decoded mean in [0, 1]) and the gradients of a loss on all three,
    in the order of AutoencoderKL's sorted parameter names, for diffusers' AutoencoderKL
    or vaekit's pair (which reads [0, 1] and writes the likelihood's location in [0, 1]),
    on x's device, in `layout`, under bf16 autocast or not."""
    model.to(memory_format=layout)  # type: ignore[call-overload]
    x = x.contiguous(memory_format=layout)
    model.zero_grad(set_to_none=True)
    ours = isinstance(model, nn.ModuleDict)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        if ours:
            mean, logvar = model["encoder"](x)
            y = model["decoder"](mean)
        else:
            posterior = model.encode(2 * x - 1).latent_dist
            mean, logvar = posterior.mean, posterior.logvar
            y = (model.decode(mean).sample + 1) / 2
    outputs = [t.float() for t in (mean, logvar, y)]
    sum(t.square().mean() for t in outputs).backward()
    grads = {k: p.grad for k, p in model.named_parameters()}
    named = autoencoderkl.to_diffusers_keys(grads) if ours else grads
    return [t.detach() for t in outputs], [named[k] for k in sorted(named)]


def worst(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """The largest difference between two lists of tensors, relative to b's largest value."""
    return max(float((u - v).abs().max()) for u, v in zip(a, b, strict=True)) / max(
        float(v.abs().max()) for v in b
    )


def check_pair(layout: str, path: str, device: torch.device) -> None:
    """vaekit's pair against diffusers' AutoencoderKL with the same weights, on one image,
    in the same memory layout and the same autocast, on `device`: posterior, decoded image
    and every parameter's gradient.

    float32: differences are rounding (the transposed-conv upsampling sums in another
    order), grown through the network: each output within 5e-5 of its largest value, each
    gradient within 1e-5 of the largest one (measured on the CPU, on these layouts: at
    most 8.6e-6 and 1.7e-6).
    bf16: the two round differently on purpose (on the CPU vaekit's GroupNorm reads the
    bf16 activations where autocast upcasts to float32), so they may differ by bf16
    rounding; the difference is bounded by twice diffusers' own bf16 error, its distance
    from its float32 result (measured on the CPU: at most 0.81x for the outputs, 1.41x
    for the gradients)."""
    reference, pair, channels, size = reference_and_pair(layout)
    reference.to(device)
    pair.to(device)
    x = torch.rand(1, channels, *size, generator=torch.Generator().manual_seed(1)).to(device)
    fmt = torch.channels_last if path == "channels_last" else torch.contiguous_format
    bf16 = path == "bf16-autocast"
    out, grads = run(pair, x, bf16, fmt)
    ref_out, ref_grads = run(reference, x, bf16, fmt)
    factor = 2 ** (len(LAYOUTS[layout][0]) - 1)  # one 2x downsampling between levels
    assert out[0].shape == (1, 4, size[0] // factor, size[1] // factor)
    assert out[2].shape == x.shape and len(grads) == len(ref_grads)
    if not bf16:
        assert worst(out, ref_out) < 5e-5
        assert worst(grads, ref_grads) < 1e-5
        return
    exact_out, exact_grads = run(reference, x, False, fmt)
    assert worst(out, ref_out) <= 2 * worst(ref_out, exact_out)
    assert worst(grads, ref_grads) <= 2 * worst(ref_grads, exact_grads)
