"""Training speed of the PyTorch-VAE VanillaVAE against vaekit's conv VAE, same architecture.

    python benchmarks/conv_speed.py [--steps 20] [--rounds 5] [--faces128-steps 3] [--cpu-time]

The reference is AntixK/PyTorch-VAE's `VanillaVAE` (64x64 RGB, hidden dims
[32, 64, 128, 256, 512], latent 128: 3.9M parameters), written below in that repository's
own style and trained with its plain loop (Adam, MSE + M_N-weighted KL, batch 64). Ours is
`vaekit.train` on the same data with the same channels per level, latent size, batch size,
optimizer and learning rate (`model.blocks_per_level: 0`: one stride-2 conv per level down,
upsample + conv per level up; 3.9M parameters). Both run in one process, alternating, each
in fp32 and in bf16 autocast + channels_last, each measurement timing steps that follow
warm-up steps. The ratio is each round's own (ours / the reference's fp32 in the same
round), median over rounds; images/s is the best round's (load only ever slows a round
down). On a machine that other processes keep busy, --cpu-time times both sides' bare
steps on one thread by its CPU clock, which time-slicing does not inflate. Writes
benchmarks/results/conv_speed.json and .md (every round, the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

import vaekit
from vaekit.config import load_config
from vaekit.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_results  # noqa: E402


# -- the reference: PyTorch-VAE's models/vanilla_vae.py, in its own style -------------------
class VanillaVAE(nn.Module):
    def __init__(
        self, in_channels: int, latent_dim: int, hidden_dims: list = None, **kwargs
    ) -> None:
        super(VanillaVAE, self).__init__()  # noqa: UP008  (the reference's own style)

        self.latent_dim = latent_dim

        modules = []
        if hidden_dims is None:
            hidden_dims = [32, 64, 128, 256, 512]

        # Build Encoder
        for h_dim in hidden_dims:
            modules.append(
                nn.Sequential(
                    nn.Conv2d(in_channels, out_channels=h_dim, kernel_size=3, stride=2, padding=1),
                    nn.BatchNorm2d(h_dim),
                    nn.LeakyReLU(),
                )
            )
            in_channels = h_dim

        self.encoder = nn.Sequential(*modules)
        self.fc_mu = nn.Linear(hidden_dims[-1] * 4, latent_dim)
        self.fc_var = nn.Linear(hidden_dims[-1] * 4, latent_dim)

        # Build Decoder
        modules = []

        self.decoder_input = nn.Linear(latent_dim, hidden_dims[-1] * 4)

        hidden_dims.reverse()

        for i in range(len(hidden_dims) - 1):
            modules.append(
                nn.Sequential(
                    nn.ConvTranspose2d(
                        hidden_dims[i],
                        hidden_dims[i + 1],
                        kernel_size=3,
                        stride=2,
                        padding=1,
                        output_padding=1,
                    ),
                    nn.BatchNorm2d(hidden_dims[i + 1]),
                    nn.LeakyReLU(),
                )
            )

        self.decoder = nn.Sequential(*modules)

        self.final_layer = nn.Sequential(
            nn.ConvTranspose2d(
                hidden_dims[-1],
                hidden_dims[-1],
                kernel_size=3,
                stride=2,
                padding=1,
                output_padding=1,
            ),
            nn.BatchNorm2d(hidden_dims[-1]),
            nn.LeakyReLU(),
            nn.Conv2d(hidden_dims[-1], out_channels=3, kernel_size=3, padding=1),
            nn.Tanh(),
        )

    def encode(self, input: Tensor) -> list[Tensor]:
        result = self.encoder(input)
        result = torch.flatten(result, start_dim=1)

        # Split the result into mu and var components
        # of the latent Gaussian distribution
        mu = self.fc_mu(result)
        log_var = self.fc_var(result)

        return [mu, log_var]

    def decode(self, z: Tensor) -> Tensor:
        result = self.decoder_input(z)
        result = result.view(-1, 512, 2, 2)
        result = self.decoder(result)
        result = self.final_layer(result)
        return result

    def reparameterize(self, mu: Tensor, logvar: Tensor) -> Tensor:
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return eps * std + mu

    def forward(self, input: Tensor, **kwargs) -> list[Tensor]:
        mu, log_var = self.encode(input)
        z = self.reparameterize(mu, log_var)
        return [self.decode(z), input, mu, log_var]

    def loss_function(self, *args, **kwargs) -> dict:
        recons = args[0]
        input = args[1]
        mu = args[2]
        log_var = args[3]

        kld_weight = kwargs["M_N"]  # Account for the minibatch samples from the dataset
        recons_loss = F.mse_loss(recons, input)

        kld_loss = torch.mean(-0.5 * torch.sum(1 + log_var - mu**2 - log_var.exp(), dim=1), dim=0)  # noqa: E501

        loss = recons_loss + kld_weight * kld_loss
        return {
            "loss": loss,
            "Reconstruction_Loss": recons_loss.detach(),
            "KLD": -kld_loss.detach(),
        }


def reference_images_per_s(
    images: Tensor,
    batch: int,
    warmup: int,
    steps: int,
    bf16_channels_last: bool,
    clock: Any = time.perf_counter,
) -> float:
    """PyTorch-VAE's training step in a plain loop over `images` in [-1, 1]."""
    torch.manual_seed(0)
    model = VanillaVAE(3, 128)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
    if bf16_channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    n = images.shape[0]
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            start = clock()
        i = (step * batch) % (n - batch + 1)
        x = images[i : i + batch]
        if bf16_channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_channels_last):
            results = model(x)
            loss = model.loss_function(*results, M_N=batch / n)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * batch / (clock() - start)


