"""The CUDA paths of training: data moved to the GPU once (or fed through pinned memory
when it does not fit), bf16 and fp16 autocast, and the non-finite guard on the device.

These run only where CUDA is present; on a CPU-only machine every test here is skipped.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

import vaekit
from akl_layouts import LAYOUTS, PATHS, check_pair
from conftest import nan_on_odd_steps
from test_fast_ops import LAYOUTS as NORM_LAYOUTS
from vaekit.data.core.dataset import gather, resident
from vaekit.models.fast_ops import GroupNorm
from vaekit.models.mlp import MLPDecoder

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU; this machine has none (CPU-only torch)"
)
CUDA = torch.device("cuda")


def _records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_training_data_is_moved_to_the_gpu_once_when_it_fits() -> None:
    x = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    on_gpu = resident(x, CUDA)
    assert on_gpu.device.type == "cuda" and torch.equal(on_gpu.cpu(), x)
    idx = torch.tensor([3, 1, 60], device=CUDA)
    batch = gather(on_gpu, idx, CUDA)
    assert batch.device.type == "cuda" and batch.dtype == torch.float32
    # the GPU divides by 255 with its own rounding: within an ulp of the CPU's
    torch.testing.assert_close(batch.cpu(), x[[3, 1, 60]].float() / 255, rtol=0, atol=1e-7)
    # the trainer's device is cuda:N (what tensors report), and plain "cuda" works too
    assert torch.equal(gather(on_gpu, idx, torch.device("cuda", 0)), batch)


def test_data_too_big_for_the_gpu_stays_on_the_host_and_goes_through_pinned_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (x.numel(), x.numel()))
    host = resident(x, CUDA)  # would take all the free memory: stays where it is
    assert host.device.type == "cpu"
    pinned = []
    original = torch.Tensor.pin_memory

    def spy(self: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        out = original(self, *args, **kwargs)
        pinned.append(out.is_pinned())
        return out

    monkeypatch.setattr(torch.Tensor, "pin_memory", spy)
    batch = gather(host, torch.tensor([5, 0, 63]), CUDA)
    torch.cuda.synchronize()
    assert pinned == [True] and batch.device.type == "cuda"
    torch.testing.assert_close(batch.cpu(), x[[5, 0, 63]].float() / 255, rtol=0, atol=1e-7)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_on_the_gpu_learns_in_every_precision(tiny, precision: str) -> None:
    run = vaekit.train(
        tiny(
            precision,
            **{
                "train.device": "cuda",
                "train.precision": precision,
                "train.epochs": 4,
                "data.noise_examples": 512,
            },
        )
    )
    records = _records(run)  # 8 steps per epoch
    assert records[-1]["train_nelbo"] < records[0]["train_nelbo"]
    # fp16: the gradient scaler starts high and skips the steps that overflow until it fits
    assert records[-1]["skipped_updates"] <= (12 if precision == "fp16" else 0)
    model = vaekit.load(run)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_non_finite_steps_on_the_gpu_are_skipped_and_counted(
    tiny, monkeypatch: pytest.MonkeyPatch, precision: str
) -> None:
    # fp32 takes the skip decision on the device (fused Adam's found_inf), fp16 the scaler's
    nan_on_odd_steps(monkeypatch)
    run = vaekit.train(
        tiny("nan", **{"train.device": "cuda", "train.precision": precision, "train.epochs": 2})
    )
    assert _records(run)[-1]["skipped_updates"] >= 4  # 4 steps per epoch, every other NaN
    model = vaekit.load(run)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())


def test_auto_and_cuda_resolve_to_the_gpu_index_tensors_report() -> None:
    from vaekit.training.preflight import resolve_device

    for name in ("auto", "cuda"):
        device = resolve_device(name)
        assert device == torch.zeros(1, device=device).device and device.index is not None


def test_a_custom_model_trains_and_resumes_bit_identically_on_the_gpu(tmp_path: Path) -> None:
    import custom_arch
    from conftest import tiny_config

    def config(name: str, epochs: int) -> vaekit.Config:
        return tiny_config(tmp_path / name, **{"train.device": "cuda", "train.epochs": epochs})

    def model() -> vaekit.VAE:  # linear layers only: cuBLAS is deterministic, convs are not
        torch.manual_seed(0)
        decoder = MLPDecoder((1, 28, 28), [16], "relu", in_features=4)
        return vaekit.VAE(
            custom_arch.DirectGaussian(latent_dim=4), decoder, latent_dim=4, input_shape=(1, 28, 28)
        )

    full = vaekit.Trainer(model(), config("full", 2)).fit()
    assert next(full.model.parameters()).device.type == "cuda"
    vaekit.Trainer(model(), config("again", 2)).fit()
    vaekit.Trainer(model(), config("half", 1)).fit()
    vaekit.Trainer(model(), config("half", 2), resume=True).fit()
    a = vaekit.load(tmp_path / "full").state_dict()
    for other in ("again", "half"):  # the same run twice, and the resumed one
        b = vaekit.load(tmp_path / other).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), other


def test_an_interrupt_on_the_gpu_counts_skips_and_takes_back_their_schedule_steps(
    tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fused optimizer steps the schedule before the skip flag is read: an interrupt
    must read the pending records first, so state.pt holds the corrected schedule."""
    import os
    import signal

    from vaekit.errors import TrainingInterrupted
    from vaekit.training import objective

    original, calls = objective.compute, []

    def spy(*args: object, **kwargs: object) -> objective.StepTerms:
        calls.append(1)
        terms = original(*args, **kwargs)
        if len(calls) in (2, 4):
            terms.loss = terms.loss * float("nan")
        if len(calls) == 6:
            os.kill(os.getpid(), signal.SIGINT)
        return terms

    monkeypatch.setattr(objective, "compute", spy)
    config = tiny("gpu-int", **{"train.device": "cuda", "train.epochs": 2})
    with pytest.raises(TrainingInterrupted):
        vaekit.train(config)
    state = torch.load(Path(config.train.out) / "state.pt", weights_only=True)
    assert (state["global_step"], state["skipped_updates"]) == (6, 2)
    assert state["schedule"]["last_epoch"] == 4  # applied updates only


