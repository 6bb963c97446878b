"""Bring any module: plain nn.Module halves that nobody registered train, save their weights
and load when handed over; registered modules take registered modules (and lists of them)
as arguments, recorded by name in config.json and rebuilt on load, never unpickled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import vaekit
from conftest import ROOT, tiny_config
from vaekit.errors import CheckpointError, ConfigError


class E2(nn.Module):
    """An encoder nobody registered: x (B, 1, 28, 28) -> features (B, 16)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class D2(nn.Module):
    """A decoder nobody registered: z (B, 4) -> logits (B, 1, 28, 28)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, width), nn.Tanh(), nn.Linear(width, 784))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, 1, 28, 28)


def _plain_vae(width: int = 16) -> vaekit.VAE:
    return vaekit.VAE(E2(width), D2(width), latent_dim=4, input_shape=(1, 28, 28))


def test_unregistered_halves_train_save_and_load_when_handed_over(tmp_path: Path) -> None:
    torch.manual_seed(0)
    result = vaekit.Trainer(_plain_vae(), tiny_config(tmp_path / "run")).fit()
    run = result.run_dir
    architecture = json.loads((run / "config.json").read_text())["architecture"]
    assert architecture["encoder"] == {"class": f"{__name__}.E2"}
    assert architecture["decoder"] == {"class": f"{__name__}.D2"}
    with pytest.raises(CheckpointError) as error:
        vaekit.load(run)
    message = str(error.value)
    assert "\n" not in message
    assert f"the encoder is {__name__}.E2 and the decoder is {__name__}.D2" in message
    assert "vaekit.load(path, encoder=..., decoder=...)" in message
    for loaded in (
        vaekit.load(run, encoder=E2(), decoder=D2()),
        vaekit.VAE.from_pretrained(run, encoder=E2(), decoder=D2()),
    ):
        for name, tensor in result.model.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], tensor), name
    with pytest.raises(CheckpointError, match="the decoder is .*D2, not registered"):
        vaekit.load(run, encoder=E2())
    with pytest.raises(CheckpointError, match=r"do not match the model .*\(16, 784\) in file"):
        vaekit.load(run, encoder=E2(width=8), decoder=D2(width=8))
    with pytest.raises(ConfigError, match=r"records the encoder as .*E2; the encoder given is"):
        vaekit.load(run, encoder=D2(), decoder=D2())


@vaekit.register("test-any-block")
class Block(nn.Linear):
    """A registered layer (a subclass of nn.Linear records its arguments)."""


@vaekit.register("test-any-backbone-encoder")
class BackboneEncoder(nn.Module):
    def __init__(self, backbone: nn.Module, extras: list[nn.Module], scale: float = 1.0) -> None:
        super().__init__()
        self.backbone, self.extras, self.scale = backbone, nn.ModuleList(extras), scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.backbone(x.flatten(1)))
        for extra in self.extras:
            h = torch.tanh(extra(h))
        return h * self.scale


def test_registered_modules_take_registered_modules_as_arguments(tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = BackboneEncoder(Block(784, 12), [Block(12, 12), Block(12, 8)], scale=2.0)
    model = vaekit.VAE(encoder, D2(), latent_dim=4, input_shape=(1, 28, 28))
    model.decoder = D2()
    record = model.architecture()["encoder"]
    assert record == {
        "name": "test-any-backbone-encoder",
        "args": {
            "backbone": {
                "vaekit_module": "test-any-block",
                "args": {"in_features": 784, "out_features": 12, "bias": True,
                         "device": None, "dtype": None},
            },
            "extras": [
                {"vaekit_module": "test-any-block", "args": {"in_features": 12,
                 "out_features": 12, "bias": True, "device": None, "dtype": None}},
                {"vaekit_module": "test-any-block", "args": {"in_features": 12,
                 "out_features": 8, "bias": True, "device": None, "dtype": None}},
            ],
            "scale": 2.0,
        },
    }  # fmt: skip
    folder = model.save_pretrained(tmp_path / "m")
    loaded = vaekit.load(folder, decoder=D2())  # the encoder rebuilt through the registry
    assert isinstance(loaded.encoder.extras[1], Block) and loaded.encoder.scale == 2.0
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(loaded.encode(x)[0], model.encode(x)[0])


def test_an_unregistered_module_as_an_argument_is_one_clear_line(tmp_path: Path) -> None:
    encoder = BackboneEncoder(nn.Linear(784, 8), [])
    model = vaekit.VAE(encoder, D2(), latent_dim=4, input_shape=(1, 28, 28))
    with pytest.raises(ConfigError) as error:
        vaekit.Trainer(model, tiny_config(tmp_path / "run"))
    message = str(error.value)
    assert "\n" not in message
    assert "the module Linear as its argument 'backbone'" in message
    assert "@vaekit.register" in message


def test_halves_a_script_defined_load_where_the_script_is_imported(tmp_path: Path) -> None:
    """A script records its classes as __main__.E2; loading imports them from its module."""
    script = tmp_path / "my_halves.py"
    script.write_text(
        "import sys\n"
        "import torch\n"
        "from torch import nn\n"
        "import vaekit\n"
        "class E2(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 16))\n"
        "    def forward(self, x):\n"
        "        return self.net(x)\n"
        "class D2(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.net = nn.Linear(4, 784)\n"
        "    def forward(self, z):\n"
        "        return self.net(z).view(-1, 1, 28, 28)\n"
        "if __name__ == '__main__':\n"
        "    sys.path.insert(0, sys.argv[2])\n"
        "    from conftest import tiny_config\n"
        "    model = vaekit.VAE(E2(), D2(), latent_dim=4, input_shape=(1, 28, 28))\n"
        "    vaekit.Trainer(model, tiny_config(sys.argv[1])).fit()\n"
    )
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    tests = str(Path(__file__).parent)
    subprocess.run([sys.executable, str(script), str(run), tests], check=True, env=env)
    assert json.loads((run / "config.json").read_text())["architecture"]["encoder"] == {
        "class": "__main__.E2"
    }
    sys.path.insert(0, str(tmp_path))
    try:
        import my_halves
    finally:
        sys.path.remove(str(tmp_path))
    model = vaekit.load(run, encoder=my_halves.E2(), decoder=my_halves.D2())
    assert model.encode(torch.rand(2, 1, 28, 28))[0].shape == (2, 4)
    with pytest.raises(ConfigError, match=r"records the decoder as __main__.D2; the decoder"):
        vaekit.load(run, encoder=my_halves.E2(), decoder=my_halves.E2())
