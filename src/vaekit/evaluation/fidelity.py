"""torch-fidelity's InceptionV3 feature extractor, importable without torchvision.

torchmetrics' FID runs torch-fidelity's `FeatureExtractorInceptionV3`, the network that
published FIDs use. That class needs only torch, but torch-fidelity's package `__init__`
imports every extractor and its datasets, and those import torchvision. torchvision does not
import beside every torch build (the CPU build on vaekit's machines is one), and once
torch-fidelity is installed, torchmetrics imports it whenever `torchmetrics` itself is
imported: one missing torchvision then breaks PSNR and SSIM too.

So where torch-fidelity is installed and torchvision is not, `prepare` puts torch-fidelity
in `sys.modules` as a package shell (its path only; its `__init__` is not run). Python then
imports the extractor's own modules (feature_extractor_base, helpers, defaults,
deprecations, interpolate_compat_tensorflow) from the installed package as usual, and
torchmetrics finds the unchanged InceptionV3 class. Nothing of torch-fidelity is copied
here. `pip install --no-deps torch-fidelity` is then enough for `--fid inception` on such a
machine. Where torchvision is installed, nothing is done: torch-fidelity imports whole.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

PACKAGE = "torch_fidelity"


def prepare() -> bool:
    """Make torch-fidelity's InceptionV3 importable; True when the package shell was put in
    place. Call before the first import of torchmetrics. Cheap: it imports nothing."""
    if PACKAGE in sys.modules or importlib.util.find_spec("torchvision") is not None:
        return False  # already imported, or it imports whole
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return False  # not installed: torchmetrics says so when FID is asked for
    shell = types.ModuleType(PACKAGE, "torch-fidelity without its __init__ (vaekit)")
    shell.__path__ = list(spec.submodule_search_locations)
    shell.__spec__ = importlib.machinery.ModuleSpec(PACKAGE, None, is_package=True)
    shell.__spec__.submodule_search_locations = shell.__path__
    shell.__file__ = spec.origin
    sys.modules[PACKAGE] = shell
    return True
