"""The contract every model keeps, built-in or a user's own: one set of tests (a mixin, as
diffusers' model tests are) run against the built-in MLP and conv VAEs and against two
registered user architectures (tests/custom_arch.py): one whose encoder returns features,
one whose encoder returns (mu, logvar) itself.

Each model encodes, decodes, samples, reconstructs and interpolates with the right shapes;
saves as config.json + model.safetensors that name registered architectures (no import
path, no pickle) and loads back identical through `from_pretrained`; trains with the
Trainer and lowers its loss; resumes bit-identically; evaluates (ELBO, log p(x),
PSNR/SSIM, active units); and appears in `vaekit report`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import custom_arch
import vaekit
from conftest import tiny_config
from vaekit.config import ModelConfig
from vaekit.viz.report import build_report

FACTORIES: dict[str, Callable[[], vaekit.VAE]] = {
    "mlp": lambda: vaekit.VAE.from_config(ModelConfig(hidden=[32], latent_dim=4), (1, 28, 28)),
    "conv": lambda: vaekit.VAE.from_config(
        ModelConfig(arch="conv", channels=[4, 8], latent_dim=4), (1, 28, 28)
    ),
    "custom-features": custom_arch.conv_vae,
    "custom-direct": custom_arch.direct_vae,
}
NAMES = {
    "mlp": ("mlp-encoder", "mlp-decoder"),
    "conv": ("conv-encoder", "conv-decoder"),
    "custom-features": ("test-conv-encoder", "test-conv-decoder"),
    "custom-direct": ("test-direct-encoder", "test-conv-decoder"),
}


def make(kind: str, seed: int = 0) -> vaekit.VAE:
    torch.manual_seed(seed)
    return FACTORIES[kind]()


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


@pytest.mark.parametrize("kind", list(FACTORIES))
class TestModelContract:
    def test_encode_decode_sample_reconstruct_interpolate(self, kind: str) -> None:
        model = make(kind).eval()
        x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
        mu, logvar = model.encode(x)
        assert mu.shape == logvar.shape == (3, 4) and mu.dtype == torch.float32
        params = model.decode(mu)
        assert params.shape[0] == 3 and params.shape[-2:] == (28, 28)
        g = torch.Generator().manual_seed(2)
        samples = model.sample(5, generator=g)
        assert samples.shape == (5, 1, 28, 28) and 0 <= samples.min() <= samples.max() <= 1
        again = model.sample(5, generator=torch.Generator().manual_seed(2))
        assert torch.equal(samples, again)  # seeded
        assert model.reconstruct(x).shape == x.shape
        assert model.interpolate(x[0], x[1], steps=6).shape == (1, 6, 1, 28, 28)
        terms, kl = model.elbo_terms(x, generator=g)
        assert terms.nelbo.shape == (3,) and kl.shape == (3, 4)
        assert torch.isfinite(terms.nelbo).all()

    def test_saves_registered_names_and_loads_back_identical(
        self, kind: str, tmp_path: Path
    ) -> None:
        model = make(kind)
        folder = model.save_pretrained(tmp_path / "model")
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
        meta = json.loads((folder / "config.json").read_text())
        arch = meta["architecture"]
        assert (arch["encoder"]["name"], arch["decoder"]["name"]) == NAMES[kind]
        assert "config" not in meta  # a bare model has no training configuration
        loaded = vaekit.VAE.from_pretrained(folder)
        assert loaded.state_dict().keys() == model.state_dict().keys()
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
        x = torch.rand(2, 1, 28, 28)
        torch.testing.assert_close(loaded.reconstruct(x), model.eval().reconstruct(x))
        assert vaekit.load(folder).architecture() == model.architecture()

    def test_trains_resumes_bit_identically_and_evaluates(self, kind: str, tmp_path: Path) -> None:
        def config(name: str, epochs: int) -> vaekit.Config:  # the guarantee is the CPU's
            return tiny_config(tmp_path / name, **{"train.epochs": epochs, "train.device": "cpu"})

        full = vaekit.Trainer(make(kind), config("full", 2)).fit()
        assert [r["epoch"] for r in full.history] == [1, 2]
        assert full.history[-1]["train_nelbo"] < full.history[0]["train_nelbo"]  # it learns
        assert full.run_dir == tmp_path / "full" and not full.stopped_early
        assert full.model is not None and not full.model.training

        vaekit.Trainer(make(kind), config("half", 1)).fit()
        resumed = vaekit.Trainer(make(kind, seed=9), config("half", 2), resume=True).fit()
        assert [r["epoch"] for r in resumed.history] == [2]
        a, b = weights(tmp_path / "full"), weights(tmp_path / "half")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

        model = vaekit.load(full.run_dir)
        assert model.run_config is not None and model.run_config.train.epochs == 2
        x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(3))
        stats = vaekit.evaluate(model, x, iw_samples=4)
        for key in ("nelbo", "log_px", "psnr", "ssim", "active_units"):
            assert key in stats and stats[key] == stats[key], key  # present, not NaN
        assert stats["log_px"] >= stats["iw_elbo"]

    def test_appears_in_the_report(self, kind: str, tmp_path: Path) -> None:
        result = vaekit.Trainer(make(kind), tiny_config(tmp_path / "run")).fit()
        page = build_report(result.run_dir, iw_samples=2, max_test=16).read_text()
        for name in NAMES[kind]:
            assert name in page
        assert "data:image/png;base64," in page
