"""fast_ops' CPU paths inside diffusers' AutoencoderKL halves compute what diffusers' own
modules compute: the same parameters under the same keys, the same outputs and gradients
(to float32 rounding; bf16 autocast to bf16 rounding)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import vaekit
from akl_layouts import LAYOUTS, PATHS, check_pair
from conftest import TINY_AUTOENCODERKL
from vaekit.diffusers import autoencoderkl
from vaekit.diffusers.autoencoderkl_fast import UpsampleConv, use_fast_ops
from vaekit.models.fast_ops import GroupNorm

diffusers = pytest.importorskip("diffusers", reason="needs vaekit[diffusers]")
from diffusers.models.attention_processor import Attention  # noqa: E402
from diffusers.models.autoencoders.vae import Decoder, Encoder  # noqa: E402
from diffusers.models.resnet import ResnetBlock2D  # noqa: E402
from diffusers.models.upsampling import Upsample2D  # noqa: E402

LEVELS = {"block_out_channels": (8, 16), "layers_per_block": 1, "norm_num_groups": 4}


def halves() -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    """diffusers' plain Encoder and Decoder, and copies with the fast paths swapped in."""
    torch.manual_seed(0)
    enc = Encoder(3, 2, ("DownEncoderBlock2D",) * 2, double_z=True, **LEVELS)
    dec = Decoder(2, 3, ("UpDecoderBlock2D",) * 2, **LEVELS)
    for m in (enc, dec):  # non-trivial norms
        for norm in m.modules():
            if isinstance(norm, nn.GroupNorm):
                nn.init.normal_(norm.weight, 1.0, 0.3)
                nn.init.normal_(norm.bias, 0.0, 0.3)
    fast_enc, fast_dec = copy.deepcopy(enc), copy.deepcopy(dec)
    # the resnets, norm_out, the mid block's attention (hooked), the decoder's upsampler
    assert use_fast_ops(fast_enc, ResnetBlock2D, Upsample2D, Attention) == 6  # 4 + 1 + 1
    assert use_fast_ops(fast_dec, ResnetBlock2D, Upsample2D, Attention) == 9  # 6 + 1 + 1 + 1
    return enc, dec, fast_enc, fast_dec


def test_the_swap_keeps_every_parameter_and_key() -> None:
    enc, dec, fast_enc, fast_dec = halves()
    for plain, fast in ((enc, fast_enc), (dec, fast_dec)):
        a, b = plain.state_dict(), fast.state_dict()
        assert list(a) == list(b)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(isinstance(m, UpsampleConv) for m in fast_dec.modules())
    assert not any(isinstance(m, Upsample2D) for m in fast_dec.modules())
    assert sum(isinstance(m, GroupNorm) and m.act for m in fast_enc.modules()) == 9


def test_resnet_blocks_are_bit_identical_in_float32() -> None:
    enc, _, fast_enc, _ = halves()
    x = torch.randn(2, 8, 16, 16)
    plain, fast = enc.down_blocks[0].resnets[0], fast_enc.down_blocks[0].resnets[0]
    assert isinstance(fast.nonlinearity, nn.Identity)
    with torch.no_grad():
        assert torch.equal(plain(x, None), fast(x, None))


def _outputs_and_grads(enc: nn.Module, dec: nn.Module, x: torch.Tensor, bf16: bool):
    for p in (*enc.parameters(), *dec.parameters()):
        p.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        moments = enc(x)
        y = dec(moments[:, :2])
    y.float().square().mean().backward()
    grads = [p.grad.clone() for p in (*enc.parameters(), *dec.parameters())]
    return moments.float(), y.float(), grads


