"""The objectives through training: KL warm-up, free bits, IWAE, gradient clipping, LPIPS."""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import pytest
import torch

import vaekit
from conftest import assert_clean_error, run_cli, tiny_config
from vaekit import losses
from vaekit.config import LossConfig, ModelConfig
from vaekit.errors import ConfigError, DownloadError
from vaekit.evaluation import perceptual
from vaekit.models import VAE
from vaekit.training import objective


def _model(seed: int = 0, **kw: object) -> VAE:
    torch.manual_seed(seed)
    cfg = ModelConfig(hidden=[32], latent_dim=6, **kw)  # type: ignore[arg-type]
    return VAE.from_config(cfg, (1, 28, 28))


def _noise(seed: int = 0) -> objective.Noise:
    return objective.Noise(torch.Generator().manual_seed(seed))


def _x(n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _grads(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


# -- the noise source --------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [0, 1])
def test_ranks_keep_their_rows_of_the_global_batchs_noise(dim: int) -> None:
    # DDP: each of 3 ranks draws the global batch's noise and keeps rows rank::3, so the
    # ranks' rows interleave into exactly one process's draw (the same generator seed)
    shape = (4, 5, 3) if dim == 1 else (5, 3)  # one rank's: (K, B, D) or (B, D)
    cpu = torch.device("cpu")
    ranks = [objective.Noise(torch.Generator().manual_seed(7), r, 3) for r in range(3)]
    parts = [noise.eps(shape, dim, cpu) for noise in ranks]
    full = list(shape)
    full[dim] *= 3
    whole = torch.randn(full, generator=torch.Generator().manual_seed(7))
    for rank, part in enumerate(parts):
        assert part is not None and part.shape == shape
        assert torch.equal(part, whole.index_select(dim, torch.arange(rank, full[dim], 3)))
    assert objective.Noise(torch.Generator()).eps(shape, dim, cpu) is None  # one process


# -- KL warm-up -------------------------------------------------------------------------------
def test_warmup_weights_the_kl_by_the_schedule_at_each_step() -> None:
    model, x = _model(), _x()
    cfg = LossConfig(beta=0.5, kl_warmup_steps=4)
    seen = []
    for step in (0, 1, 3, 10):
        t = objective.compute(model, x, None, cfg, step, _noise())
        loss = float(t.loss.detach())
        seen.append(loss)
        weight = 0.5 * min(1.0, (step + 1) / 4)  # 0.125, 0.25, 0.5, 0.5
        assert loss == pytest.approx(float(t.recon) + weight * float(t.kl), rel=1e-6)
        assert float(t.nelbo) == pytest.approx(float(t.recon + t.kl), rel=1e-6)  # reported: beta=1
    assert seen[0] < seen[1] < seen[2] == seen[3]  # KL > 0 here, so the loss rises with beta


def test_warmup_changes_what_training_learns(tmp_path: Path) -> None:
    common = {"train.epochs": 2, "optim.lr": 0.01}
    plain = vaekit.train(tiny_config(tmp_path / "plain", **common))
    warm = vaekit.train(
        tiny_config(tmp_path / "warm", **common, **{"loss.kl_warmup_steps": 1_000_000})
    )
    # with beta ~ 0 the encoder is free to spend nats: its KL ends far above the plain run's
    assert _records(warm)[-1]["train_kl"] > 2 * _records(plain)[-1]["train_kl"]


# -- free bits --------------------------------------------------------------------------------
def test_free_bits_stop_the_kl_gradient_of_dimensions_below_the_floor() -> None:
    model, x = _model(), _x()
    out = model(x, generator=torch.Generator().manual_seed(0))
    per_dim = losses.kl_standard_normal(out.mu, out.logvar)  # (B, D)
    floor = float(per_dim.mean(0).median().detach())
    low = per_dim.mean(0) < floor
    assert 0 < int(low.sum()) < per_dim.shape[1]
    mu = out.mu.detach().requires_grad_(True)
    kl = losses.free_bits_kl(losses.kl_standard_normal(mu, out.logvar.detach()), floor)
    (grad,) = torch.autograd.grad(kl, mu)
    assert torch.all(grad[:, low] == 0)  # below the floor: no pull towards the prior
    assert torch.all(grad[:, ~low].abs().sum(0) > 0)  # above it: the usual KL gradient
    mu2 = out.mu.detach().requires_grad_(True)
    (plain,) = torch.autograd.grad(
        losses.kl_standard_normal(mu2, out.logvar.detach()).sum(1).mean(), mu2
    )
    torch.testing.assert_close(grad[:, ~low], plain[:, ~low])


def test_free_bits_change_the_training_gradient_and_train(tmp_path: Path) -> None:
    model, x = _model(), _x()
    g = {}
    for bits in (0.0, 10.0):  # 10 nats per dimension: above every dimension's KL here
        terms = objective.compute(model, x, None, LossConfig(free_bits=bits), 0, _noise())
        g[bits] = _grads(model, terms.loss)
    recon_only = objective.compute(model, x, None, LossConfig(beta=0.0), 0, _noise())
    g_recon = _grads(model, recon_only.loss)
    key = "logvar_head.weight"  # only the KL pulls the log-variances towards the prior's
    assert not torch.allclose(g[0.0][key], g_recon[key])
    torch.testing.assert_close(g[10.0][key], g_recon[key])  # every dimension under the floor
    run = vaekit.train(tiny_config(tmp_path / "fb", **{"loss.free_bits": 0.5}))
    assert math.isfinite(_records(run)[-1]["val_nelbo"])


# -- IWAE -------------------------------------------------------------------------------------
def test_iwae_bound_is_at_least_the_elbo_of_the_same_samples() -> None:
    model, x = _model(), _x(32)
    with torch.no_grad():
        log_w = model.log_importance_weights(x, 16, generator=torch.Generator().manual_seed(0))
    iw, elbo = losses.iw_bound(log_w), log_w.mean(0)  # (B,) each
    assert torch.all(iw >= elbo - 1e-5)  # Jensen, example by example
    assert float((iw - elbo).mean()) > 0


def test_iwae_training_uses_k_samples_and_improves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    real = VAE.log_importance_weights

    def spy(self: VAE, x: torch.Tensor, k: int, *args: object, **kw: object) -> torch.Tensor:
        seen.append(k)
        return real(self, x, k, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(VAE, "log_importance_weights", spy)
    run = vaekit.train(
        tiny_config(tmp_path / "iw", **{"loss.iw_samples": 5, "train.epochs": 3, "optim.lr": 0.003})
    )
    assert seen and set(seen) == {5}  # every training step drew K = 5 samples
    records = _records(run)
    assert records[-1]["val_nelbo"] < records[0]["val_nelbo"]


# -- gradient clipping ------------------------------------------------------------------------
def _update_norm(tmp_path: Path, name: str, clip: float) -> tuple[float, float]:
    cfg = tiny_config(
        tmp_path / name,
        **{
            "data.noise_examples": 64,
            "optim.name": "sgd",
            "optim.lr": 1.0,
            "optim.grad_clip": clip,
            "model.init_output_bias": False,  # `before` below is the seeded initialisation
        },
    )
    run = vaekit.train(cfg)  # one step: 64 examples, batch 64
    torch.manual_seed(cfg.train.seed)  # train builds the model right after this seed
    before = VAE.from_config(cfg.model, (1, 28, 28), 0).state_dict()
    after = vaekit.load(run).state_dict()
    delta = torch.cat([(after[k] - before[k]).flatten() for k in before])
    return float(delta.norm()), _records(run)[-1]["train_grad_norm"]


def test_grad_clip_bounds_the_update(tmp_path: Path) -> None:
    clipped, norm = _update_norm(tmp_path, "clipped", 0.01)
    assert norm > 0.01  # the gradient was larger than the threshold...
    assert clipped == pytest.approx(0.01, rel=1e-3)  # ...and SGD moved by lr * 0.01 exactly
    free, norm_free = _update_norm(tmp_path, "free", 0.0)
    assert free == pytest.approx(norm_free, rel=1e-3) and free > 10 * clipped


# -- LPIPS ------------------------------------------------------------------------------------
def _lpips(net: str = "vgg") -> torch.nn.Module:
    return perceptual.build_perceptual(f"lpips-{net}", "cpu", "random", "random")  # type: ignore[return-value]


def test_perceptual_gradients_reach_the_decoder() -> None:
    torch.manual_seed(0)
    model = VAE.from_config(
        ModelConfig(arch="conv", channels=[8, 16], latent_dim=4, likelihood="laplace"), (3, 32, 32)
    )
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    lpips = _lpips()
    grads = {}
    for weight in (0.0, 100.0):
        cfg = LossConfig(perceptual="lpips-vgg", perceptual_weight=weight)
        terms = objective.compute(model, x, None, cfg, 0, _noise(), lpips)
        grads[weight] = _grads(model, terms.loss)
    head = "decoder.head.weight"
    difference = (grads[100.0][head] - grads[0.0][head]).abs().max()
    assert difference > 1e-4  # under no_grad the two would be identical
    assert all(p.grad is None for p in lpips.parameters())  # the network itself stays frozen


def test_lpips_is_zero_for_identical_images_and_grows_with_noise() -> None:
    lpips = _lpips()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 32, 32, generator=g)
    small = (x + 0.02 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    large = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    d0, d1, d2 = lpips(x, x), lpips(small, x), lpips(large, x)
    assert d0.shape == (3,) and torch.allclose(d0, torch.zeros(3))
    assert torch.all(d1 > 0) and torch.all(d2 > d1)
    gray = lpips(x[:, :1], x[:, :1].flip(-1))  # grayscale goes in as R = G = B
    assert gray.shape == (3,) and torch.all(gray > 0)


def test_lpips_alex_needs_images_of_at_least_31_pixels() -> None:
    with pytest.raises(ConfigError, match="at least 31 px.*use lpips-vgg"):
        _lpips("alex")(torch.rand(1, 1, 28, 28), torch.rand(1, 1, 28, 28))
    assert _lpips("alex")(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)).shape == (1,)


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_lpips_loads_torchvision_and_lpips_weight_files(tmp_path: Path, net: str) -> None:
    torch.manual_seed(1)
    features = perceptual.vgg16_features() if net == "vgg" else perceptual.alexnet_features()
    backbone = {f"features.{k}": v for k, v in features.state_dict().items()}
    backbone["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision's file has these too
    torch.save(backbone, tmp_path / "backbone.pth")
    channels = perceptual._CHANNELS[net]
    lins = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(channels)}
    torch.save(lins, tmp_path / "lin.pth")  # the lpips package's key layout
    model = perceptual.build_perceptual(
        f"lpips-{net}", "cpu", str(tmp_path / "backbone.pth"), str(tmp_path / "lin.pth")
    )
    state = model.state_dict()
    for k, v in features.state_dict().items():
        assert torch.equal(state[f"features.{k}"], v)
    for i in range(5):
        assert torch.equal(state[f"lins.{i}.weight"], lins[f"lin{i}.model.1.weight"])


def test_lpips_finds_the_package_weights_without_importing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site" / "lpips"
    (package / "weights" / "v0.1").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('torchvision is not importable')\n")
    lins = {
        f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1)
        for i, c in enumerate(perceptual._CHANNELS["vgg"])
    }
    torch.save(lins, package / "weights" / "v0.1" / "vgg.pth")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "lpips", raising=False)
    assert perceptual.lpips_package_file("vgg") == package / "weights" / "v0.1" / "vgg.pth"
    model = perceptual.build_perceptual("lpips-vgg", "cpu", "random", "")
    assert torch.equal(model.state_dict()["lins.0.weight"], lins["lin0.model.1.weight"])
    assert "lpips" not in sys.modules


