"""A model's settings, recorded once (models/record.py): config.json's architecture record,
the rebuild on load and the settings of a model family that adds its own all come from the
constructor's signature, and the records written before that stay byte for byte."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import custom_arch
import vaekit
from vaekit import VAE
from vaekit.config import ModelConfig
from vaekit.errors import CheckpointError
from vaekit.models import record
from vaekit.normalize import Normalization

RECORDS = Path(__file__).parent / "fixtures" / "records" / "architectures.json"
STANDARDIZED = {"kind": "standardize", "shift": [0.5, 1.0, 2.0], "scale": [2.0, 1.0, 0.5]}


def models() -> dict[str, VAE]:
    """The ten models architectures.json holds, built as its writer built them."""
    mlp = ModelConfig(hidden=[8], latent_dim=2)
    conv = ModelConfig(arch="conv", channels=[4, 8], latent_dim=3)
    normalised = custom_arch.conv_vae()
    normalised.set_normalization(
        Normalization(kind="standardize", shift=(0.1,), scale=(2.0,), bounded=True)
    )
    return {
        "mlp": VAE.from_config(mlp, (1, 6, 6)),
        "mlp_cond": VAE.from_config(
            ModelConfig(hidden=[8], latent_dim=2, conditional=True, label_dim=3),
            (1, 6, 6),
            num_classes=4,
        ),
        "mlp_gauss_norm": VAE.from_config(
            ModelConfig(hidden=[8], latent_dim=2, likelihood="auto"),
            (3, 1, 1),
            normalization={**STANDARDIZED, "bounded": False},
        ),
        "conv": VAE.from_config(conv, (1, 8, 8)),
        "conv_spatial": VAE.from_config(
            ModelConfig(arch="conv", channels=[4, 8], latent_channels=2, likelihood="laplace"),
            (3, 8, 8),
        ),
        "akl": VAE.from_config(
            ModelConfig(
                arch="autoencoderkl", channels=[8, 8], blocks_per_level=1, latent_channels=2
            ),
            (3, 8, 8),
        ),
        "custom": custom_arch.conv_vae(),
        "custom_direct": custom_arch.direct_vae(),
        "python_raw": VAE(  # settings as a user may pass them: a list, an int scale
            custom_arch.ConvFeatures(),
            custom_arch.ConvPixels(latent_dim=4),
            latent_dim=4,
            input_shape=[1, 28, 28],
            obs_scale=1,
            learn_scale=True,  # dropped: a Bernoulli likelihood has no scale
            likelihood="bernoulli",
        ),
        "set_normalization": normalised,
    }


def test_config_json_records_every_model_as_before_byte_for_byte() -> None:
    expected = json.loads(RECORDS.read_text())
    built = models()
    assert sorted(built) == sorted(expected)
    for name, model in built.items():
        written = json.dumps(model.architecture(), indent=2, sort_keys=True)
        assert written == json.dumps(expected[name], indent=2, sort_keys=True), name


def test_the_settings_are_the_constructors_arguments_as_the_model_holds_them() -> None:
    model = custom_arch.direct_vae()
    settings = model.settings()
    assert tuple(settings) == VAE.recorded_settings
    assert settings["encoder"] is model.encoder and settings["input_shape"] == (1, 28, 28)
    model.set_normalization(Normalization(kind="minmax", shift=(0.5,), scale=(2.0,)))
    assert model.architecture()["normalization"]["kind"] == "minmax"  # read now, not at init


class Scaled(VAE):
    """A family member with a setting of its own, passing the VAE's on (as the families
    after the Gaussian VAE do)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, *, temperature: float = 1.0,
                 **settings: Any) -> None:  # fmt: skip
        super().__init__(encoder, decoder, **settings)
        self.temperature = float(temperature)