def step_images_per_s(
    config: vaekit.Config, x_u8: Tensor, warmup: int, steps: int, clock: Any
) -> float:
    """vaekit's training step outside `vaekit.train` (for --cpu-time: one thread's clock).

    The same pieces as train.py: channels_last conv model, fused optimizer, autocast,
    `objective.compute`, the gradient norm, the perceptual network when configured.
    """
    from vaekit.data import to_float
    from vaekit.training import objective
    from vaekit.training.optim import make_optimizer
    from vaekit.training.precision import autocast as _autocast

    device = torch.device("cpu")
    torch.manual_seed(0)
    model = vaekit.VAE.from_config(config.model, tuple(x_u8.shape[1:])).to(
        memory_format=torch.channels_last
    )
    optimizer = make_optimizer(model, config, device)
    params = [p for p in model.parameters() if p.requires_grad]
    from vaekit.evaluation.perceptual import from_config

    perceptual = from_config(config.loss, device)
    noise = objective.Noise(torch.Generator().manual_seed(0))
    batch, n = config.train.batch_size, x_u8.shape[0]
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            start = clock()
        i = (step * batch) % (n - batch + 1)
        x = to_float(x_u8[i : i + batch])
        with _autocast(device, config.train.precision):
            terms = objective.compute(model, x, None, config.loss, step, noise, perceptual)
        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None], foreach=True)
        optimizer.step()
    return steps * batch / (clock() - start)


OURS = {
    "model.arch": "conv",
    "model.channels": [32, 64, 128, 256, 512],
    "model.blocks_per_level": 0,
    "model.latent_dim": 128,
    "model.likelihood": "gaussian",
    "optim.lr": 0.005,
}  # the VanillaVAE's size; MSE is a fixed-variance Gaussian


def ours_images_per_s(
    data: Dataset, batch: int, warmup: int, steps: int, precision: str, workdir: Path
) -> float:
    """`vaekit.train` at the VanillaVAE's size; its own samples/s over the timed epoch."""
    common = {
        **OURS,
        "train.batch_size": batch,
        "train.precision": precision,
        "train.progress": False,
        "train.device": "cpu",
        "train.eval_batch_size": 256,
    }
    x_train = data.x_train[: batch * (warmup + steps)]
    # a short warm-up run first (oneDNN builds its kernels), then the timed run
    warm = Dataset("bench", x_train[: batch * warmup], data.x_test)
    timed = Dataset("bench", x_train[batch * warmup :], data.x_test)
    vaekit.train(
        load_config(None, {**common, "train.epochs": 1, "train.out": str(workdir / "warm")}),
        data=warm,
        overwrite=True,
    )
    run = vaekit.train(
        load_config(None, {**common, "train.epochs": 1, "train.out": str(workdir / "run")}),
        data=timed,
        overwrite=True,
    )
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    return float(record["samples_per_s"])


