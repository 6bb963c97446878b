"""Any diffusers AutoencoderKL as a vaekit VAE, and any diffusers VQModel as a vaekit
VQ-VAE: a folder written by diffusers' `save_pretrained` (vaekit's export included) or a
Hub repo `OWNER/NAME[/SUBFOLDER]`, read by init.py (diffusers' `from_pretrained`, through
the Hugging Face cache) and built as vaekit's pair holding its weights exactly.

Such a model has no fixed input size: it is built for the images it is given (default:
its config's sample_size). Its images are in [0, 1] like every vaekit model's, diffusers'
[-1, 1] being the pair's business (autoencoderkl.py); its likelihood is the fixed-scale
Laplace of the latent-diffusion recipe's L1 term.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import untrusted_files
from ..config import ModelConfig
from ..errors import CheckpointError, ConfigError
from ..models.vae import VAE
from ..models.vqvae import VQVAE
from . import init
from .export import CLASS_NAME, CLASS_NAMES

PREFIX: str = init.PREFIX


def reference_of(source: str | Path) -> str | None:
    """The PATH_OR_REPO of a diffusers AutoencoderKL source, or None for a vaekit model:
    `diffusers:REF`, or a local folder whose config.json names diffusers' class."""
    text = str(source)
    if text.startswith(PREFIX):
        return init.reference(text)
    config = Path(text).expanduser() / "config.json"
    try:
        meta = untrusted_files.load_json_file(config)  # bounded in size and depth
    except (OSError, ValueError, UnicodeDecodeError):
        return None  # not there or not JSON: the vaekit loader names the problem
    found = meta.get("_class_name") if isinstance(meta, dict) else None
    if found is None or meta.get("library_name") == "vaekit":
        return None
    if found not in CLASS_NAMES:
        raise CheckpointError(
            f"{text} holds a diffusers {found}; vaekit reads a diffusers {CLASS_NAME} or "
            "VQModel (or a vaekit run or model folder)"
        )
    return text


def load(ref: str, image_size: int | None = None, device: str | torch.device = "cpu") -> VAE:
    """The AutoencoderKL (VQModel) at `ref` as a VAE (VQVAE) for square images of
    `image_size` pixels (default: its config's sample_size)."""
    start = read(ref)
    size = image_size or sample_size(ref)
    return build(start, ref, (int(start.encoder_args.get("in_channels", 3)), size, size), device)


def read(ref: str) -> init.Start:
    """The halves' arguments, the weights and a VQModel's quantiser settings of the model
    at `ref` (init.py reads it; its one-line errors say diffusers:REF, not model.init)."""
    _check_offline(ref)
    try:
        return init.load(PREFIX + ref)
    except ConfigError as e:
        raise ConfigError(str(e).removeprefix("model.init ")) from None


def _check_offline(ref: str) -> None:
    """Offline (HF_HUB_OFFLINE=1), a Hub repo must be in the Hugging Face cache: say so in
    one line, naming the cache, instead of diffusers' "no file named config.json"."""
    if Path(ref).expanduser().exists() or ref.count("/") not in (1, 2):
        return
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:
        return  # diffusers needs huggingface_hub: its own import error says so
    if not constants.HF_HUB_OFFLINE:
        return
    owner, name, *sub = ref.split("/")
    repo_id = f"{owner}/{name}"
    found = try_to_load_from_cache(repo_id, "/".join([*sub, "config.json"]))
    if not isinstance(found, str):
        raise ConfigError(
            f"{PREFIX}{ref}: {repo_id} is not in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1 forbids downloading it; "
            "connect once (unset HF_HUB_OFFLINE) or point diffusers: at a local folder"
        )


def sample_size(ref: str) -> int:
    """The image size of a diffusers config (sample_size), read after the model loaded (so
    from the local folder or the Hugging Face cache, offline too)."""
    config = init._read_config(ref)[3]  # where from_pretrained read it
    size = config.get("sample_size", 256)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def build(
    start: init.Start, ref: str, shape: tuple[int, int, int], device: str | torch.device
) -> VAE:
    """vaekit's autoencoderkl VAE (a VQVAE for a VQModel: its codebook learnt by the loss,
    beta 0.25) for images of `shape`, holding the model's weights exactly (a fixed-scale
    Laplace likelihood: the L1 term of the latent-diffusion recipe)."""
    where = f"{PREFIX}{ref}"
    latent = init.latent_shape(start.encoder_args, shape, where)
    quantizer = None
    if start.quantizer is not None:
        cfg = ModelConfig()
        quantizer = {"commitment": cfg.commitment, "ema_decay": 0.0, "restart_dead": 0.0}
        quantizer |= start.quantizer
    plan = init.Plan(
        start.encoder_args, start.decoder_args, start.weights, "laplace", latent, quantizer
    )
    built = init.build(plan, ModelConfig(), shape, None)
    return built.model(VAE if quantizer is None else VQVAE).to(device).eval()
