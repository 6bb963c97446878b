"""FID with the Inception network, through the code path users run, on a tiny input.

torch-fidelity (the InceptionV3 that torchmetrics' FID runs) is installed by `make venv`
beside the venv's packages, in .venv/extras/torch-fidelity, without torchvision, which does
not import beside the CPU torch: as a user on such a machine has it after `pip install
--no-deps torch-fidelity`. Installed among the packages, it would make every `import
torchmetrics` in the test processes import it, so these tests run vaekit in a fresh process
with it on the path. The network is the real one with seeded random weights (the published
weights cannot be downloaded here): the weights are saved in torch-fidelity's layout and
read back through `--fid-weights`, as the downloaded file is (its download is tested in
test_download.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run_cli

FIDELITY = Path(sys.prefix) / "extras" / "torch-fidelity"
pytestmark = pytest.mark.skipif(
    not (FIDELITY / "torch_fidelity").is_dir(),
    reason=f"torch-fidelity is not at {FIDELITY}: `make venv` puts it there",
)
ENV = {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(FIDELITY)])}

SCRIPT = """
import json, sys
from unittest import mock

import torch

from vaekit.evaluation import metrics  # puts torch-fidelity's package shell in place

import torch_fidelity.feature_extractor_inceptionv3 as fe

torch.manual_seed(0)
with mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: None), \\
        mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda s, d: None):
    state = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).state_dict()
torch.save(state, sys.argv[1])

metric, _ = metrics.fid_metric("inception", 1, weights=sys.argv[1])
loaded = metric.inception.state_dict()
g = torch.Generator().manual_seed(0)
real, fake = torch.rand(6, 1, 32, 32, generator=g), torch.rand(6, 1, 32, 32, generator=g)
print(json.dumps({
    "same_weights": all(torch.equal(loaded[k], state[k]) for k in state),
    "extractor": type(metric.inception).__mro__[1].__module__,
    "torchvision": "torchvision" in sys.modules,
    "fid": metrics.fid_images(real, fake, "inception", weights=sys.argv[1], batch_size=3),
    "fid_same": metrics.fid_images(real, real, "inception", weights=sys.argv[1]),
}))
"""


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    path = tmp_path_factory.mktemp("inception") / "weights-inception-random.pth"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, **ENV},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return path, json.loads(done.stdout.strip().splitlines()[-1])


def test_torchmetrics_fid_runs_torch_fidelitys_inception_without_torchvision(
    weights: tuple[Path, dict[str, object]],
) -> None:
    _, seen = weights
    assert seen["extractor"] == "torch_fidelity.feature_extractor_inceptionv3"
    assert seen["same_weights"] is True  # the --fid-weights file is the network's state
    assert seen["torchvision"] is False
    fid, same = float(seen["fid"]), float(seen["fid_same"])  # type: ignore[arg-type]
    assert fid > 0 and abs(same) < 1e-2 * fid


def test_evaluate_reports_inception_fid_and_rfid(
    weights: tuple[Path, dict[str, object]], trained_run: Path
) -> None:
    path, _ = weights
    flags = ["--iw-samples", "0", "--fid", "inception", "--rfid", "inception", "--json"]
    done = run_cli(
        "evaluate", str(trained_run), *flags, "--fid-samples", "12", "--fid-weights", str(path),
        env=ENV, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert stats["fid_features"] == stats["rfid_features"] == "inception"
    assert stats["fid"] > 0 and stats["rfid"] > 0


def test_the_package_shell_is_used_only_where_torch_fidelity_cannot_import_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.machinery
    import importlib.util

    from vaekit.evaluation import fidelity

    monkeypatch.syspath_prepend(str(FIDELITY))
    monkeypatch.delitem(sys.modules, "torch_fidelity", raising=False)
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> importlib.machinery.ModuleSpec | None:
        if name == "torchvision":  # a torchvision that imports: torch-fidelity imports whole
            return importlib.machinery.ModuleSpec("torchvision", None)
        return real_find_spec(name, *args)  # type: ignore[arg-type]

    with monkeypatch.context() as m:
        m.setattr(importlib.util, "find_spec", find_spec)
        assert fidelity.prepare() is False and "torch_fidelity" not in sys.modules
    assert fidelity.prepare() is True  # no torchvision here
    shell = sys.modules["torch_fidelity"]
    assert shell.__path__ == [str(FIDELITY / "torch_fidelity")]
    assert fidelity.prepare() is False  # once only
    monkeypatch.delitem(sys.modules, "torch_fidelity")