def faces128_setup(steps: int) -> tuple[dict[str, Any], Tensor]:
    """Overrides (LPIPS weights: random unless real ones are installed, the same
    computation) and smooth random 128x128 images for the faces128 preset."""
    from vaekit.evaluation import perceptual

    batch = load_config("faces128").train.batch_size
    g = torch.Generator().manual_seed(0)
    coarse = torch.randint(0, 256, (batch * (steps + 1), 3, 16, 16), generator=g, dtype=torch.uint8)
    x = coarse.repeat_interleave(8, 2).repeat_interleave(8, 3)  # (N, 3, 128, 128)
    weights: dict[str, Any] = {}
    if not perceptual.hub_checkpoint("vgg").is_file():
        weights["loss.perceptual_backbone_weights"] = "random"
    if perceptual.lpips_package_file("vgg") is None:
        weights["loss.perceptual_lin_weights"] = "random"
    return weights, x


def faces128_images_per_s(
    precision: str, steps: int, workdir: Path, clock: Any | None = None
) -> float:
    """The faces128 preset (12M parameters, 128x128, L1 + LPIPS-VGG + KL) at its batch size:
    `vaekit.train`'s samples/s, or with `clock` the bare step's."""
    weights, x = faces128_setup(steps)
    batch = load_config("faces128").train.batch_size
    common = {
        **weights,
        "train.precision": precision,
        "train.progress": False,
        "train.device": "cpu",
        "train.epochs": 1,
        "train.eval_batch_size": batch,
        "train.log_images_every": 0,
    }
    if clock is not None:
        return step_images_per_s(load_config("faces128", common), x, 1, steps, clock)
    vaekit.train(
        load_config("faces128", {**common, "train.out": str(workdir / "fwarm")}),
        data=Dataset("faces", x[:batch], x[:8]),
        overwrite=True,
    )
    run = vaekit.train(
        load_config("faces128", {**common, "train.out": str(workdir / "frun")}),
        data=Dataset("faces", x[batch:], x[:8]),
        overwrite=True,
    )
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    return float(record["samples_per_s"])


KEYS = ("reference_fp32", "reference_bf16_channels_last", "ours_fp32", "ours_bf16_channels_last")
LABELS = {
    "reference_fp32": "PyTorch-VAE VanillaVAE, plain loop, fp32",
    "reference_bf16_channels_last": "same, bf16 autocast + channels_last",
    "ours_fp32": "vaekit's conv VAE at the same size, fp32 (channels_last)",
    "ours_bf16_channels_last": "same, `train.precision: bf16` (+ channels_last)",
}


