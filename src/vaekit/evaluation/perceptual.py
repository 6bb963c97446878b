"""LPIPS perceptual distance (Zhang et al. 2018), differentiable, without importing `lpips`.

The `lpips` package imports torchvision, which cannot be imported beside every torch build
(the CPU build here is one), so this module computes LPIPS itself and reads only weight
files:

- the backbone (VGG16 or AlexNet convolutional features) has torchvision's layout and
  state_dict keys (`features.0.weight`, ...), so torchvision's ImageNet weights load as
  they are: from `loss.perceptual_backbone_weights` (a file path), else from the torch
  hub cache where torchvision saves them (`$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth`
  or `alexnet-owt-7be5be79.pth`);
- the learned 1x1 "linear" layers (LPIPS v0.1) come from the .pth files shipped inside
  the installed `lpips` package (`pip install 'vaekit[lpips]'`, or `pip install --no-deps
  lpips` where torchvision would not import: only its files are read, never its code),
  or from `loss.perceptual_lin_weights` (a file path).

Either source may be `random` (seeded random initialisation): that keeps the whole code
path, gradients included, for tests and offline smoke runs, but is no perceptual metric.
Weights not found there are downloaded once into the torch hub cache (`io/download.py`:
hash-checked, atomic, with a progress bar): the backbone from download.pytorch.org
(checked against the SHA-256 prefix in its file name, as torch.hub does), the linear
layers from the LPIPS repository (checked against the whole SHA-256 of the files lpips
0.1.4 ships). Offline, or when a download fails, one `VaekitError` names the file, the URL
and how to get it by hand. The distance: inputs in [0, 1] go to [-1, 1] and through LPIPS's scaling
layer; at five layers, features are unit-normalised over channels, squared differences
are weighted by the 1x1 layer and averaged over space; the five terms are summed.
Gradients flow into the first argument (the reconstruction): nothing here runs under
no_grad, and the network's own parameters are frozen.
"""

from __future__ import annotations

import importlib.util
import pickle
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..config import LossConfig
from ..errors import ConfigError, first_line
from ..io.checkpoint import torch_load
from ..io.download import download

# torchvision's `features` layers: 3x3 (VGG) conv widths, 0 a 2x2 max-pool
_VGG16 = [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512]
# LPIPS taps the ReLU outputs at these indices of `features` (relu1_2 ... relu5_3)
_TAPS = {"vgg": (3, 8, 15, 22, 29), "alex": (1, 4, 7, 9, 11)}
_CHANNELS = {"vgg": (64, 128, 256, 512, 512), "alex": (64, 192, 384, 256, 256)}
_MIN_SIZE = {"vgg": 16, "alex": 31}  # smaller images vanish before the last tap
TORCHVISION_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}
# where each file comes from, and its SHA-256 (a prefix: torchvision's file-name convention)
BACKBONE_URLS = {
    "vgg": ("https://download.pytorch.org/models/vgg16-397923af.pth", "397923af"),
    "alex": ("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "7be5be79"),
}
_LPIPS_REPO = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/"
LIN_URLS = {
    "vgg": (
        _LPIPS_REPO + "vgg.pth",
        "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
    ),
    "alex": (
        _LPIPS_REPO + "alex.pth",
        "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
    ),
}
RANDOM = "random"


def vgg16_features() -> nn.Sequential:
    """torchvision's `vgg16().features` up to relu5_3 (the final pool is never tapped)."""
    layers: list[nn.Module] = []
    c_in = 3
    for width in _VGG16:
        if width == 0:
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU()]
            c_in = width
    return nn.Sequential(*layers)