def test_missing_lpips_weights_are_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setitem(sys.modules, "lpips", None)  # as if the extra were not installed
    with pytest.raises(DownloadError, match=r"pip install 'vaekit\[lpips\]'") as e:
        perceptual.build_perceptual("lpips-vgg", "cpu", "random", "")
    assert perceptual.LIN_URLS["vgg"][0] in str(e.value)  # offline: the URL it would fetch
    with pytest.raises(DownloadError) as e:
        perceptual.build_perceptual("lpips-vgg", "cpu", "", "random")
    message = str(e.value)
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "vgg16-397923af.pth") in message
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in message
    assert "loss.perceptual_backbone_weights" in message and "\n" not in message
    with pytest.raises(ConfigError, match="nowhere.pth does not exist"):
        perceptual.build_perceptual("lpips-alex", "cpu", str(tmp_path / "nowhere.pth"), "random")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="junk.pth is not a readable torch weights file"):
        perceptual.build_perceptual("lpips-vgg", "cpu", str(tmp_path / "junk.pth"), "random")


@pytest.mark.parametrize("junk", [b"hi\n", b"", b"\x80\x04\x95", b"\x80\x02}q\x00("])
def test_junk_lpips_weight_files_are_one_clear_line(tmp_path: Path, junk: bytes) -> None:
    (tmp_path / "junk.pth").write_bytes(junk)
    junk_file = str(tmp_path / "junk.pth")
    for weights in ((junk_file, "random"), ("random", junk_file)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing printed above the error line either
            with pytest.raises(ConfigError, match="junk.pth is not a readable torch weights"):
                perceptual.build_perceptual("lpips-alex", "cpu", *weights)


def test_lpips_weight_files_of_the_wrong_kind_are_named(tmp_path: Path) -> None:
    torch.save({"features.0.weight": 1, 2: torch.zeros(1)}, tmp_path / "odd.pth")
    with pytest.raises(ConfigError, match=r"odd.pth does not fit \(e.g. features.0.weight"):
        perceptual.build_perceptual("lpips-alex", "cpu", str(tmp_path / "odd.pth"), "random")


def test_a_directory_for_lpips_weights_is_named_as_one(tmp_path: Path) -> None:
    for weights, flag in (
        ((str(tmp_path), "random"), "backbone"),
        (("random", str(tmp_path)), "lin"),
    ):
        with pytest.raises(ConfigError, match=f"perceptual_{flag}_weights .* is a directory"):
            perceptual.build_perceptual("lpips-alex", "cpu", *weights)


def test_train_without_lpips_weights_is_one_clear_line(tmp_path: Path) -> None:
    result = run_cli(
        "train",
        "--data",
        "noise",
        "--data.noise_examples",
        "64",
        "--loss.perceptual",
        "lpips-vgg",
        "--model.hidden",
        "8",
        "--out",
        str(tmp_path / "run"),
        "--train.progress",
        "false",
        env={"TORCH_HOME": str(tmp_path / "torch")},
    )
    assert_clean_error(result, "vgg16-397923af.pth", "loss.perceptual_backbone_weights")