def test_a_family_records_its_own_settings_and_loads_with_them(tmp_path: Path) -> None:
    assert Scaled.recorded_settings == ("encoder", "decoder", "temperature") + tuple(
        n for n in VAE.recorded_settings if n not in ("encoder", "decoder")
    )
    enc, dec = custom_arch.ConvFeatures(), custom_arch.ConvPixels(latent_dim=4)
    model = Scaled(enc, dec, temperature=0.5, latent_dim=4, input_shape=(1, 28, 28))
    assert model.architecture()["temperature"] == 0.5
    folder = model.save_pretrained(tmp_path / "scaled")
    loaded = Scaled.from_pretrained(folder)
    assert isinstance(loaded, Scaled) and loaded.temperature == 0.5
    assert loaded.architecture() == model.architecture()
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@vaekit.register("test-record-scale")
class Scale(nn.Module):
    """A registered module a family takes as a setting (as a prior or a posterior would be)."""

    def __init__(self, size: int = 4) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(size))


class WithModule(VAE):
    """A family member with a module of its own beside the halves."""

    module_settings = (*VAE.module_settings, "scale")

    def __init__(self, encoder: nn.Module, decoder: nn.Module, *, scale: nn.Module,
                 **settings: Any) -> None:  # fmt: skip
        super().__init__(encoder, decoder, **settings)
        self.scale = scale


def test_a_family_with_a_module_of_its_own_records_it_by_name_and_loads_it(tmp_path: Path) -> None:
    model = WithModule(custom_arch.ConvFeatures(), custom_arch.ConvPixels(latent_dim=4),
                       scale=Scale(size=3), latent_dim=4, input_shape=(1, 28, 28))  # fmt: skip
    with torch.no_grad():
        model.scale.log_scale.fill_(0.5)
    assert model.architecture()["scale"] == {"name": "test-record-scale", "args": {"size": 3}}
    loaded = WithModule.from_pretrained(model.save_pretrained(tmp_path / "with"))
    assert isinstance(loaded.scale, Scale) and torch.equal(
        loaded.scale.log_scale, torch.full((3,), 0.5)
    )


class Fixed(VAE):
    """A model whose constructor fixes some of the VAE's settings: its record holds only
    what its constructor takes."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int = 4) -> None:
        super().__init__(encoder, decoder, latent_dim=latent_dim, input_shape=(1, 28, 28))


def test_a_model_that_fixes_settings_records_and_loads_only_its_own(tmp_path: Path) -> None:
    model = Fixed(custom_arch.ConvFeatures(), custom_arch.ConvPixels(latent_dim=4))
    assert sorted(model.architecture()) == ["decoder", "encoder", "latent_dim"]
    loaded = Fixed.from_pretrained(model.save_pretrained(tmp_path / "fixed"))
    assert loaded.input_shape == (1, 28, 28) and loaded.latent_dim == 4


def test_a_model_class_that_drops_an_argument_is_a_bug_said_at_once() -> None:
    class Forgetful(VAE):
        def __init__(self, encoder: nn.Module, decoder: nn.Module, *, depth: int = 2,
                     **settings: Any) -> None:  # fmt: skip
            super().__init__(encoder, decoder, **settings)  # depth is kept nowhere

    model = Forgetful(custom_arch.ConvFeatures(), custom_arch.ConvPixels(latent_dim=4),
                      latent_dim=4, input_shape=(1, 28, 28))  # fmt: skip
    with pytest.raises(
        TypeError, match="keeps no attribute for its constructor's argument 'depth'"
    ):
        model.architecture()


def test_a_record_without_a_required_setting_is_refused(tmp_path: Path) -> None:
    folder = custom_arch.conv_vae().save_pretrained(tmp_path / "m")
    meta = json.loads((folder / "config.json").read_text())
    del meta["architecture"]["likelihood"]  # it must not default to Bernoulli silently
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="'architecture' lacks likelihood"):
        vaekit.load(folder)


def test_registered_modules_record_their_arguments_the_same_way() -> None:
    decoder = custom_arch.ConvPixels(latent_dim=3)
    assert record.arguments(decoder) == {"latent_dim": 3, "channels": 1, "width": 8}
    assert record.arguments(nn.Linear(2, 2)) == {}
