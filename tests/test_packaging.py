"""The release artefacts: `python -m build` makes an sdist and a wheel, and the wheel installed
into a fresh virtual environment trains with the presets shipped inside it.

Trade-off of the fresh environment. A truly clean install resolves torch and the rest from
the package index: about a minute of pip here, and a network (or local index) every run.
Instead the new venv gets the wheel alone (`pip install --no-deps`, into an empty venv, so
pip sees nothing else), and then a .pth line that appends this interpreter's site-packages
for the heavy dependencies. A .pth line only extends sys.path: the checkout's editable
install (a .pth inside that directory) is not activated, so `vaekit` must come from the
wheel, which the tests check, as they check that the wheel's declared dependencies are
satisfied there. What this does not prove is that pip can resolve those dependencies from
an index; `pip install dist/vaekit-*.whl` does that, once, by hand.
"""

from __future__ import annotations

import email.message
import email.parser
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

import vaekit
from conftest import ROOT

EXTRAS = {
    "wandb",
    "tensorboard",
    "mlflow",
    "lpips",
    "inception",
    "hub",
    "datasets",
    "diffusers",
    "dev",
}
PRESETS = sorted(p.name for p in (ROOT / "src" / "vaekit" / "configs").glob("*.yaml"))
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "MANIFEST.in", "src", "tests")