def _scaled(grads: list[torch.Tensor], like: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each gradient relative to the largest value of its float32 counterpart (rounding grows
    through the backward), floored for those that are zero but for rounding (attention's key
    bias: softmax ignores it)."""
    floor = 1e-3 * max(float(b.abs().max()) for b in like)
    return [a / b.abs().max().clamp_min(floor) for a, b in zip(grads, like, strict=True)]


def test_the_halves_compute_the_same_outputs_and_gradients_in_float32() -> None:
    enc, dec, fast_enc, fast_dec = halves()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    m0, y0, g0 = _outputs_and_grads(enc, dec, x, False)
    m1, y1, g1 = _outputs_and_grads(fast_enc, fast_dec, x, False)
    torch.testing.assert_close(m1, m0, rtol=1.3e-6, atol=1e-5)
    torch.testing.assert_close(y1, y0, rtol=1.3e-6, atol=1e-5)
    for a, b in zip(_scaled(g1, g0), _scaled(g0, g0), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_the_halves_under_bf16_autocast_stay_within_bf16_rounding_of_diffusers() -> None:
    """Under the same autocast the two round differently on purpose (the fast GroupNorm
    reads the bf16 activations, autocast's upcasts to float32), so no fixed tolerance is
    right on every CPU: each output and each gradient (relative to its float32 scale) is
    within twice the largest error diffusers' own bf16 run makes against its float32 run
    (measured here: 0.33x for the decoded images, 0.47x for the gradients)."""
    enc, dec, fast_enc, fast_dec = halves()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    m32, y32, g32 = _outputs_and_grads(enc, dec, x, False)
    m0, y0, g0 = _outputs_and_grads(enc, dec, x, True)
    m1, y1, g1 = _outputs_and_grads(fast_enc, fast_dec, x, True)

    def worst(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
        return max(float((u - v).abs().max()) for u, v in zip(a, b, strict=True))

    assert worst([m1, y1], [m0, y0]) <= 2 * worst([m0, y0], [m32, y32])
    assert worst(_scaled(g1, g32), _scaled(g0, g32)) <= 2 * worst(
        _scaled(g0, g32), _scaled(g32, g32)
    )


def test_upsampling_to_an_explicit_size_and_odd_inputs() -> None:
    torch.manual_seed(0)
    up = Upsample2D(4, use_conv=True, out_channels=4)
    fast = UpsampleConv(up.conv)
    x = torch.randn(2, 4, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), up(x))
        torch.testing.assert_close(fast(x, (11, 13)), up(x, (11, 13)))


def test_the_vaekit_pair_uses_the_fast_paths_and_matches_autoencoderkl() -> None:
    torch.manual_seed(1)
    reference = diffusers.AutoencoderKL(**TINY_AUTOENCODERKL).eval()
    encoder, decoder = autoencoderkl.halves(*autoencoderkl.split_config(dict(reference.config)))
    assert any(isinstance(m, UpsampleConv) for m in decoder.modules())
    assert any(isinstance(m, GroupNorm) for m in encoder.modules())
    pair = nn.ModuleDict({"encoder": encoder, "decoder": decoder}).eval()
    pair.load_state_dict(autoencoderkl.from_diffusers_keys(reference.state_dict()), strict=True)
    z = torch.randn(2, 2, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(decoder(z), (reference.decode(z).sample + 1) / 2)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_the_pair_computes_autoencoderkl_at_the_sizes_people_use(layout: str, path: str) -> None:
    """vaekit's pair, with the fast GroupNorm and upsampling swapped in, computes what
    diffusers' AutoencoderKL computes with the same weights on the CPU (see
    akl_layouts.check_pair for the tolerances and why)."""
    check_pair(layout, path, torch.device("cpu"))


def test_the_two_level_architecture_trains_at_64px_from_the_cli(tmp_path: Path) -> None:
    """Issue 22's command, shrunk: `--model.arch autoencoderkl --model.channels 8,16` at
    64 px failed in training's one-image probe (the mid block's 32x32 map at batch 1)."""
    from PIL import Image

    from vaekit import cli

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    out = tmp_path / "run"
    args = ["train", "--data", str(folder), "--data.image_size", "64", "--out", str(out)]
    args += ["--model.arch", "autoencoderkl", "--model.channels", "8,16", "--batch-size", "4"]
    args += ["--epochs", "1", "--train.progress", "false", "--data.val_fraction", "0"]
    assert cli.main(args) == 0
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] >= 1 and np.isfinite(last["train_nelbo"])


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("posterior", ["gaussian", "vq"])
def test_every_conv_of_the_trainers_model_reads_nchw_activations(
    posterior: str, batch: int
) -> None:
    """The AutoencoderKL and VQModel layouts keep their weights NCHW, so every conv (and the
    upsampling's transposed conv) must read NCHW activations. diffusers' attention returns
    a channels_last-strided view, and fast_ops' GroupNorm keeps its input's layout: without
    the attention's hook the mid block's output took every later conv of the half, forward
    and backward, onto channels_last (vq-f8-128 at 256 px batch 1 trained at 0.73x
    diffusers' VQModel step; at batch 1 torch's own GroupNorm turns it back to NCHW)."""
    from vaekit.data import Dataset
    from vaekit.data.core.dataset import to_float
    from vaekit.training.preflight import build_model

    options = {"model.arch": "autoencoderkl", "model.channels": [8, 16], "data.image_size": 32}
    options |= {"model.posterior": posterior, "train.device": "cpu"}
    config = vaekit.load_config(None, options)
    x_u8 = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8)
    model = build_model(None, config, Dataset("t", x_u8, x_u8), torch.device("cpu"), None)
    seen: list[tuple[str, tuple[int, ...]]] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | UpsampleConv):
            module.register_forward_pre_hook(
                lambda m, args, name=name: (
                    seen.append((name, args[0].stride())) if not args[0].is_contiguous() else None
                )
            )
    assert any(isinstance(m, Attention) for m in model.modules())
    model.train()
    model(to_float(x_u8)).params.sum().backward()
    assert seen == []


@pytest.mark.parametrize("batch", [1, 2])
def test_the_attentions_layout_fix_applies_to_a_keyword_call(batch: int) -> None:
    """diffusers may call an attention as attn(hidden_states=x): the hook must still hand
    the output back in x's layout (it read args[0] only, so a keyword call kept diffusers'
    channels_last-strided view), and give what a positional call gives."""
    enc, _, fast_enc, _ = halves()
    plain, attn = (
        next(m for m in h.modules() if isinstance(m, Attention)) for h in (enc, fast_enc)
    )
    x = torch.randn(batch, 16, 4, 4)  # NCHW, as the mid block hands it on
    by_keyword, by_position = attn(hidden_states=x), attn(x)
    assert by_keyword.is_contiguous() and by_position.is_contiguous()
    assert torch.equal(by_keyword, by_position)
    # the hook is what makes it NCHW: diffusers' own attention returns a strided view
    assert not plain(hidden_states=x).is_contiguous()
    assert torch.equal(plain(hidden_states=x), by_keyword)
