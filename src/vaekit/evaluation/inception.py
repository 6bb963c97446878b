"""The Inception-v3 weights that FID uses: torch-fidelity's file, downloaded once into the torch
hub cache through `io/download.py` (hash-checked, atomic, with a progress bar).

torchmetrics' FrechetInceptionDistance runs torch-fidelity's `FeatureExtractorInceptionV3`.
Left alone, that class fetches its weights itself (`torch.hub.load_state_dict_from_url`,
without `check_hash`) and reads a local file with `torch.load(..., weights_only=False)`.
vaekit instead downloads the same file, from the same URL (torch-fidelity 0.4.0's
`URL_INCEPTION_V3`), to the place torch.hub would put it, checks it, and hands torchmetrics
its path:

- the hash is the SHA-256 prefix in the file name (`...-6726825d.pth`), torch.hub's
  `check_hash` convention, as for torchvision's LPIPS backbones (evaluation/perceptual.py);
- before torch-fidelity reads the file, vaekit loads it with `weights_only=True`, so a
  file that would run code when unpickled is refused, whatever its name.

torch-fidelity itself imports torchvision, which does not import beside every torch build
(the CPU build on vaekit's machines is one); there FID with the Inception network cannot
run, but the download still can, and `--fid random` still works.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from ..errors import ConfigError, first_line
from ..io.checkpoint import torch_load
from ..io.download import download

FILE = "weights-inception-2015-12-05-6726825d.pth"
URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + FILE
SHA256 = "6726825d"  # the prefix torch.hub's naming convention puts in the file name


def checkpoint() -> Path:
    """Where the weights are kept: the torch hub cache, where torch-fidelity keeps them too."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FILE


def weights_file(path: str | None = None) -> Path:
    """A checked Inception weights file: `path` (a local copy) when given, else the cached
    download, fetched on first use."""
    if path:
        local = Path(path).expanduser()
        if not local.is_file():
            raise ConfigError(f"--fid-weights {local} does not exist; point it at {FILE}")
    else:
        fix = (
            f"copy {FILE} to {checkpoint()} (from a machine that can download it), "
            "pass --fid-weights PATH, or use --fid random"
        )
        local = download(URL, checkpoint(), SHA256, fix=fix)
    check(local)
    return local


def check(path: Path) -> None:
    """Refuse a file that is not a plain state_dict of InceptionV3 tensors (loaded the safe
    way: `weights_only=True` runs no code from the file)."""
    try:
        state = torch_load(path)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as e:
        raise ConfigError(
            f"the Inception weights {path} are not a plain torch weights file ({first_line(e)}); "
            f"use torch-fidelity's {FILE}"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("fc.weight"), torch.Tensor):
        raise ConfigError(
            f"the Inception weights {path} do not hold InceptionV3's state_dict (no fc.weight); "
            f"use torch-fidelity's {FILE}"
        )
