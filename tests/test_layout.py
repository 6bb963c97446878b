"""The shape of the package, read from the code's own imports (every import statement,
also those inside functions): no cycles among vaekit's modules, imports that flow one way
(cli -> training / evaluation / viz / experiments -> models, data, io), nothing but the
CLI, the experiments and the public API importing training/, nothing importing cli/, and
a docstring on every subpackage."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "vaekit"

# what each area may never import (areas are vaekit's top-level modules and subpackages)
FORBIDDEN = {
    "io": {
        "models",
        "diffusers",
        "data",
        "evaluation",
        "viz",
        "training",
        "experiments",
        "publish",
        "cli",
    },
    # models/ may import the diffusers bridge, but only where BRIDGE says (below)
    "models": {"data", "evaluation", "viz", "training", "experiments", "publish", "cli"},
    "diffusers": {"data", "evaluation", "viz", "training", "experiments", "publish", "cli"},
    "data": {"models", "evaluation", "viz", "training", "experiments", "publish", "cli"},
    "evaluation": {"viz", "training", "experiments", "publish", "tracking", "cli"},
    "viz": {"training", "experiments", "publish", "cli"},
    "training": {"experiments", "publish", "cli"},
    "publish": {"training", "experiments", "cli"},
}
# Where models/ and the diffusers bridge meet: the bridge builds on models' protocol,
# registry and VAE, and models/ reaches into the bridge for two modules only: init.py (how
# model.arch autoencoderkl or model.init builds the pair: models/builtin.py, pretrained.py)
# and autoencoderkl.py (the pair's registered names: models/described.py). The module graph
# has no cycle (checked below); nothing else in models/ knows the bridge (its package
# __init__, named by `from ..diffusers import init`, imports nothing).
BRIDGE = {"vaekit.diffusers", "vaekit.diffusers.init", "vaekit.diffusers.autoencoderkl"}
# who may import training/ and cli/ at all ("" is the package root: vaekit.train, Trainer)
ONLY_IMPORTED_BY = {"training": {"training", "cli", "experiments", ""}, "cli": {"cli", "__main__"}}


def modules(src: Path = SRC) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for path in (src / "vaekit").rglob("*.py"):
        name = ".".join(path.relative_to(src).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The vaekit modules `name` imports anywhere in its file (its parents excluded)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                keep = len(base) - node.level + (1 if path.name == "__init__.py" else 0)
                module = ".".join(base[:keep] + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name and not name.startswith(t + ".")}
    return found


def graph(src: Path = SRC) -> dict[str, set[str]]:
    known = modules(src)
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_there_is_no_import_cycle_among_vaekit_modules() -> None:
    assert cycles(graph()) == []


def test_the_cycle_check_finds_a_cycle(tmp_path: Path) -> None:
    package = tmp_path / "vaekit"
    (package / "io").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "io" / "__init__.py").write_text("")
    (package / "io" / "hub.py").write_text("from . import checkpoint\n")
    (package / "io" / "checkpoint.py").write_text("def f():\n    from .hub import download\n")
    assert cycles(graph(tmp_path)) == [["vaekit.io.checkpoint", "vaekit.io.hub"]]


def test_imports_flow_one_way() -> None:
    wrong = []
    for module, targets in graph().items():
        for target in targets:
            if area(target) in FORBIDDEN.get(area(module), ()):
                wrong.append(f"{module} imports {target}")
            allowed = ONLY_IMPORTED_BY.get(area(target))
            if allowed is not None and area(module) not in allowed:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_models_reach_only_the_bridges_plan_and_pair() -> None:
    edges = graph()
    assert edges["vaekit.diffusers"] == set()  # the package root: a docstring only
    wrong = [
        f"{module} imports {target}"
        for module, targets in edges.items()
        for target in targets
        if area(module) == "models" and area(target) == "diffusers" and target not in BRIDGE
    ]
    assert wrong == []


@pytest.mark.parametrize(
    "package",
    sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py") if p.parent.name != "configs"),
)
def test_every_subpackage_says_what_it_is(package: str) -> None:
    doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text()))
    assert doc is not None and len(doc.split()) >= 12, package


# data/'s wings: the core imports no wing and not the front door (sources.py), and the file
# readers and the row sources do not import each other
DATA_WINGS = {
    "core": {"files", "rows", "sources", "provenance"},
    "files": {"rows", "sources", "provenance"},
    "rows": {"files", "sources", "provenance"},
}


def data_wing(module: str) -> str:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "data" else ""


def test_the_data_wings_import_the_core_and_not_each_other() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in graph().items()
        for target in targets
        if data_wing(target) in DATA_WINGS.get(data_wing(module), ())
    ]
    assert wrong == []