def alexnet_features() -> nn.Sequential:
    """torchvision's `alexnet().features` up to the fifth ReLU."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1),
        nn.ReLU(),
    )


class LPIPS(nn.Module):
    """d(x_recon, x) per example (B,), for images (B, 1|3, H, W) in [0, 1]."""

    shift: torch.Tensor
    scale: torch.Tensor
    sources: tuple[str, str] = ("", "")  # build_perceptual's backbone and layer weights

    def __init__(self, net: str = "vgg") -> None:
        super().__init__()
        if net not in _TAPS:
            raise ConfigError(f"LPIPS backbone {net!r} is unknown; use vgg or alex")
        self.net = net
        self.features = vgg16_features() if net == "vgg" else alexnet_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS[net])
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)  # frozen: gradients reach the input, not these weights
        self.eval()

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five tapped activations of x (B, 3, H, W), already scaled."""
        out, last = [], max(_TAPS[self.net])
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS[self.net]:
                out.append(x)
            if i == last:
                break
        return out

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grayscale: the same image in R, G and B
        x = (2.0 * x - 1.0 - self.shift) / self.scale  # [0, 1] -> [-1, 1] -> LPIPS scaling
        return x.contiguous(memory_format=torch.channels_last)

    def forward(self, x_recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] not in (1, 3):
            raise ConfigError(f"LPIPS needs 1- or 3-channel images; these have {x.shape[1]}")
        if min(x.shape[-2:]) < _MIN_SIZE[self.net]:
            raise ConfigError(
                f"LPIPS (lpips-{self.net}) needs images of at least "
                f"{_MIN_SIZE[self.net]} px; these are {tuple(x.shape[-2:])}"
                + ("; use lpips-vgg" if self.net == "alex" else "")
            )
        taps0, taps1 = self.taps(self._prepare(x_recon)), self.taps(self._prepare(x))
        total = torch.zeros(x.shape[0], device=x.device, dtype=torch.float32)
        for f0, f1, lin in zip(taps0, taps1, self.lins, strict=True):
            f0, f1 = _unit(f0.float()), _unit(f1.float())  # (B, C, h, w), norms in float32
            d = lin((f0 - f1).pow(2))  # (B, 1, h, w)
            total = total + d.mean(dim=(1, 2, 3))
        return total  # (B,)


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Normalise each position's feature vector to unit length (LPIPS's normalize_tensor)."""
    return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def _load(path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        state = torch_load(path)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as e:
        raise ConfigError(
            f"{what} {path} is not a readable torch weights file ({first_line(e)})"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"{what} {path} does not hold a state_dict")
    # only named tensors: anything else in the file leaves a weight missing, which _fill names
    return {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def _fill(
    module: nn.Module, state: dict[str, torch.Tensor], prefix: str, path: Path, what: str
) -> None:
    """Copy `prefix`-keyed tensors into `module`, failing clearly on a missing or odd one."""
    own = module.state_dict()
    sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    bad = [k for k in own if k not in sub or tuple(sub[k].shape) != tuple(own[k].shape)]
    if bad:
        raise ConfigError(
            f"{what} {path} does not fit (e.g. {prefix}{bad[0]} is missing or "
            "has another shape); use the file torchvision / lpips ship"
        )
    module.load_state_dict({k: sub[k] for k in own}, strict=True)


def hub_checkpoint(net: str) -> Path:
    """Where torchvision keeps the backbone weights it downloads (and vaekit too)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILES[net]


def lin_checkpoint(net: str) -> Path:
    """Where vaekit keeps the LPIPS layer weights it downloads, beside the backbone's."""
    return Path(torch.hub.get_dir()) / "checkpoints" / f"lpips-v0.1-{net}.pth"


def lpips_package_file(net: str) -> Path | None:
    """The LPIPS v0.1 linear-layer weights inside the installed `lpips` package, if any."""
    try:
        spec = importlib.util.find_spec("lpips")  # locates the package without importing it
    except (ImportError, ValueError):  # ValueError: a module object without a spec
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "weights" / "v0.1" / f"{net}.pth"
        if path.is_file():
            return path
    return None


# the options that name the two weight files, as training's config spells them
SETTINGS = ("loss.perceptual_backbone_weights", "loss.perceptual_lin_weights")