@pytest.mark.parametrize("name", ["adam", "adamw", "adagrad", "sgd"])
def test_every_optimizer_steps_on_the_gpu(tiny, name: str) -> None:
    """Fused kernels where torch has them on CUDA, the plain ones where not (Adagrad)."""
    run = vaekit.train(tiny(name, **{"train.device": "cuda", "optim.name": name}))
    assert _records(run)[-1]["train_nelbo"] == _records(run)[-1]["train_nelbo"]  # not NaN


def test_a_diffusers_autoencoderkl_fine_tunes_and_exports_exactly_on_the_gpu(
    tiny, tmp_path: Path
) -> None:
    diffusers = pytest.importorskip("diffusers", reason="needs vaekit[diffusers]")
    import numpy as np

    from vaekit.diffusers.autoencoderkl import diffusers_model
    from vaekit.diffusers.export import write_diffusers

    torch.manual_seed(0)
    base = tmp_path / "base"
    diffusers.AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4,
        latent_channels=2,
    ).save_pretrained(base)
    images = torch.randint(0, 256, (96, 3, 16, 16), dtype=torch.uint8).numpy()
    np.savez(tmp_path / "images.npz", x_train=images)
    settings = {"data.name": str(tmp_path / "images.npz"), "model.init": f"diffusers:{base}"}
    run = vaekit.train(tiny(**settings, **{"train.device": "cuda", "train.batch_size": 32}))
    model = vaekit.load(run, device="cuda")
    out = write_diffusers(tmp_path / "exported", *diffusers_model(model))
    exported = diffusers.AutoencoderKL.from_pretrained(out).to(CUDA).eval()
    x = torch.rand(4, 3, 16, 16, device=CUDA)
    with torch.no_grad():
        mu, _ = model.encode(x)
        mean = exported.encode(2 * x - 1).latent_dist.mean
        torch.testing.assert_close(mu.view(mean.shape), mean)
        decoded = (exported.decode(mean).sample + 1) / 2
        torch.testing.assert_close(model.reconstruct(x), decoded.clamp(0, 1))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_spatial_latent_trains_and_evaluates_on_the_gpu(tiny, precision: str) -> None:
    run = vaekit.train(
        tiny(
            f"spatial-{precision}",
            **{
                "train.device": "cuda",
                "train.precision": precision,
                "train.epochs": 3,
                "model.arch": "conv",
                "model.channels": [8, 16],
                "model.latent_channels": 3,
                "model.likelihood": "laplace",
            },
        )
    )
    records = _records(run)
    assert records[-1]["train_nelbo"] < records[0]["train_nelbo"]
    model = vaekit.load(run, device="cuda")
    assert model.latent_shape == (3, 7, 7)
    x = torch.rand(8, 1, 28, 28, device=CUDA)
    stats = vaekit.evaluate(model, x, iw_samples=4)
    assert stats["log_px"] >= stats["iw_elbo"]
    # the GPU's reconstructions are the CPU model's, to float32 kernel differences
    cpu = vaekit.load(run)
    torch.testing.assert_close(
        model.reconstruct(x).cpu(), cpu.reconstruct(x.cpu()), atol=1e-4, rtol=0
    )


