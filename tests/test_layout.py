"""The shape of the package, read from the code's own imports (every import statement,
also those inside functions) and from its text: no cycles among vaekit's modules, imports
that run down the layers only (cli -> training -> viz / publish -> evaluation -> data,
models, diffusers -> io -> config -> the leaves; data's wings apart), no module but the
package's own __init__ and __main__ importing the package root, a docstring on every
subpackage, no module over 400 lines, no function over 60, and no block of six identical
code lines in two places. Each check has a test that shows it finds a planted case."""

from __future__ import annotations

import ast
import hashlib
import io
import tokenize
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "vaekit"

# the layers, bottom first; areas are vaekit's top-level modules and subpackages ("" is
# the package root: vaekit.train, Trainer). A module imports its own area and the areas
# of lower layers, never one beside it or above it.
LAYERS = [
    {"errors", "version", "wording", "templates", "configs"},
    {
        "allocator",
        "arguments",
        "devices",
        "limits",
        "losses",
        "normalize",
        "progress",
        "untrusted_files",
    },
    {"config", "divergences"},
    {"io"},
    {"data", "models", "diffusers"},
    {"loading"},
    {"evaluation"},
    {"tracking"},
    {"viz", "compare", "publish"},
    {"training"},
    {"experiments"},
    {"", "cli", "docgen"},
    {"__main__"},
]
# The one place two areas of a layer meet, models/ and the diffusers bridge: the bridge
# builds on models' protocol, registry and VAE, and models/ reaches into the bridge for two
# modules only: init.py (how model.arch autoencoderkl or model.init builds the pair:
# models/builtin.py, pretrained.py) and autoencoderkl.py / vqmodel.py (the pairs'
# registered names: models/described.py). The module graph has no cycle (the first test);
# nothing else in models/ knows the bridge (its package __init__, named by
# `from ..diffusers import init`, imports nothing).
BRIDGE = {"vaekit.diffusers", "vaekit.diffusers.init", "vaekit.diffusers.autoencoderkl"}
BRIDGE |= {"vaekit.diffusers.vqmodel"}
MAX_MODULE_LINES, MAX_FUNCTION_LINES, DUPLICATE_LINES = 400, 60, 6


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
            if module == "vaekit" and any(f"vaekit.{a.name}" not in known for a in node.names):
                found.add(module)  # the package root itself, for a name it defines
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
            found |= {"vaekit" for alias in node.names if alias.name == "vaekit"}
        else:
            continue
        found |= {t for t in targets if t in known and t != name and not name.startswith(t + ".")}
    return found - {name}


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