def _local(source: str, setting: str, wanted: str) -> Path:
    """The weights file `setting` (the option that named it) points at, refused in one line
    when it is not a file."""
    path = Path(source).expanduser()
    if path.is_dir():
        raise ConfigError(f"{setting} {path} is a directory; point it at {wanted}")
    if not path.is_file():
        raise ConfigError(f"{setting} {path} does not exist; point it at {wanted}")
    return path


def _load_backbone(model: LPIPS, source: str, generator: torch.Generator, setting: str) -> None:
    if source == RANDOM:
        for m in model.features:
            if isinstance(m, nn.Conv2d) and m.bias is not None:  # torchvision's VGG init
                nn.init.kaiming_normal_(
                    m.weight, mode="fan_out", nonlinearity="relu", generator=generator
                )
                nn.init.zeros_(m.bias)
        return
    if source:
        path = _local(source, setting, f"torchvision's {TORCHVISION_FILES[model.net]}")
    else:
        path = hub_checkpoint(model.net)
        url, sha = BACKBONE_URLS[model.net]
        fix = (
            f"copy torchvision's {TORCHVISION_FILES[model.net]} to {path} (from a machine "
            f"that can download it), or set {setting} to its path"
        )
        download(url, path, sha, fix=fix)
    _fill(model.features, _load(path, "LPIPS backbone"), "features.", path, "LPIPS backbone")


def _load_lins(model: LPIPS, source: str, generator: torch.Generator, setting: str) -> None:
    if source == RANDOM:
        for lin in model.lins:  # non-negative, like the trained layers
            weight = lin.get_parameter("weight")
            with torch.no_grad():
                weight.copy_(torch.rand(weight.shape, generator=generator) / weight.shape[1])
        return
    wanted = f"lpips's weights/v0.1/{model.net}.pth"
    path = _local(source, setting, wanted) if source else lpips_package_file(model.net)
    if path is None:
        url, sha = LIN_URLS[model.net]
        fix = (
            "pip install 'vaekit[lpips]' (or pip install --no-deps lpips), or set "
            f"{setting} to lpips's weights/v0.1 file"
        )
        path = download(url, lin_checkpoint(model.net), sha, fix=fix)
    state = _load(path, "LPIPS layer weights")
    # lpips names them lin0.model.1.weight ... (a Dropout sits at model.0)
    state = {
        f"{k.split('.')[0][3:]}.weight": v
        for k, v in state.items()
        if k.startswith("lin") and k.endswith(".weight")
    }
    _fill(model.lins, state, "", path, "LPIPS layer weights")


def build_perceptual(
    name: str,
    device: torch.device | str = "cpu",
    backbone_weights: str = "",
    lin_weights: str = "",
    seed: int = 0,
    settings: tuple[str, str] = SETTINGS,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The perceptual distance `name` ('lpips-vgg' or 'lpips-alex') as (x_recon, x) -> (B,).

    `backbone_weights` / `lin_weights`: a file path, '' (the standard place, see the module
    docstring) or 'random' (seeded by `seed`; keeps the code path, measures nothing).
    `settings`: the options that set the two, as errors name them (the command line's
    flags where they came from there).
    """
    if name not in ("lpips-vgg", "lpips-alex"):
        raise ConfigError(f"loss.perceptual {name!r} is unknown; use lpips-vgg or lpips-alex")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # layer construction must not move the global RNG
        model = LPIPS(name.removeprefix("lpips-"))
    _load_backbone(model, backbone_weights, generator, settings[0])
    _load_lins(model, lin_weights, generator, settings[1])
    model.sources = (backbone_weights, lin_weights)
    model.to(device)
    return model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


__all__ = ["LPIPS", "build_perceptual", "hub_checkpoint", "lin_checkpoint", "lpips_package_file"]


def from_config(
    loss: LossConfig, device: torch.device | str = "cpu", seed: int = 0
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """The perceptual term a `LossConfig` asks for, or None when `loss.perceptual` is 'none'."""
    if loss.perceptual == "none":
        return None
    return build_perceptual(
        loss.perceptual, device, loss.perceptual_backbone_weights, loss.perceptual_lin_weights, seed
    )