@pytest.mark.parametrize("latent", [{"model.latent_dim": 4}, {"model.latent_channels": 2}])
def test_the_linear_path_starts_at_pca_and_trains_on_the_gpu(tiny, latent: dict) -> None:
    """model.linear_path in bf16 on the GPU: PCA of the (CPU-held) images, then training."""
    run = vaekit.train(
        tiny(
            "linear-path-" + next(iter(latent)).split(".")[1],
            **{
                "train.device": "cuda",
                "train.precision": "bf16",
                "train.epochs": 3,
                "model.arch": "conv",
                "model.channels": [8, 16],
                "model.likelihood": "laplace",
                "model.obs_scale": 0.1,
                "model.linear_path": True,
                **latent,
            },
        )
    )
    records = _records(run)
    assert records[-1]["train_nelbo"] < records[0]["train_nelbo"]
    model = vaekit.load(run, device="cuda")
    assert model.decoder.linear is not None
    x = torch.rand(8, 1, 28, 28, device=CUDA)
    cpu = vaekit.load(run)
    torch.testing.assert_close(
        model.reconstruct(x).cpu(), cpu.reconstruct(x.cpu()), atol=1e-4, rtol=0
    )


def test_rfid_and_lpips_on_the_gpu_equal_the_cpus(trained_run: Path) -> None:
    from vaekit.evaluation.perceptual import build_perceptual

    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    numbers = []
    for device in ("cpu", "cuda"):
        model = vaekit.load(trained_run, device=device)
        lpips = build_perceptual("lpips-vgg", device, "random", "random")
        numbers.append(vaekit.evaluate(model, x.to(device), rfid="random", lpips=lpips))
    cpu, gpu = numbers
    assert gpu["rfid"] == pytest.approx(cpu["rfid"], rel=1e-3, abs=1e-4)
    assert gpu["lpips"] == pytest.approx(cpu["lpips"], rel=1e-3)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_the_adversarial_term_trains_on_the_gpu_in_every_precision(tiny, precision: str) -> None:
    options = {"loss.adversarial_weight": 0.5, "loss.adversarial_start": 2, "train.epochs": 4}
    cfg = tiny(
        f"adv-{precision}", **{"train.device": "cuda", "train.precision": precision, **options}
    )
    records = _records(vaekit.train(cfg))
    # fp16: each gradient scaler starts high and skips the steps that overflow until it
    # fits, so early epochs may have no applied discriminator update (their means: null)
    for record in records if precision != "fp16" else records[-1:]:
        for key in ("train_adv_loss", "train_adv_weight", "train_disc_loss"):
            assert record[key] is not None and math.isfinite(record[key]), (key, record)
        assert record["disc_skipped_updates"] == 0, record
    state = torch.load(Path(cfg.train.out) / "state.pt", weights_only=True)
    assert state["adversary"]["optimizer"]["state"]  # the discriminator stepped


def test_a_non_finite_discriminator_step_on_the_gpu_changes_nothing() -> None:
    from vaekit.config import ModelConfig, load_config
    from vaekit.training.adversary import Adversary

    config = load_config(None, {"loss.adversarial_weight": 1.0, "loss.adversarial_channels": 4})
    model = vaekit.VAE.from_config(ModelConfig(hidden=[16], latent_dim=2), (1, 28, 28)).to(CUDA)
    adversary = Adversary(config, model, CUDA, "fp32", distributed=False)
    assert adversary.skip_on_device  # fused Adam reads the skip flag on the device
    real = torch.rand(4, 1, 28, 28, device=CUDA)
    adversary.update(real, real * 0.5)  # one applied step: Adam has state
    params = dict(adversary.discriminator.named_parameters())
    before = {k: p.detach().clone() for k, p in params.items()}
    steps = [s["step"].clone() for s in adversary.optimizer.state.values()]
    _, bad = adversary.update(real, torch.full_like(real, float("nan")))
    assert bool(bad)
    assert all(torch.equal(before[k], p.detach()) for k, p in params.items())
    after = [s["step"] for s in adversary.optimizer.state.values()]
    assert all(torch.equal(a, b) for a, b in zip(steps, after, strict=True))  # not counted


