"""A learned prior over a VQ-VAE's codes: a small gated PixelCNN (van den Oord et al. 2016,
"Conditional Image Generation with PixelCNN Decoders") over the code map (B, h, w) of
integers in [0, K). A latent vector of n codes is a 1 x n map.

    p(c) = prod_i p(c_i | c_<i)        (raster order: row by row, left to right)

Two stacks keep the model causal without the blind spot of a stack of masked 3x3
convolutions (section 2.2 of the paper): the vertical stack sees the rows above (its
k/2+1 x k convolution covers rows i-k/2..i, and it reaches the horizontal stack shifted
down by one row), the horizontal stack sees the row so far (its 1 x k/2+1 convolution
covers columns j-k/2..j of an input shifted right by one column). Each layer is gated,
tanh(W_f * x) . sigmoid(W_g * x) (eq. 2), with the vertical-to-horizontal 1x1 link and a
residual on the horizontal stack (figure 2); a 1x1 head gives K logits per cell.

We write it ourselves: no well-kept library offers a PixelCNN for torch (pythae's sits
inside its own trainer and model classes; torchvision, diffusers and torchmetrics have
none), and the network is ~60 lines. Its files (`FILES`) sit beside the VQ-VAE's
model.safetensors: the weights as safetensors and its settings and training record as
JSON; `read` checks them strictly, as model loading does.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from .. import untrusted_files
from ..errors import CheckpointError, ConfigError, first_line
from ..io import checkpoint, fileio
from ..version import __version__

WEIGHTS, RECORD = FILES = checkpoint.PRIOR_FILES
STATE_FILE = "code_prior_state.pt"  # its training's resumable state (training/prior_state.py)
KIND = "gated-pixelcnn"
TRAIN_AGAIN = "train it again with vaekit train-prior RUN"


class StalePrior(CheckpointError):
    """A code prior trained on the codes of another model than the one beside it."""


def _gate(t: torch.Tensor) -> torch.Tensor:
    """tanh(a) * sigmoid(b) of the two halves of the channels (eq. 2)."""
    a, b = t.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def _down(t: torch.Tensor) -> torch.Tensor:
    """Shift a map down by one row: row i holds row i-1 (row 0 zeros)."""
    return F.pad(t, (0, 0, 1, 0))[:, :, :-1]


def _right(t: torch.Tensor) -> torch.Tensor:
    """Shift a map right by one column: column j holds column j-1 (column 0 zeros)."""
    return F.pad(t, (1, 0, 0, 0))[:, :, :, :-1]


class GatedLayer(nn.Module):
    """One gated layer of both stacks (figure 2 of the paper)."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.reach = kernel // 2
        self.vertical = nn.Conv2d(channels, 2 * channels, (self.reach + 1, kernel))
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.horizontal = nn.Conv2d(channels, 2 * channels, (1, self.reach + 1))
        self.horizontal_out = nn.Conv2d(channels, channels, 1)

    def forward(self, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.reach
        v_pre = self.vertical(F.pad(v, (p, p, p, 0)))  # (B, 2C, h, w): rows i-p..i
        # the horizontal stack at row i takes the vertical stack's row i-1: rows above only
        h_pre = self.horizontal(F.pad(h, (p, 0, 0, 0))) + self.vertical_to_horizontal(_down(v_pre))
        return _gate(v_pre), h + self.horizontal_out(_gate(h_pre))


class CodePrior(nn.Module):
    """p(codes) of a VQ-VAE's code map: a gated PixelCNN (see the module doc). `codebook_size`
    K, `code_shape` (h, w) (a vector's n codes: (1, n)), `channels` per stack, `layers`
    gated layers, `kernel` the (odd) width of their convolutions."""

    def __init__(
        self,
        codebook_size: int,
        code_shape: tuple[int, int],
        channels: int = 64,
        layers: int = 5,
        kernel: int = 3,
    ) -> None:
        super().__init__()
        check_settings(codebook_size, code_shape, channels, layers, kernel)
        self.codebook_size, self.code_shape = int(codebook_size), tuple(int(s) for s in code_shape)
        self.channels, self.layers, self.kernel = int(channels), int(layers), int(kernel)
        self.embedding = nn.Embedding(codebook_size, channels)
        self.stack = nn.ModuleList(GatedLayer(channels, kernel) for _ in range(layers))
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(),
            nn.Conv2d(channels, codebook_size, 1),
        )
        self.training_record: dict[str, Any] = {}  # how it was trained (its JSON file's)
        self.model_fingerprint = ""  # of the VQ-VAE whose codes it models (`fingerprint`)

    def settings(self) -> dict[str, Any]:
        """The constructor's arguments, as the record file keeps them."""
        return {
            "codebook_size": self.codebook_size,
            "code_shape": list(self.code_shape),
            "channels": self.channels,
            "layers": self.layers,
            "kernel": self.kernel,
        }

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    def logits_of(self, e: torch.Tensor) -> torch.Tensor:
        """Logits (B, K, h, w) of each cell given the embedded map e (B, C, h, w): cell
        (i, j) reads only the cells before it in raster order."""
        v, h = e, _right(e)
        for layer in self.stack:
            v, h = layer(v, h)
        return self.head(h)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """Logits (B, K, h, w) of p(c_ij | c_<ij) for integer codes (B, h, w)."""
        return self.logits_of(self.embedding(codes).permute(0, 3, 1, 2))

    def nll(self, codes: torch.Tensor) -> torch.Tensor:
        """-log p(codes) per example, nats: (B,), for codes (B, h, w)."""
        logits = self(codes)
        return F.cross_entropy(logits, codes, reduction="none").flatten(1).sum(1)

    @torch.inference_mode()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n code maps (n, h, w), int64, drawn cell by cell in raster order, each from
        p(c_ij | c_<ij) by the inverse CDF of a uniform draw from `generator` (on any
        device: the draws are made there and moved to the prior's)."""
        h, w = self.code_shape
        device = self.device
        codes = torch.zeros(n, h, w, dtype=torch.long, device=device)
        where = generator.device if generator is not None else device
        was_training = self.training
        self.eval()
        try:
            for i in range(h):
                for j in range(w):
                    # row i reads rows <= i only: the rows below are not computed
                    probs = self(codes[:, : i + 1])[:, :, i, j].float().softmax(dim=1)  # (n, K)
                    u = torch.rand(n, 1, generator=generator, device=where).to(device)
                    below = (probs.cumsum(dim=1) < u).sum(dim=1)  # inverse CDF
                    codes[:, i, j] = below.clamp(max=self.codebook_size - 1)
        finally:
            self.train(was_training)
        return codes


def check_settings(
    codebook_size: Any, code_shape: Any, channels: Any, layers: Any, kernel: Any
) -> None:
    """The prior's settings, each a one-line ConfigError when it cannot work."""

    def whole(value: Any, low: int, high: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

    for name, value, low, high in (
        ("channels", channels, 1, 4096),
        ("layers", layers, 1, 256),
        ("kernel", kernel, 1, 63),
        ("codebook_size", codebook_size, 2, 1 << 20),
    ):
        if not whole(value, low, high):
            raise ConfigError(
                f"the code prior's {name} must be a whole number from {low} to {high}; "
                f"got {value!r}"
            )
    if kernel % 2 == 0:
        raise ConfigError(f"the code prior's kernel must be odd (a centre column); got {kernel}")
    shape = list(code_shape) if isinstance(code_shape, (list, tuple)) else None
    if shape is None or len(shape) != 2 or not all(whole(s, 1, 1 << 16) for s in shape):
        raise ConfigError(
            f"a code map's shape is (h, w), two whole numbers >= 1; got {code_shape!r}"
        )


def code_map(codes: torch.Tensor) -> torch.Tensor:
    """A VQ-VAE's codes as a map: (B, h, w) as they are, a vector's (B, n) as (B, 1, n)."""
    return codes if codes.dim() == 3 else codes.unsqueeze(1)


def bits(nats: float, count: int) -> float:
    """Nats (per example) over `count` values, in bits per value."""
    return nats / (count * math.log(2.0))


# -- files ----------------------------------------------------------------------------------
def fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and values: the model a prior's
    codes came from."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def write(folder: str | Path, prior: CodePrior) -> None:
    """code_prior.safetensors, then code_prior.json (settings, the VQ-VAE's fingerprint, the
    weights' SHA-256 and the training record), each written atomically: a reader finds
    the pair or refuses a torn one (`read`)."""
    folder = Path(folder)
    tensors = {k: v.detach().cpu().contiguous() for k, v in prior.state_dict().items()}
    bad = checkpoint.non_finite(tensors)
    if bad:
        raise CheckpointError(
            f"refusing to save a code prior with non-finite weights ({', '.join(bad[:4])})"
        )
    data = st_save(tensors, metadata={"format": "pt"})
    record = {
        "kind": KIND,
        "vaekit_version": __version__,
        "settings": prior.settings(),
        "model_fingerprint": prior.model_fingerprint,
        "weights_sha256": hashlib.sha256(data).hexdigest(),
        "training": prior.training_record,
    }
    fileio.write_bytes(folder / WEIGHTS, data)
    fileio.write_json(folder / RECORD, record)


def read(folder: Path, model_fingerprint: str) -> CodePrior | None:
    """The code prior saved in `folder` for the model of `model_fingerprint`, or None when
    there is none; one CheckpointError for a file missing, corrupt or torn, and a
    StalePrior for a prior trained on the codes of another model."""
    weights, record_path = folder / WEIGHTS, folder / RECORD
    if not weights.exists() and not record_path.exists():
        return None
    for path, other in ((weights, record_path), (record_path, weights)):
        if not path.is_file():
            raise CheckpointError(f"{path} is missing beside {other.name}: {TRAIN_AGAIN}")
    record = untrusted_files.read_json(record_path)
    try:
        settings = record["settings"]
        if record.get("kind") != KIND or not isinstance(settings, dict):
            raise ValueError(f"not a {KIND} record")
        prior = CodePrior(
            **{
                k: settings[k]
                for k in ("codebook_size", "code_shape", "channels", "layers", "kernel")
            }
        )
        data = weights.read_bytes()
        if hashlib.sha256(data).hexdigest() != record["weights_sha256"]:
            raise ValueError(f"{WEIGHTS} is not the file the record was written with")
        tensors = st_load(data)
    except (KeyError, TypeError, ValueError, ConfigError, SafetensorError, OSError) as e:
        raise CheckpointError(
            f"code prior {record_path} is incomplete or corrupt ({first_line(e)}): {TRAIN_AGAIN}"
        ) from None
    checkpoint.check_state_dict(prior, tensors, str(weights))
    if record.get("model_fingerprint") != model_fingerprint:
        raise StalePrior(
            f"the code prior in {folder} was trained on the codes of another model than its "
            f"{checkpoint.MODEL_FILE} (trained again since): {TRAIN_AGAIN}"
        )
    prior.load_state_dict(tensors, strict=True)
    training = record.get("training")
    prior.training_record = training if isinstance(training, dict) else {}
    prior.model_fingerprint = model_fingerprint
    return prior.eval()
