"""The config's sections on how a model is trained: the objective (`LossConfig`), the
optimizer and its schedule (`OptimConfig`), and the loop, the device, the run directory and
the trackers (`TrainConfig`). `Config` (options.py) holds them beside the data and model
sections; each field is declared with `opt` (fields.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .fields import MAX_BATCH, MAX_SEED, MAX_STEPS, opt


@dataclass
class LossConfig:
    beta: float = opt(1.0, "weight on the KL term (1: the ELBO)", min=0.0, max=1e6)
    kl_warmup_steps: int = opt(
        0,
        "ramp beta linearly over this many steps (step k uses beta*(k+1)/N)",
        min=0,
        max=MAX_STEPS,
    )
    free_bits: float = opt(
        0.0, "per-dimension KL floor in nats (Kingma et al. 2016)", min=0.0, max=1e6
    )
    iw_samples: int = opt(
        1, "train on the IWAE bound with K samples (1: the ELBO)", min=1, max=10_000
    )
    perceptual: str = opt(
        "none",
        "perceptual loss on the reconstruction mean",
        choices=("none", "lpips-vgg", "lpips-alex"),
    )
    perceptual_weight: float = opt(1.0, "weight of the perceptual loss", min=0.0, max=1e9)
    perceptual_backbone_weights: str = opt(
        "",
        "LPIPS: torchvision's VGG16/AlexNet weights "
        "file (empty: the torch hub cache; 'random': a "
        "random backbone, for tests only)",
    )
    perceptual_lin_weights: str = opt(
        "",
        "LPIPS: the linear-layer weights file (empty: the "
        "one in the lpips package; 'random': for tests only)",
    )
    adversarial_weight: float = opt(
        0.0,
        "weight of the adversarial term: a PatchGAN discriminator with hinge loss, its "
        "generator term scaled by the latent-diffusion recipe's adaptive weight "
        "(0: off; the recipe uses 0.5)",
        min=0.0,
        max=1e6,
    )
    adversarial_start: int = opt(
        0,
        "adversarial: the global step from which the term and the discriminator's "
        "updates are on (the recipe waits until reconstructions are good, e.g. 50001)",
        min=0,
        max=MAX_STEPS,
    )
    adversarial_layers: int = opt(
        3,
        "adversarial: the discriminator's stride-2 layers (taming's n_layers); each side "
        "of the images must be at least 3 * 2**layers pixels (3: 24)",
        min=1,
        max=8,
    )
    adversarial_channels: int = opt(
        64,
        "adversarial: channels of the discriminator's first layer, doubled per layer up to 8x",
        min=1,
        max=256,
    )
    adversarial_lr: float = opt(
        0.0,
        "adversarial: the discriminator's learning rate (Adam, betas 0.5 and 0.9; 0: optim.lr)",
        min=0.0,
        max=1e3,
    )
    # the objectives of disentanglement and MMD (training/latent_objectives.py)
    objective: str = opt(
        "elbo",
        "the objective: elbo (with beta, warm-up, free bits, IWAE), tcvae (beta-TCVAE), "
        "factorvae (the ELBO + a discriminator's total correlation), wae_mmd, infovae",
        choices=("elbo", "tcvae", "factorvae", "wae_mmd", "infovae"),
    )
    tc_weight: float = opt(
        1.0,
        "tcvae, factorvae: the total correlation's weight (beta-TCVAE's beta: 1 is the "
        "ELBO's own; FactorVAE's gamma, added to the ELBO); disentangling asks for more",
        min=0.0,
        max=1e6,
    )
    mi_weight: float = opt(
        1.0, "tcvae: the index-code mutual information's weight (alpha)", min=0.0, max=1e6
    )
    dim_kl_weight: float = opt(
        1.0, "tcvae: the dimension-wise KL's weight (gamma)", min=0.0, max=1e6
    )
    tc_estimator: str = opt(
        "mss",
        "tcvae: log q(z) from the minibatch by stratified (mss) or weighted (mws: its TC "
        "and dim-KL carry +-(D-1) log N) sampling, N the training set's size",
        choices=("mss", "mws"),
    )
    factorvae_hidden: int = opt(
        1000, "factorvae: the discriminator's hidden units per layer", min=1, max=4096
    )
    factorvae_layers: int = opt(
        6, "factorvae: the discriminator's linear layers, its output layer included", min=2, max=16
    )
    factorvae_lr: float = opt(
        1e-4,
        "factorvae: the discriminator's learning rate (Adam, betas 0.5 and 0.9)",
        min=0.0,
        exclusive_min=True,
        max=1e3,
    )
    mmd_weight: float = opt(
        10.0,
        "wae_mmd, infovae: lambda, the MMD's weight (infovae weighs the MMD by "
        "info_alpha + lambda - 1)",
        min=0.0,
        max=1e6,
    )
    mmd_kernel: str = opt(
        "imq",
        "wae_mmd, infovae: the MMD's kernel, inverse multiquadric (summed over 7 scales) or RBF",
        choices=("imq", "rbf"),
    )
    wae_encoder: str = opt(
        "stochastic",
        "wae_mmd: z drawn from q(z|x) (stochastic) or its mean (deterministic)",
        choices=("stochastic", "deterministic"),
    )
    info_alpha: float = opt(
        0.0,
        "infovae: alpha; the KL is weighed by 1 - alpha (0: the ELBO's KL)",
        min=-1e6,
        max=1.0,
    )


@dataclass
class OptimConfig:
    name: str = opt("adam", "optimizer", choices=("adam", "adamw", "adagrad", "sgd"))
    lr: float = opt(1e-3, "learning rate", flag="--lr", min=0.0, exclusive_min=True, max=1e3)
    weight_decay: float = opt(0.0, "weight decay", min=0.0, max=1e3)
    schedule: str = opt(
        "constant", "learning-rate schedule over the whole run", choices=("constant", "cosine")
    )
    warmup_steps: int = opt(0, "linear learning-rate warm-up steps", min=0, max=MAX_STEPS)
    grad_clip: float = opt(
        0.0, "clip the gradient norm to this value (0: no clipping)", min=0.0, max=1e12
    )
    fused: bool = opt(True, "use the fused optimizer kernel where torch has one")
    ema: float = opt(
        0.0,
        "decay of an exponential moving average of the weights, which is what gets "
        "evaluated and saved (0: off; e.g. 0.995)",
        min=0.0,
        max=1.0,
        exclusive_max=True,
    )


@dataclass
class TrainConfig:
    epochs: int = opt(10, "passes over the training set", flag="--epochs", min=1, max=10**6)
    batch_size: int = opt(128, "global minibatch size", flag="--batch-size", min=1, max=MAX_BATCH)
    seed: int = opt(0, "seed of every random draw of the run", flag="--seed", min=0, max=MAX_SEED)
    device: str = opt("auto", "cpu, cuda, cuda:N or auto (cuda when available)", flag="--device")
    precision: str = opt(
        "fp32",
        "matmul precision: fp32, bf16 autocast, fp16 autocast "
        "with a gradient scaler (CUDA), or auto (bf16 where the hardware "
        "runs it natively: AMX/AVX512-BF16 CPUs, bf16 GPUs; else fp32)",
        choices=("fp32", "bf16", "fp16", "auto"),
    )
    threads: int = opt(0, "CPU threads for torch (0: torch's default)", min=0, max=256)
    out: str = opt("", "run directory (empty: runs/<name>-<time>)", flag="--out")
    checkpoint_every: int = opt(
        0,
        "also save the resumable state every N steps (0: at the end of each epoch only)",
        min=0,
        max=MAX_STEPS,
    )
    accumulate: int = opt(
        1,
        "gradient accumulation: one optimizer step per N batches of train.batch_size, the "
        "same update as one batch of N x batch_size (the schedule, EMA, train.checkpoint_every "
        "and the step numbers count optimizer steps); an epoch's last N' < N batches make "
        "one step of their own",
        min=1,
        max=4096,
    )
    freeze_encoder: bool = opt(
        False,
        "train the decoder only (as Stable Diffusion's ft-EMA/ft-MSE decoders were): the "
        "encoder gets no gradient and no optimizer state and stays in eval mode, so the "
        "starting model's latents are unchanged",
    )
    max_skipped: int = opt(
        20, "stop after this many consecutive non-finite updates", min=1, max=MAX_STEPS
    )
    eval_batch_size: int = opt(
        1000, "batch size of the validation set's evaluation", min=1, max=MAX_BATCH
    )
    eval_every: int = opt(
        1, "evaluate the validation set every N epochs (the last epoch always)", min=1, max=10**6
    )
    keep: str = opt(
        "last",
        "what model.safetensors holds: the last epoch's weights, or those of the epoch with "
        "the best validation -ELBO (state.pt keeps the last, for resuming)",
        choices=("last", "best"),
    )
    patience: int = opt(
        0,
        "stop early when the validation -ELBO has not improved for this many epochs (0: never)",
        min=0,
        max=10**6,
    )
    progress: bool = opt(True, "show progress bars")
    tracker: list[str] = opt([], "extra trackers besides metrics.jsonl: wandb, tensorboard, mlflow")
    wandb_project: str = opt("vaekit", "wandb: project name")
    mlflow_experiment: str = opt(
        "vaekit", "mlflow: experiment name (the store is $MLFLOW_TRACKING_URI, else ./mlruns)"
    )
    run_name: str = opt("", "tracker run name (empty: the run directory's name)")
    log_images_every: int = opt(
        0,
        "trackers: also log sample/reconstruction images and the "
        "step's loss every N steps (0: at each epoch's end only)",
        min=0,
        max=MAX_STEPS,
    )


# the options each objective other than the ELBO cannot take, and why: refused at load
REFUSED_WITH = {
    "iw_samples": ("tcvae", "factorvae", "wae_mmd", "infovae"),
    "beta": ("tcvae", "wae_mmd", "infovae"),
    "free_bits": ("tcvae", "wae_mmd", "infovae"),
    "kl_warmup_steps": ("wae_mmd",),
    "adversarial_weight": ("factorvae",),
}
INSTEAD = {
    "iw_samples": "the IWAE bound is the ELBO's: leave loss.iw_samples at 1",
    "beta": "weigh its terms by loss.tc_weight, mi_weight, dim_kl_weight (tcvae), "
    "loss.mmd_weight or info_alpha (wae_mmd, infovae) instead",
    "free_bits": "it has no per-dimension KL to floor: leave loss.free_bits at 0",
    "kl_warmup_steps": "it has no KL term to warm up: leave loss.kl_warmup_steps at 0",
    "adversarial_weight": "a run trains one discriminator, here FactorVAE's: leave "
    "loss.adversarial_weight at 0",
}


def check_objective_options(loss: LossConfig) -> None:
    """Refuse, in one line, an option the chosen `loss.objective` cannot take."""
    defaults = LossConfig()
    for key, objectives in REFUSED_WITH.items():
        if loss.objective in objectives and getattr(loss, key) != getattr(defaults, key):
            raise ConfigError(
                f"config key 'loss.{key}' {getattr(loss, key)!r} does not apply to "
                f"loss.objective {loss.objective}: {INSTEAD[key]}"
            )
