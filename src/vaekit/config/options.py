"""Every option of vaekit, once: `Config`, typed dataclasses, one per config section.

The sections of what is trained on and what is trained (`DataConfig`, `ModelConfig`) are
here; those of how it is trained (`LossConfig`, `OptimConfig`, `TrainConfig`) are in
training_options.py. Each field carries its documentation in `metadata["help"]` and its
constraints (choices, minimum), declared with `opt` (fields.py); the CLI builds its flags
and `--help` from these dataclasses (`iter_fields`), and the docs' configuration reference
is generated from them, so an option is defined exactly once.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from .fields import MAX_EXAMPLES, MAX_SEED, MAX_WIDTH, opt
from .training_options import LossConfig, OptimConfig, TrainConfig


@dataclass
class DataConfig:
    name: str = opt(
        "fashion-mnist",
        "dataset: mnist, fashion-mnist, noise, a path to an .npz "
        "file (x_train, optional x_test/y_train/y_test/x_val/y_val), a folder of images, or a "
        "Hugging Face dataset as hf:OWNER/NAME[:SPLIT] or hf:PATH (the [datasets] extra)",
        flag="--data",
    )
    root: str = opt(
        "",
        "where named datasets are looked for and downloaded to "
        "(empty: $VAEKIT_DATA, else ~/.cache/vaekit)",
    )
    download: bool = opt(
        True, "download a named dataset (SHA-256 verified) when no local copy is found"
    )
    binarize: str = opt(
        "none",
        "Bernoulli data: 'none' uses intensities in [0, 1] as targets; "
        "'dynamic' draws fresh binary pixels for every batch",
        choices=("none", "dynamic"),
    )
    image_size: int = opt(
        64,
        "folders: images are resized on the shorter side and centre-cropped to this size",
        min=8,
        max=1024,
    )
    channels: int = opt(0, "folders: 1 (grayscale) or 3 (RGB); 0 picks RGB", min=0, max=3)
    augment: list[str] = opt(
        [],
        "augmentation of the training batches, drawn from (train.seed, step): 'crop' "
        "(folders) decodes the images at image_size + 2 x ceil(image_size/16) and takes a "
        "random image_size window of each (validation and test images: the centre one), "
        "'flip' mirrors a random half of them left to right; e.g. crop,flip",
        choices=("crop", "flip"),
    )
    test_fraction: float = opt(
        0.1,
        "fraction held out as the test set when the data has no test split",
        min=0.0,
        max=1.0,
        exclusive_max=True,
    )
    split_seed: int = opt(
        0,
        "seed of the train/test split of data without a test split, and of the validation split",
        min=0,
        max=MAX_SEED,
    )
    limit_train: int = opt(
        0, "use only the first N training examples (0: all)", min=0, max=MAX_EXAMPLES
    )
    limit_test: int = opt(0, "use only the first N test examples (0: all)", min=0, max=MAX_EXAMPLES)
    noise_examples: int = opt(
        4096, "noise dataset: number of training examples (at most 1,000,000)", min=1, max=10**6
    )
    strict: bool = opt(
        False, "folders: an unreadable image is an error instead of being skipped", flag="--strict"
    )
    column: str = opt(
        "",
        "torch and Hugging Face datasets whose examples are dicts: the image column "
        "(empty: the one array- or image-valued column)",
    )
    label_column: str = opt(
        "",
        "torch and Hugging Face datasets: the label column of dict examples (empty: a "
        "whole-number column named label or labels, if any; 'none': no labels)",
    )
    stream: str = opt(
        "auto",
        "torch and Hugging Face datasets: 'true' reads each batch from the dataset when "
        "it is needed, 'false' reads every image into memory first, 'auto' streams data "
        "that would take over a quarter of memory; the order is the same seeded one",
        choices=("auto", "true", "false"),
    )
    val_fraction: float = opt(
        0.1,
        "fraction of the training examples held out as the validation set, which training "
        "evaluates and selects on (the test set is for evaluate and report only); ignored "
        "when the data has its own (an .npz's x_val); 0: no validation set",
        min=0.0,
        max=1.0,
        exclusive_max=True,
    )
    cache_dir: str = opt(
        "",
        "folders: where the decoded uint8 cache goes (empty: beside the "
        "data if writable, else ~/.cache/vaekit/folders)",
    )
    normalize: str = opt(
        "none",
        "per-channel scaling fitted on the training split and saved with the model: none, "
        "minmax (to [0, 1]) or standardize (mean 0, std 1)",
        choices=("none", "minmax", "standardize"),
    )
    layout: str = opt(
        "auto",
        "arrays: auto, nchw, nhwc or table (N, F); auto reads (N, A, B, C) as channels-last "
        "when A x B is square and B x C is not (else when C < A), 2-D arrays as tables "
        "unless uint8 with square rows",
        choices=("auto", "nchw", "nhwc", "table"),
    )


@dataclass
class ModelConfig:
    arch: str = opt(
        "mlp",
        "encoder/decoder family; autoencoderkl: diffusers' AutoencoderKL (needs "
        "vaekit[diffusers]; model.channels are its block_out_channels, model.blocks_per_level "
        "its layers_per_block)",
        choices=("mlp", "conv", "autoencoderkl"),
    )
    hidden: list[int] = opt(
        [400],
        "MLP: hidden layer sizes of the encoder (the decoder mirrors them)",
        min=1,
        max=MAX_WIDTH,
    )
    activation: str = opt(
        "relu",
        "MLP: activation function",
        choices=("relu", "tanh", "elu", "gelu", "silu", "softplus", "leaky_relu"),
    )
    channels: list[int] = opt(
        [32, 64, 128, 256],
        "conv: channels per resolution level (one stride-2 downsampling per level)",
        min=1,
        max=4096,
    )
    blocks_per_level: int = opt(1, "conv: residual blocks per level", min=0, max=16)
    decoder_norm: str = opt(
        "auto",
        "conv: the decoder's normalisation: 'channel' normalises each pixel's features over "
        "channels (each residual block's branch starts at zero: at full scale, decoders with "
        "blocks collapsed to one flat image on photographs); 'group' (GroupNorm over space) "
        "lets the decoder learn a speck at one fixed place in every image; 'auto': channel",
        choices=("auto", "channel", "group"),
    )
    latent_dim: int = opt(
        20, "size of the latent vector z", flag="--latent-dim", min=1, max=MAX_WIDTH
    )
    latent_channels: int = opt(
        0,
        "conv: a spatial latent of this many channels at the last level's size (C x H/2^L "
        "x W/2^L for L levels of model.channels, as latent diffusion's autoencoders use; "
        "latent_dim is then ignored); 0: a latent vector of latent_dim. With posterior "
        "ladder, any value > 0 makes its layers maps of model.latent_dims channels. "
        "autoencoderkl: its latent channels (0: diffusers' 4)",
        min=0,
        max=4096,
    )
    likelihood: str = opt(
        "auto",
        "p(x|z): bernoulli (BCE on logits), gaussian (MSE) or laplace (L1); auto: "
        "bernoulli for data in [0, 1], else gaussian with a learned scale",
        choices=("auto", "bernoulli", "gaussian", "laplace"),
    )
    obs_scale: float = opt(
        1.0,
        "gaussian: the fixed standard deviation; laplace: the fixed scale",
        min=0.0,
        exclusive_min=True,
        max=1e6,
    )
    learn_scale: bool = opt(
        False,
        "gaussian/laplace: the decoder also predicts a per-pixel "
        "log-scale instead of using obs_scale",
    )
    conditional: bool = opt(
        False, "class-conditional VAE: a label embedding enters the encoder and the decoder"
    )
    label_dim: int = opt(16, "conditional: size of the label embedding", min=1, max=MAX_WIDTH)
    init_output_bias: bool = opt(
        True,
        "start the decoder's output bias at the training images' mean (Bernoulli: its "
        "logit), so the first steps learn shapes rather than the average image (mlp and "
        "conv only; a model.init model keeps its own)",
    )
    linear_path: bool = opt(
        False,
        "conv: a linear encoder and decoder beside the conv halves, started at PCA of the "
        "training images (so training starts at PCA's reconstruction; the conv halves learn "
        "the rest): global for a latent vector (C*H*W x latent_dim weights each way), one "
        "f x f patch per cell for a spatial latent (f: the image side over the latent "
        "map's, 2^levels for sides that are multiples of it; the sides must be exactly f "
        "times the map's). gaussian or laplace likelihood",
    )
    posterior: str = opt(
        "gaussian",
        "q(z|x): gaussian (a diagonal Gaussian, the VAE) or vq (a vector quantiser over a "
        "codebook, the VQ-VAE of van den Oord et al. 2017: straight-through gradients, "
        "trained by the likelihood + codebook + commitment losses; it has no ELBO or "
        "sampling without a prior over its codes; mlp and conv, and with autoencoderkl "
        "diffusers' VQModel) or iaf (the Gaussian followed by model.flow_steps inverse "
        "autoregressive flow steps, Kingma et al. 2016: its KL is a Monte Carlo estimate; "
        "mlp and conv, a latent vector or a spatial latent, whose flow is autoregressive "
        "over the channels at each position) or ladder (a hierarchical VAE of model.latent_dims "
        "layers with top-down inference, the Ladder VAE of Sønderby et al. 2016; latent_dim "
        "is then ignored; mlp and conv with a latent vector, and conv with layers of maps: "
        "model.latent_channels > 0)",
        choices=("gaussian", "vq", "iaf", "ladder"),
    )
    latent_dims: list[int] = opt(
        [],
        "ladder: the sizes of its stochastic layers, from the bottom (z_1, read by the "
        "decoder) to the top (z_L, whose prior is N(0, I)), e.g. 32,16; 2 to 16 layers "
        "(layers of maps, model.latent_channels > 0: their channels)",
        min=1,
        max=MAX_WIDTH,
    )
    codebook_size: int = opt(512, "vq: codes in the codebook (K)", min=2, max=1 << 20)
    code_dim: int = opt(
        0,
        "vq with a latent vector: values per code (latent_dim is split into latent_dim / "
        "code_dim codes); 0: the whole vector is one code. A spatial latent's codes are its "
        "cells, latent_channels values each; autoencoderkl (diffusers' VQModel): the codes' "
        "width, its vq_embed_dim (0: latent_channels)",
        min=0,
        max=MAX_WIDTH,
    )
    commitment: float = opt(
        0.25, "vq: beta, the weight of the commitment loss ||z_e - sg[e]||^2", min=0.0, max=1e6
    )
    ema_decay: float = opt(
        0.0,
        "vq: move the codebook by exponential moving averages of the encoder outputs each "
        "code takes, with this decay (0.99 is the paper's), instead of by the codebook loss; "
        "0: by the loss",
        min=0.0,
        max=1.0,
        exclusive_max=True,
    )
    restart_dead: float = opt(
        0.0,
        "vq: a code whose moving-average count of latents per batch falls below this is "
        "moved onto a random encoder output of the batch (e.g. 1.0); 0: no restarts",
        min=0.0,
        max=1e9,
    )
    prior: str = opt(
        "standard",
        "p(z): standard (N(0, I), the KL in closed form) or vamp (the VampPrior of Tomczak & "
        "Welling 2018: a mixture of the posteriors of model.pseudo_inputs learned "
        "pseudo-inputs; its KL is a Monte Carlo estimate). mlp and conv, with model.posterior "
        "gaussian or iaf",
        choices=("standard", "vamp"),
    )
    pseudo_inputs: int = opt(
        500, "vamp: K, the learned pseudo-inputs (images) of the VampPrior", min=1, max=1 << 16
    )
    flow_steps: int = opt(2, "iaf: the flow's steps after the Gaussian posterior", min=1, max=64)
    flow_context: int = opt(
        0,
        "iaf: the size of the context h that the encoder gives beside the Gaussian's mean "
        "and log-variance, read by every flow step (Kingma et al. 2016's full IAF: h depends "
        "on x only, so the log-density stays exact); a spatial latent's h is a map of this "
        "many channels at the latent's positions. 0: no context, the steps read z only "
        "(pythae's VAE_IAF)",
        min=0,
        max=1 << 12,
    )
    init: str = opt(
        "",
        "start from trained weights: diffusers:PATH_OR_REPO fine-tunes a diffusers "
        "AutoencoderKL, or with model.posterior vq a VQModel (a local folder or a Hub repo "
        "OWNER/NAME[/SUBFOLDER]; needs vaekit[diffusers]); its config sets the architecture "
        "(model.channels, blocks_per_level and latent_channels, and a VQModel's "
        "codebook_size and code_dim, if set, must match it); empty: none",
    )


@dataclass
class Config:
    name: str = opt(
        "vaekit", "name of the preset or experiment; the default run directory starts with it"
    )
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# the config's sections in declaration order, each with its dataclass
SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
}


def iter_fields() -> typing.Iterator[tuple[str, dataclasses.Field[Any], type]]:
    """Every leaf option as (dotted key, field, python type), in declaration order."""
    hints = typing.get_type_hints(Config)
    yield "name", next(f for f in dataclasses.fields(Config) if f.name == "name"), hints["name"]
    for section, cls in SECTIONS.items():
        sub_hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            yield f"{section}.{f.name}", f, sub_hints[f.name]


def default_of(f: dataclasses.Field[Any]) -> Any:
    """A field's default value (a fresh list for list fields)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default
