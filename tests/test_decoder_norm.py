"""The conv decoder's normalisation: per position (the default, with or without residual
blocks), so that no place in the image can dim the rest of it, the mechanism behind the
fixed speck that GroupNorm decoders learn (issue 14); GroupNorm stays available for
checkpoints saved with it."""

from __future__ import annotations

import pytest
import torch

from vaekit.config import ModelConfig
from vaekit.errors import ConfigError
from vaekit.models import VAE
from vaekit.models.conv import ChannelNorm, ConvDecoder, ResBlock
from vaekit.models.fast_ops import GroupNorm


def _model(**kw: object) -> VAE:
    torch.manual_seed(0)
    cfg = ModelConfig(arch="conv", channels=[8, 16, 16], blocks_per_level=0, latent_dim=4, **kw)  # type: ignore[arg-type]
    return VAE.from_config(cfg, (3, 32, 32)).eval()  # 32 -> 16 -> 8 -> 4


def _spike_changes(model: VAE) -> tuple[float, float]:
    """Largest change of the decoded image near and far from a spike put into the bottom
    4x4 map's corner cell (0, 0). Without blocks, that cell reaches output pixels 0..15
    only through the convolutions (3x3 at each level): pixels 16.. see it only through
    statistics pooled over space."""
    decoder = model.decoder
    assert isinstance(decoder, ConvDecoder)
    z = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = decoder(z)
        decoder.fc.bias.view(decoder.bottom)[:, 0, 0] += 50.0  # the spike
        after = decoder(z)
    change = (after - before).abs()
    return float(change[..., :8, :8].max()), float(change[..., 16:, 16:].max())


def test_a_spike_in_one_place_leaves_the_far_side_of_the_decoded_image_alone() -> None:
    near, far = _spike_changes(_model())  # the default 'auto' without blocks: "channel"
    assert near > 1e-2  # the spike is seen where the convolutions carry it
    assert far == 0.0  # and nowhere else: it cannot rescale the rest of the image


def test_a_groupnorm_decoder_lets_one_spike_rescale_the_whole_image() -> None:
    """The old decoder, kept for its checkpoints: the spike changes pixels it cannot
    reach, through the group statistics (what the decoder learns to exploit)."""
    near, far = _spike_changes(_model(decoder_norm="group"))
    assert far > 1e-2


def test_the_option_picks_the_decoder_norm_and_the_record_keeps_it() -> None:
    new, old = _model(), _model(decoder_norm="group")
    norms = [type(m) for m in new.decoder.modules() if isinstance(m, ChannelNorm | GroupNorm)]
    assert norms and set(norms) == {ChannelNorm}
    assert all(not isinstance(m, ChannelNorm) for m in old.decoder.modules())
    assert any(
        isinstance(m, ChannelNorm) is False and isinstance(m, GroupNorm)
        for m in new.encoder.modules()
    )
    record = new.architecture()
    assert record["decoder"]["args"]["norm"] == "channel"
    rebuilt = VAE.from_architecture(record)
    rebuilt.load_state_dict(new.state_dict())
    z = torch.randn(3, 4)
    torch.testing.assert_close(rebuilt.eval().decode(z), new.decode(z))


def test_auto_is_the_channel_norm_with_and_without_blocks() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(arch="conv", channels=[8, 16], blocks_per_level=1, latent_dim=4)
    with_blocks = VAE.from_config(cfg, (3, 16, 16))
    assert with_blocks.architecture()["decoder"]["args"]["norm"] == "channel"
    assert _model().architecture()["decoder"]["args"]["norm"] == "channel"


def _spatial_spike_changes(norm: str, blocks: int) -> tuple[float, float]:
    """Largest change of a 64x64 decoded image near and far from a spike put into the
    16x16 latent map's corner cell, for a decoder with residual blocks: the convolutions
    carry the cell to output pixels 0..11 (measured), the far corner is 40.. away."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        arch="conv",
        channels=[8, 16],
        blocks_per_level=blocks,
        latent_channels=2,
        decoder_norm=norm,
    )
    decoder = VAE.from_config(cfg, (3, 64, 64)).eval().decoder
    z = torch.randn(2, 2, 16, 16, generator=torch.Generator().manual_seed(1))
    spiked = z.clone()
    spiked[:, :, 0, 0] += 50.0
    with torch.no_grad():
        change = (decoder(spiked) - decoder(z)).abs()
    return float(change[..., :8, :8].max()), float(change[..., 40:, 40:].max())


@pytest.mark.parametrize("blocks", [1, 2])
def test_with_residual_blocks_a_spike_still_leaves_the_far_side_alone(blocks: int) -> None:
    near, far = _spatial_spike_changes("auto", blocks)
    assert near > 1e-2
    assert far == 0.0  # no statistics over space anywhere in the decoder, blocks included
    _, far_group = _spatial_spike_changes("group", blocks)
    assert far_group > 1e-2  # what the measurement sees where there are such statistics


def test_a_channel_norm_residual_block_starts_as_its_skip() -> None:
    """Each block's branch ends in a channel norm whose scale starts at 0, so that the
    decoder starts as its blocks-free self: at scale 1 every block adds a per-pixel
    unit-variance branch, and decoders with blocks collapsed to one constant image on
    photographs (benchmarks/results/photo_quality.md). Trained scales load as saved."""
    torch.manual_seed(0)
    block = ResBlock(16, "channel")
    x = torch.randn(2, 16, 6, 6)
    torch.testing.assert_close(block(x), torch.nn.functional.silu(x))
    with torch.no_grad():
        block.norm2.weight.fill_(1.0)  # as a trained block's scale may be
    assert (block(x) - torch.nn.functional.silu(x)).abs().max() > 0.1
    saved = block.state_dict()
    torch.manual_seed(1)
    reloaded = ResBlock(16, "channel")
    reloaded.load_state_dict(saved)
    torch.testing.assert_close(reloaded(x), block(x))
    assert ResBlock(16, "group").norm2.weight.eq(1.0).all()  # the old decoder's init kept


def test_a_decoder_record_without_norm_is_the_groupnorm_decoder_it_was_saved_as() -> None:
    record = _model(decoder_norm="group").architecture()
    del record["decoder"]["args"]["norm"]  # as config.json was written before the option
    rebuilt = VAE.from_architecture(record)
    assert any(isinstance(m, GroupNorm) for m in rebuilt.decoder.modules())
    assert not any(isinstance(m, ChannelNorm) for m in rebuilt.decoder.modules())


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_channel_norm_is_a_layer_norm_over_each_pixels_channels(
    layout: torch.memory_format,
) -> None:
    norm = ChannelNorm(6, act=True)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 6, 5, 7).contiguous(memory_format=layout)
    mean = x.mean(1, keepdim=True)
    var = x.var(1, unbiased=False, keepdim=True)
    y = (x - mean) / torch.sqrt(var + 1e-5) * norm.weight.view(1, -1, 1, 1)
    expected = torch.nn.functional.silu(y + norm.bias.view(1, -1, 1, 1))
    out = norm(x)
    torch.testing.assert_close(out, expected)
    assert out.is_contiguous(memory_format=layout)


def test_an_unknown_decoder_norm_in_a_record_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="norm must be one of"):
        ConvDecoder((3, 32, 32), [8, 16], norm="batch")