def layer(area_name: str) -> int:
    return next((i for i, areas in enumerate(LAYERS) if area_name in areas), -1)


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Each import of an area beside or above the importer's layer (the package root
    included: only __main__ is above it), or of an area no layer places."""
    wrong = []
    for module, targets in sorted(edges.items()):
        for target in sorted(targets):
            here, there = area(module), area(target)
            down = -1 < layer(there) < layer(here)
            bridge = (here, there) == ("diffusers", "models") or (
                here == "models" and target in BRIDGE
            )
            if here != there and not down and not bridge:
                wrong.append(f"{module} imports {target}")
    return wrong


def test_imports_run_down_the_layers() -> None:
    assert upward(graph()) == []


def test_every_area_has_a_layer() -> None:
    assert sorted(a for a in {area(m) for m in modules()} if layer(a) < 0) == []


def test_the_layer_check_finds_an_upward_import(tmp_path: Path) -> None:
    package = tmp_path / "vaekit"
    for sub in ("io", "models", "diffusers", "cli"):
        (package / sub).mkdir(parents=True)
        (package / sub / "__init__.py").write_text("")
    (package / "__init__.py").write_text("__version__ = '1'\nfrom .io import hub\n")
    (package / "__main__.py").write_text("from . import __version__\n")
    (package / "version.py").write_text("")
    (package / "io" / "hub.py").write_text("def f():\n    from ..models import VAE\n")
    (package / "io" / "card.py").write_text("from .. import __version__, version\n")
    (package / "models" / "vae.py").write_text("import vaekit\nfrom ..io import hub\n")
    (package / "diffusers" / "init.py").write_text("from ..models import vae\n")
    (package / "diffusers" / "model.py").write_text("from ..models import vae\n")
    (package / "models" / "builtin.py").write_text("from ..diffusers import init, model\n")
    (package / "cli" / "core.py").write_text("from ..io.card import x\nfrom .. import version\n")
    assert upward(graph(tmp_path)) == [
        "vaekit.io.card imports vaekit",
        "vaekit.io.hub imports vaekit.models",
        "vaekit.models.builtin imports vaekit.diffusers.model",
        "vaekit.models.vae imports vaekit",
    ]


def test_the_bridges_package_root_imports_nothing() -> None:
    assert graph()["vaekit.diffusers"] == set()  # a docstring only (models/ imports it)


@pytest.mark.parametrize(
    "package",
    sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py") if p.parent.name != "configs"),
)
def test_every_subpackage_says_what_it_is(package: str) -> None:
    doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text()))
    assert doc is not None and len(doc.split()) >= 12, package


def long_modules(src: Path = SRC) -> list[str]:
    found = []
    for name, path in sorted(modules(src).items()):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            found.append(f"{name}: {lines} lines")
    return found


def long_functions(src: Path = SRC) -> dict[str, int]:
    """Each function (a method too) longer than MAX_FUNCTION_LINES, from its `def` line to
    its last, by qualified name; a nested function counts within its parent."""
    found = {}
    for name, path in sorted(modules(src).items()):
        stack: list[tuple[ast.AST, str]] = [(ast.parse(path.read_text(encoding="utf-8")), name)]
        while stack:
            node, prefix = stack.pop()
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = (child.end_lineno or child.lineno) - child.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        found[f"{prefix}.{child.name}"] = lines
                elif isinstance(child, ast.ClassDef):
                    stack.append((child, f"{prefix}.{child.name}"))
                else:
                    stack.append((child, prefix))
    return found


def test_no_module_is_over_400_lines() -> None:
    assert long_modules() == []


def test_no_function_is_over_60_lines() -> None:
    assert long_functions() == {}


def test_the_length_checks_find_a_long_module_and_function(tmp_path: Path) -> None:
    package = tmp_path / "vaekit" / "io"
    package.mkdir(parents=True)
    body = "".join(f"    x{i} = {i}\n" for i in range(59))
    (package / "short.py").write_text(f"@decorated\ndef fits(a):\n{body}")  # 60 lines
    inner = "".join(f"            x{i} = {i}\n" for i in range(59))
    nested = f"class Card:\n    def render(self):\n        def inner():\n{inner}"  # 62
    (package / "long.py").write_text(nested + "\n" * (MAX_MODULE_LINES - 62) + "y = 1\n")
    assert long_functions(tmp_path) == {"vaekit.io.long.Card.render": 61}
    assert long_modules(tmp_path) == ["vaekit.io.long: 401 lines"]


def code_lines(path: Path) -> list[tuple[int, str]]:
    """The file's lines that a duplicate can share: (number, text with its white space
    folded), without blank lines, comments, docstrings, import statements and signatures
    (a def's lines before its body: two functions that take the same options declare
    them twice, as two modules that use the same names import them twice)."""
    text = path.read_text(encoding="utf-8")
    skip: set[int] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            skip.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            skip.update(range(node.lineno, node.body[0].lineno))
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                skip.update(range(body[0].lineno, (body[0].end_lineno or body[0].lineno) + 1))
    comments = {
        t.start[0]: t.start[1]
        for t in tokenize.generate_tokens(io.StringIO(text).readline)
        if t.type == tokenize.COMMENT
    }
    kept = []
    for number, line in enumerate(text.splitlines(), start=1):
        if number in comments:
            line = line[: comments[number]]
        folded = " ".join(line.split())
        if folded and number not in skip:
            kept.append((number, folded))
    return kept


def duplicates(src: Path = SRC) -> list[str]:
    """Each block of DUPLICATE_LINES or more identical code lines that stands in two
    places (two files, or twice in one), as "a.py:FIRST-LAST ~ b.py:FIRST-LAST"."""
    places: dict[str, list[tuple[str, int]]] = defaultdict(list)
    lines: dict[str, list[tuple[int, str]]] = {}
    for name, path in sorted(modules(src).items()):
        lines[name] = kept = code_lines(path)
        for i in range(len(kept) - DUPLICATE_LINES + 1):
            window = "\n".join(t for _, t in kept[i : i + DUPLICATE_LINES])
            places[hashlib.sha1(window.encode()).hexdigest()].append((name, i))
    pairs: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for found in places.values():
        for (a, i), (b, j) in zip(found, found[1:], strict=False):
            if a != b or j >= i + DUPLICATE_LINES:
                pairs[(a, b)].append((i, j))
    report = []
    for (a, b), starts in sorted(pairs.items()):
        runs: list[list[int]] = []  # [i, j, length] of consecutive windows, merged
        for i, j in sorted(starts):
            if (
                runs
                and i == runs[-1][0] + runs[-1][2] - DUPLICATE_LINES + 1
                and j - i == (runs[-1][1] - runs[-1][0])
            ):
                runs[-1][2] += 1
            else:
                runs.append([i, j, DUPLICATE_LINES])
        for i, j, length in runs:
            first, last = lines[a][i][0], lines[a][i + length - 1][0]
            other_first, other_last = lines[b][j][0], lines[b][j + length - 1][0]
            report.append(f"{a}:{first}-{last} ~ {b}:{other_first}-{other_last}")
    return report


def test_no_block_of_six_lines_stands_in_two_places() -> None:
    assert duplicates() == []


def test_the_duplicate_check_finds_a_repeated_block(tmp_path: Path) -> None:
    package = tmp_path / "vaekit"
    package.mkdir()
    block = [f"total = total + weights[{i}] * values[{i}]" for i in range(6)]
    (package / "a.py").write_text(
        '"""One."""\n\nimport os\n\n\ndef f(weights, values):\n    total = 0\n'
        + "".join(f"    {line}\n" for line in block)
        + "    return total\n"
    )
    b = ["def g(weights, values):", '    """Two."""', "    import sys", ""]
    b += [f"    {block[0]}  # the first", "", "    # the rest"]
    b += [f"    {'  '.join(line.split(' '))}" for line in block[1:]]  # white space differs
    b += ["", "", "def h(weights, values):", "    total = 1"]
    b += [f"    {line}" for line in block[:5]] + ["    return total"]  # five only
    signature = ["(", "    weights,", "    values,", "    *,", "    seed=0,", "    n=2,", "):"]
    for name in ("k", "m"):  # the same signature twice: declarations, not a duplicate
        b += ["", "", f"def {name}" + signature[0], *signature[1:], "    return 0"]
    (package / "b.py").write_text("\n".join(b) + "\n")
    assert duplicates(tmp_path) == ["vaekit.a:8-13 ~ vaekit.b:5-12"]


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