# -- diffusers' AutoencoderKL at the layouts people use (issue 22), on the GPU -------------
@pytest.mark.parametrize("size", [(5, 7), (32, 32), (32, 48)])
@pytest.mark.parametrize("layout", list(NORM_LAYOUTS))
@pytest.mark.parametrize("act", [False, True])
def test_the_fast_group_norm_on_the_gpu_takes_every_layout(
    size: tuple[int, int], layout: str, act: bool
) -> None:
    """Off the CPU the fast GroupNorm is torch's group_norm (+ SiLU): the same values and
    gradients as the float64 CPU computation, for any input layout (see test_fast_ops)."""
    view, _ = NORM_LAYOUTS[layout]
    g = torch.Generator().manual_seed(1)
    x, gy = (torch.randn(1, 8, *size, generator=g, dtype=torch.float64) for _ in range(2))
    norm = GroupNorm(4, 8, act=act)
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.3, generator=g)
        norm.bias.normal_(0.0, 0.3, generator=g)
    ref_norm = copy.deepcopy(norm).double()
    norm.to(CUDA)
    xa = view(x.float().to(CUDA)).requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    ours = norm(xa)
    ref = torch.nn.functional.group_norm(xb, 4, ref_norm.weight, ref_norm.bias, norm.eps)
    ref = torch.nn.functional.silu(ref) if act else ref
    torch.testing.assert_close(ours.double().cpu(), ref, rtol=1e-5, atol=1e-5)
    ours.backward(view(gy.float().to(CUDA)))
    ref.backward(gy)
    torch.testing.assert_close(xa.grad.double().cpu(), xb.grad, rtol=1e-4, atol=1e-5)
    for a, b in ((norm.weight, ref_norm.weight), (norm.bias, ref_norm.bias)):
        torch.testing.assert_close(a.grad.double().cpu(), b.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_the_autoencoderkl_pair_computes_diffusers_on_the_gpu(layout: str, path: str) -> None:
    """vaekit's pair against diffusers' AutoencoderKL with the same weights, on the GPU, at
    each layout, in float32, channels_last and bf16 autocast (akl_layouts.check_pair).
    float32 means float32: cuDNN's TF32 convolutions (on by default) are switched off;
    torch's matmuls are float32 unless asked otherwise."""
    pytest.importorskip("diffusers", reason="needs vaekit[diffusers]")
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        check_pair(layout, path, CUDA)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_two_level_autoencoderkl_trains_at_64px_on_the_gpu(
    tiny, tmp_path: Path, precision: str
) -> None:
    """Issue 22's `--model.arch autoencoderkl --model.channels 8,16` at 64 px, on the GPU:
    the one-image probe and the mid block's 32x32 maps at batch 1 and 8."""
    pytest.importorskip("diffusers", reason="needs vaekit[diffusers]")
    import numpy as np

    images = torch.randint(0, 256, (17, 3, 64, 64), dtype=torch.uint8).numpy()
    np.savez(tmp_path / "images.npz", x_train=images)
    settings = {
        "data.name": str(tmp_path / "images.npz"),
        "model.arch": "autoencoderkl",
        "model.channels": [8, 16],
        "train.device": "cuda",
        "train.precision": precision,
        "train.batch_size": 8,
    }
    run = vaekit.train(tiny(f"akl-{precision}", **settings))
    assert math.isfinite(_records(run)[-1]["train_nelbo"])
    model = vaekit.load(run, device="cuda")
    assert model.latent_shape == (4, 32, 32)
    x = torch.rand(1, 3, 64, 64, device=CUDA)
    assert model.reconstruct(x).shape == x.shape


FAMILIES = {  # session 11's model families, each as tiny as it trains
    "vq": {"model.posterior": "vq", "model.codebook_size": 16},
    "vamp": {"model.prior": "vamp", "model.pseudo_inputs": 8},
    "iaf": {"model.posterior": "iaf", "model.flow_steps": 2},
    "iaf-vamp": {"model.posterior": "iaf", "model.prior": "vamp", "model.pseudo_inputs": 8},
    "iaf-context": {"model.posterior": "iaf", "model.flow_context": 4},
    "ladder": {"model.posterior": "ladder", "model.latent_dims": [4, 2]},
    "tcvae": {"loss.objective": "tcvae"},
    "factorvae": {"loss.objective": "factorvae"},
    "wae_mmd": {"loss.objective": "wae_mmd"},
    "infovae": {"loss.objective": "infovae"},
}


def family_round_trip(tiny, name: str, precision: str, device: str) -> None:  # noqa: ANN001
    """Train one family on `device`, load it there, evaluate (with the importance-weighted
    bound where it has a density) and sample (a VQ-VAE through a code prior trained there)."""
    settings = {**FAMILIES[name], "train.device": device, "train.precision": precision}
    run = vaekit.train(tiny(f"{name}-{precision}", **settings))
    assert math.isfinite(_records(run)[-1]["train_" + ("objective" if name == "vq" else "nelbo")])
    if name == "vq":
        vaekit.train_prior(run, epochs=1, device=device, channels=8, layers=2)
    model = vaekit.load(run, device=device)
    assert model.device.type == torch.device(device).type
    x = torch.rand(16, 1, 28, 28)
    stats = vaekit.evaluate(model, x, iw_samples=4 if model.has_density else 0, precision=precision)
    assert math.isfinite(stats[model.term_names[0]])
    if model.has_density:
        assert math.isfinite(stats["log_px"]) and stats["log_px"] >= -stats["nelbo"] - 50
    assert model.sample(4).shape == (4, 1, 28, 28)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_model_family_trains_evaluates_and_samples_on_the_gpu(
    tiny, name: str, precision: str
) -> None:
    family_round_trip(tiny, name, precision, "cuda")
