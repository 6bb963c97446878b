"""The prior over the VQ-VAE's codes in `families.py`, both sides: vaekit's gated PixelCNN
(`vaekit.train_prior`, its defaults: 64 channels, 5 layers, 3x3) and pythae's own
`PixelCNNSampler` (its defaults: 10 masked 5x5 layers of 64 channels with batch norm),
each trained on its own VQ-VAE's codes of the same training images for the same process CPU
seconds, Adam at 1e-3, batch 64; then each prior's bits per code on the test images' codes
and the images it samples (for the FID).

The budget: `vaekit.train_prior` runs whole epochs and takes no callback, so vaekit's
prior gets one epoch over the first n training images (n from a short calibration call, so
that the call takes about the budget), selected on 500 more; its CPU seconds are measured
over the whole call (the codes encoded, the epoch, the validation). pythae's sampler then
gets exactly those CPU seconds on the same n images and the same 500, measured the same way
(from its `fit`, which encodes them first), stopped by a callback on its trainer's steps.
Only vaekit's public API is used (`vaekit.train_prior` with an .npz as its data).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

VAL_IMAGES = 500
CALIBRATION_IMAGES = 512
BATCH, LR = 64, 1e-3


def _npz(x_train: torch.Tensor, n: int, path: Path) -> Path:
    """The first n training images as x_train, the next VAL_IMAGES as x_val."""
    images = x_train.numpy()
    np.savez(path, x_train=images[:n], x_val=images[n : n + VAL_IMAGES])
    return path


def train_vaekit_prior(
    model: Any, x_train: torch.Tensor, budget_s: float, work: Path
) -> dict[str, Any]:
    """vaekit's code prior on `model` (attached to it): its CPU seconds, images, epochs."""
    import vaekit

    work.mkdir(parents=True, exist_ok=True)
    started = time.process_time()
    vaekit.train_prior(model, data=str(_npz(x_train, CALIBRATION_IMAGES, work / "cal.npz")),
                       epochs=1, batch_size=BATCH, lr=LR)  # fmt: skip
    per_image = (time.process_time() - started) / CALIBRATION_IMAGES  # overhead included
    n = int(min(len(x_train) - VAL_IMAGES, max(BATCH, budget_s / per_image)))
    data = str(_npz(x_train, n, work / "codes.npz"))
    started = time.process_time()
    result = vaekit.train_prior(model, data=data, epochs=1, batch_size=BATCH, lr=LR)
    cpu_s = time.process_time() - started
    code_prior = result.model.code_prior
    assert code_prior is not None
    params = sum(int(p.numel()) for p in code_prior.parameters())
    return {"prior_cpu_s": cpu_s, "prior_images": n, "prior_epochs": 1,
            "prior_steps": math.ceil(n / BATCH), "prior_parameters": params}  # fmt: skip


class _Spent(Exception):
    """Raised by the budget callback to end pythae's PixelCNN training."""


def train_pythae_prior(
    p_model: Any, x_train: torch.Tensor, n: int, budget_s: float, out: Path
) -> tuple[Any, dict[str, Any]]:
    """pythae's PixelCNNSampler on its VQVAE `p_model`, fitted on the same n images (and
    VAL_IMAGES) until `budget_s` CPU seconds from the start of `fit`: the sampler, stats."""
    import pythae.samplers.pixelcnn_sampler.pixelcnn_sampler as module
    from pythae.samplers import PixelCNNSampler, PixelCNNSamplerConfig
    from pythae.trainers import BaseTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback

    clock: dict[str, Any] = {"steps": 0}

    class Budget(TrainingCallback):  # type: ignore[misc]
        def on_train_step_end(self, training_config: Any, **kwargs: Any) -> None:
            clock["steps"] += 1
            if time.process_time() - clock["t0"] >= budget_s:
                raise _Spent

    trainer_cls = module.BaseTrainer  # fit builds its trainer without callbacks: add ours

    def trainer_with_budget(*args: Any, **kwargs: Any) -> Any:
        clock["trainer"] = trainer_cls(*args, callbacks=[Budget()], **kwargs)
        return clock["trainer"]

    torch.manual_seed(0)
    sampler = PixelCNNSampler(p_model, PixelCNNSamplerConfig())
    config = BaseTrainerConfig(output_dir=str(out), per_device_train_batch_size=BATCH,
                               per_device_eval_batch_size=BATCH, num_epochs=10_000,
                               learning_rate=LR, no_cuda=True)  # fmt: skip
    x = x_train.float() / 255.0
    module.BaseTrainer = trainer_with_budget
    clock["t0"] = time.process_time()
    try:
        sampler.fit(x[:n], x[n : n + VAL_IMAGES], training_config=config)
    except _Spent:  # what fit does after training: its trained PixelCNN, as it stands
        sampler.is_fitted = True
    finally:
        module.BaseTrainer = trainer_cls
    cpu_s = time.process_time() - clock["t0"]
    params = sum(p.numel() for p in sampler.pixelcnn_model.parameters())
    # fit reloads its final model from disk, in train mode: sampling runs as a user's does
    sampler.pixelcnn_model.train()
    return sampler, {"prior_cpu_s": cpu_s, "prior_images": n, "prior_steps": clock["steps"],
                     "prior_parameters": params}  # fmt: skip


@torch.no_grad()
def pythae_prior_stats(sampler: Any, p_model: Any, x_test: torch.Tensor) -> dict[str, Any]:
    """-log p(codes) of the test images' codes under pythae's PixelCNN, from its logits
    (eval mode: batch norm's running statistics), as vaekit's prior_stats reports it."""
    net = sampler.pixelcnn_model
    was_training = net.training
    net.eval()
    nats = []
    for i in range(0, len(x_test), 500):
        codes = p_model({"data": x_test[i : i + 500].float() / 255.0}).quantized_indices.float()
        logits = net({"data": codes}).out  # (B, K, 1, h, w)
        nll = F.cross_entropy(logits, codes.long(), reduction="none")
        nats.append(nll.flatten(1).sum(1))
    net.train(was_training)
    nat = float(torch.cat(nats).double().mean())
    cells = math.prod(codes.shape[1:])
    return {"prior_nll": nat, "prior_bits_per_code": nat / cells / math.log(2),
            "prior_bits_per_dim": nat / math.prod(x_test.shape[1:]) / math.log(2)}  # fmt: skip


@torch.no_grad()
def pythae_samples(sampler: Any, n: int, seed: int = 2) -> torch.Tensor:
    """n images from pythae's sampler (its own loop; its RNG is torch's global one)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return sampler.sample(num_samples=n, batch_size=500).clamp(0.0, 1.0)