def _run(
    *args: str | Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python -m build` (sdist, then the wheel from the sdist) on a copy of the checkout.

    A copy, so concurrent test runs never share build/ or *.egg-info; --no-isolation, so
    the build uses this environment's setuptools instead of fetching one.
    """
    src = tmp_path_factory.mktemp("source")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc", "build", "dist")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore, symlinks=True)
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, src)
    return out


def _wheel(dist: Path) -> Path:
    (wheel,) = dist.glob("vaekit-*.whl")
    return wheel


def _metadata(dist: Path) -> email.message.Message:
    with zipfile.ZipFile(_wheel(dist)) as z:
        text = z.read(f"vaekit-{vaekit.__version__}.dist-info/METADATA").decode()
    return email.parser.Parser().parsestr(text)


def _extras(dist: Path) -> dict[str, list[Requirement]]:
    """Each extra of the wheel with its requirements (the metadata pip installs from)."""
    metadata = _metadata(dist)
    extras: dict[str, list[Requirement]] = {e: [] for e in metadata.get_all("Provides-Extra") or []}
    for line in metadata.get_all("Requires-Dist") or []:
        requirement = Requirement(line)
        for extra in extras:
            if requirement.marker is not None and requirement.marker.evaluate({"extra": extra}):
                extras[extra].append(requirement)
    return extras


def test_build_makes_a_wheel_and_an_sdist_named_by_the_version(dist: Path) -> None:
    assert {p.name for p in dist.iterdir()} == {
        f"vaekit-{vaekit.__version__}.tar.gz",
        f"vaekit-{vaekit.__version__}-py3-none-any.whl",
    }


def test_wheel_holds_the_package_presets_and_py_typed_and_no_tests(
    dist: Path, record_property: Any
) -> None:
    wheel = _wheel(dist)
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        info = f"vaekit-{vaekit.__version__}.dist-info"
        entry_points = z.read(f"{info}/entry_points.txt").decode()
    assert {f"vaekit/configs/{p}" for p in PRESETS} <= set(names) and PRESETS
    assert "vaekit/py.typed" in names and "vaekit/cli/__init__.py" in names
    templates = {f"vaekit/templates/{t}" for t in ("report.html", "explorer.html", "modelcard.md")}
    assert templates <= set(names)  # the pages and the card are package data, not strings
    assert f"{info}/licenses/LICENSE" in names
    assert not [
        n
        for n in names
        if n.startswith("tests/")
        or "/tests/" in n
        or n.endswith((".pyc", ".safetensors", ".pt", ".npz"))
    ]
    assert all(n.startswith(("vaekit/", f"{info}/")) for n in names)
    assert "vaekit = vaekit.cli:main" in entry_points
    record_property("wheel_bytes", wheel.stat().st_size)  # in --junitxml reports
    assert wheel.stat().st_size < 1_000_000  # code and presets only

    metadata = _metadata(dist)
    assert metadata["Version"] == vaekit.__version__
    core = [
        Requirement(r).name
        for r in metadata.get_all("Requires-Dist") or []
        if Requirement(r).marker is None
    ]
    assert sorted(core) == [
        "matplotlib",
        "numpy",
        "pillow",
        "pyyaml",
        "safetensors",
        "torch",
        "torchmetrics",
        "tqdm",
    ]
    assert "Typing :: Typed" in (metadata.get_all("Classifier") or [])
    assert metadata["License-Expression"] == "MIT"


def test_extras_install_only_what_they_name(dist: Path) -> None:
    extras = {
        e: sorted(r.name.lower().replace("_", "-") for r in reqs)
        for e, reqs in _extras(dist).items()
    }
    assert set(extras) >= EXTRAS, sorted(EXTRAS - set(extras))
    assert extras["hub"] == ["huggingface-hub"]
    assert extras["datasets"] == ["datasets"]
    assert extras["diffusers"] == ["diffusers"]
    assert extras["mlflow"] == ["alembic", "mlflow-skinny", "sqlalchemy"]  # client + sqlite store
    assert {"vaekit", "build", "setuptools", "pytest", "ruff"} <= set(extras["dev"])
    for name, requirements in extras.items():  # none pulls the core's heavy parts in again
        assert not {"torch", "numpy"} & set(requirements), name


def test_sdist_holds_sources_presets_tests_and_changelog(dist: Path) -> None:
    (sdist,) = dist.glob("vaekit-*.tar.gz")
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    assert {
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "CHANGELOG.md",
        "src/vaekit/py.typed",
    } <= names
    assert {f"src/vaekit/configs/{p}" for p in PRESETS} <= names
    assert any(n.startswith("tests/test_") for n in names)
    assert not [n for n in names if n.startswith((".venv", "runs/", "data/", ".git/"))]


@pytest.fixture(scope="module")
def fresh_venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A new venv holding the wheel alone, then borrowing this one's dependencies (above)."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=False, symlinks=True)
    python = env_dir / "bin" / "python"
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--no-deps",
        "--no-index",
        "--quiet",
        _wheel(dist),
    )
    site = Path(
        _run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        ).stdout.strip()
    )
    borrowed = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "_vaekit_test_deps.pth").write_text("".join(f"{p}\n" for p in borrowed))
    yield env_dir


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def test_installed_wheel_is_the_vaekit_that_runs(fresh_venv: Path, tmp_path: Path) -> None:
    python, cli = fresh_venv / "bin" / "python", fresh_venv / "bin" / "vaekit"
    env = _clean_env()
    assert _run(cli, "--version", cwd=tmp_path, env=env).stdout.strip() == (
        f"vaekit {vaekit.__version__}"
    )
    probe = (
        "import importlib.metadata as md, pathlib, vaekit\n"
        "from packaging.requirements import Requirement\n"
        "from vaekit.config import resolve_config_path\n"
        "print(pathlib.Path(vaekit.__file__).resolve())\n"
        "print(resolve_config_path('noise-demo').resolve())\n"
        "print(md.distribution('vaekit').locate_file('vaekit').resolve())\n"
        "for r in map(Requirement, md.requires('vaekit')):\n"
        "    if r.marker is None:  # the core dependencies, satisfied where the wheel runs\n"
        "        assert r.specifier.contains(md.version(r.name), prereleases=True), r\n"
    )
    module, preset, dist_location = map(
        Path, _run(python, "-c", probe, cwd=tmp_path, env=env).stdout.split()
    )
    site = fresh_venv.resolve() / "lib"
    assert module.is_relative_to(site) and not module.is_relative_to(ROOT), module
    assert preset.is_relative_to(site) and preset.name == "noise-demo.yaml", preset
    assert dist_location.is_relative_to(site), dist_location


def test_installed_wheel_trains_with_a_packaged_preset(fresh_venv: Path, tmp_path: Path) -> None:
    cli, env = fresh_venv / "bin" / "vaekit", _clean_env()
    assert "noise-demo" in _run(cli, "presets", cwd=tmp_path, env=env).stdout
    _run(
        cli,
        "train",
        "--config",
        "noise-demo",
        "--out",
        "run",
        "--epochs",
        "1",
        "--data.noise_examples",
        "256",
        "--train.progress",
        "false",
        cwd=tmp_path,
        env=env,
    )
    for name in ("config.json", "model.safetensors", "samples.png", "metrics.jsonl"):
        assert (tmp_path / "run" / name).is_file(), name
    # the report's page template ships in the wheel
    _run(cli, "report", "run", "--iw-samples", "2", "--max-test", "16", cwd=tmp_path, env=env)
    assert (tmp_path / "run" / "report.html").read_text().startswith("<!DOCTYPE html>")
    # and by path: a preset copied out of the package and edited
    text = (ROOT / "src" / "vaekit" / "configs" / "noise-demo.yaml").read_text()
    (tmp_path / "mine.yaml").write_text(text.replace("latent_dim: 8", "latent_dim: 3"))
    out = _run(
        fresh_venv / "bin" / "python",
        "-c",
        "from vaekit import load_config; print(load_config('mine.yaml').model.latent_dim)",
        cwd=tmp_path,
        env=env,
    )
    assert out.stdout.strip() == "3"