def forward_macs_per_image(batch: int) -> dict[str, int]:
    """Multiply-adds per 64x64 image of a forward pass over `batch` images, counted by
    torch's flop counter (ours includes deriving the upsampling kernels once per batch)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(batch, 3, 64, 64)
    models = {
        "reference": lambda: VanillaVAE(3, 128)(x * 2 - 1),
        "ours": lambda: vaekit.VAE.from_config(load_config(None, OURS).model, (3, 64, 64))(x),
    }
    macs = {}
    for name, forward in models.items():
        with FlopCounterMode(display=False) as counter:
            forward()
        macs[name] = counter.get_total_flops() // 2 // x.shape[0]  # 2 flops per multiply-add
    return macs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before each")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument(
        "--faces128-steps",
        type=int,
        default=3,
        help="also time the faces128 preset for this many steps (0: skip)",
    )
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="one thread, timed by its CPU clock (time.thread_time), both "
        "sides as bare steps: for a machine other processes keep busy",
    )
    args = parser.parse_args(argv)
    clock = time.thread_time if args.cpu_time else None
    if args.cpu_time:
        torch.set_num_threads(1)
    info = machine()
    torch.set_flush_denormal(True)  # as vaekit.train does on the CPU; applies to both
    g = torch.Generator().manual_seed(0)
    n = args.batch * (args.warmup + args.steps)
    x_u8 = torch.randint(0, 256, (n, 3, 64, 64), generator=g, dtype=torch.uint8)
    data = Dataset("bench", x_u8, x_u8[:256])
    x_ref = x_u8.float() / 127.5 - 1.0  # PyTorch-VAE feeds images normalised to [-1, 1]
    results: dict[str, list[float]] = {k: [] for k in KEYS}
    load: list[float] = []
    faces: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for key in KEYS:
                load.append(os.getloadavg()[0])
                if key.startswith("reference"):
                    v = reference_images_per_s(
                        x_ref,
                        args.batch,
                        args.warmup,
                        args.steps,
                        key.endswith("channels_last"),
                        clock or time.perf_counter,
                    )
                elif clock is not None:
                    config = load_config(
                        None,
                        {
                            **OURS,
                            "train.batch_size": args.batch,
                            "train.precision": "bf16" if "bf16" in key else "fp32",
                        },
                    )
                    v = step_images_per_s(config, x_u8, args.warmup, args.steps, clock)
                else:
                    v = ours_images_per_s(
                        data,
                        args.batch,
                        args.warmup,
                        args.steps,
                        "bf16" if "bf16" in key else "fp32",
                        Path(tmp),
                    )
                results[key].append(v)
                print(f"round {r + 1}: {key:30} {v:8.1f} images/s", file=sys.stderr)
        for precision in ("fp32", "bf16") if args.faces128_steps else ():
            faces[precision] = round(
                faces128_images_per_s(precision, args.faces128_steps, Path(tmp), clock), 2
            )
            print(f"faces128 {precision}: {faces[precision]} images/s", file=sys.stderr)
    # each round's own ratio: load shifts a round's four measurements alike
    ratios = {
        k: statistics.median(
            v / f for v, f in zip(results[k], results["reference_fp32"], strict=True)
        )
        for k in KEYS
    }
    best = {k: max(v) for k, v in results.items()}
    params_ref = sum(p.numel() for p in VanillaVAE(3, 128).parameters())
    cfg = load_config(None, OURS)
    params_ours = sum(
        p.numel() for p in vaekit.VAE.from_config(cfg.model, (3, 64, 64)).parameters()
    )
    macs = forward_macs_per_image(args.batch)
    result: dict[str, Any] = {
        "machine": info,
        "forward_macs_per_image": macs,
        "clock": "one thread's CPU time" if clock else f"wall, {torch.get_num_threads()} threads",
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "parameters": {"reference": params_ref, "ours": params_ours},
        "images_per_s_best": {k: round(v, 1) for k, v in best.items()},
        "images_per_s_all": {k: [round(x, 1) for x in v] for k, v in results.items()},
        "x_reference_fp32_same_round_median": {k: round(v, 2) for k, v in ratios.items()},
        "load_average_1min": {"min": round(min(load), 2), "max": round(max(load), 2)},
    }
    table = [
        [
            f"training step (64x64 RGB, batch {args.batch}, latent 128)",
            "images per CPU-second (best round)" if clock else "images/s (best round)",
            "x reference fp32 (same round, median)",
        ]
    ]
    table += [[LABELS[k], f"{best[k]:,.0f}", f"{ratios[k]:.2f}x"] for k in KEYS]
    how = (
        "bare training steps on one thread, timed by its CPU clock (time.thread_time)"
        if clock
        else "wall clock, torch's default threads; ours is `vaekit.train`"
    )
    notes = [
        f"{args.rounds} rounds, alternating, each timing {args.steps} steps after "
        f"{args.warmup} warm-up steps ({how}); parameters: reference {params_ref:,}, ours "
        f"{params_ours:,}. Ours upsamples (nearest + 3x3 conv, computed as a stride-2 "
        "transposed conv with the equivalent 4x4 kernel) where the reference uses 3x3 "
        f"transposed convs, {macs['ours'] / macs['reference']:.2f}x the reference's "
        f"multiply-adds per image ({macs['ours'] / 1e6:.1f}M against "
        f"{macs['reference'] / 1e6:.1f}M, forward, torch's flop counter), and normalises "
        "with GroupNorm where it uses BatchNorm. Load average during the run: "
        f"{min(load):.2f} to {max(load):.2f}."
    ]
    if faces:
        fcfg = load_config("faces128")
        result["faces128"] = {
            "parameters": sum(
                p.numel() for p in vaekit.VAE.from_config(fcfg.model, (3, 128, 128)).parameters()
            ),
            "batch": fcfg.train.batch_size,
            "steps": args.faces128_steps,
            "images_per_s": faces,
        }
        notes.append(
            f"faces128 preset ({result['faces128']['parameters']:,} parameters, "
            f"128x128, L1 + LPIPS-VGG + 0.02 KL, batch {fcfg.train.batch_size}, "
            f"{args.faces128_steps} steps): {faces['fp32']} images/s in fp32, "
            f"{faces['bf16']} in bf16."
        )
    md = write_results("conv_speed", result, table, notes)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
