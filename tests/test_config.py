"""Config: presets, YAML, dotted overrides, and one clear error per bad option."""

from __future__ import annotations

from pathlib import Path

import pytest

from vaekit.config import Config, iter_fields, load_config, preset_names
from vaekit.errors import ConfigError


def test_every_preset_loads_and_validates() -> None:
    names = preset_names()
    assert {"fashion-mlp", "mnist-mlp", "kingma2013-mnist", "noise-demo"} <= set(names)
    for name in names:
        assert isinstance(load_config(name), Config)


def test_kingma2013_preset_is_the_papers_model() -> None:
    c = load_config("kingma2013-mnist")
    assert (c.model.hidden, c.model.activation, c.model.latent_dim) == ([500], "tanh", 20)
    assert (c.model.likelihood, c.train.batch_size, c.optim.name) == ("bernoulli", 100, "adagrad")


def test_overrides_are_typed() -> None:
    c = load_config(
        "noise-demo",
        {"train.epochs": "7", "model.hidden": "64,32", "optim.fused": "false", "optim.lr": "3e-4"},
    )
    assert c.train.epochs == 7 and c.model.hidden == [64, 32]
    assert c.optim.fused is False and c.optim.lr == pytest.approx(3e-4)


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"model.latent_dim": 0}, "model.latent_dim"),
        ({"train.batch_size": -4}, "train.batch_size"),
        ({"model.hidden": [64, -1]}, "model.hidden"),
        ({"train.epochs": "many"}, "train.epochs"),
        ({"model.likelihood": "poisson"}, "model.likelihood"),
        ({"optim.lr": 0}, "optim.lr"),
        ({"model.latnet_dim": 3}, "did you mean 'model.latent_dim'"),
        ({"data.binarize": "dynamic", "model.likelihood": "gaussian"}, "data.binarize"),
    ],
)
def test_bad_options_name_the_key(overrides: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        load_config("noise-demo", overrides)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_yaml_keys_and_wrong_types_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  latent_dimm: 4\n")
    with pytest.raises(ConfigError, match="model.latent_dimm.*did you mean 'latent_dim'"):
        load_config(str(bad))
    bad.write_text("trian:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="unknown config key 'trian'"):
        load_config(str(bad))
    bad.write_text("train:\n  epochs: [1, 2]\n")
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(str(bad))
    bad.write_text("train: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))


def test_a_missing_config_lists_the_presets() -> None:
    with pytest.raises(ConfigError, match="fashion-mlp"):
        load_config("no-such-preset")


def test_every_field_has_help() -> None:
    for key, field, _ in iter_fields():
        assert field.metadata.get("help"), key


def test_saved_yaml_round_trips(tmp_path: Path) -> None:
    c = load_config("fashion-mlp", {"train.epochs": 3})
    path = tmp_path / "c.yaml"
    path.write_text(c.to_yaml())
    assert load_config(str(path)) == c
