"""Write the docs pages that are read off the code, so that they cannot drift:

    python -m vaekit.docgen > docs/configuration.md               # from the config dataclasses
    python -m vaekit.docgen architecture > docs/architecture.md   # from the module docstrings

tests/test_docs.py fails when a checked-in page differs from this output.
"""

from __future__ import annotations

import ast
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any

from . import config as cfg

SECTION_TITLES = {
    "name": "Top level",
    "data": "`data`: what to train on",
    "model": "`model`: the encoder, decoder and likelihood",
    "loss": "`loss`: the objective",
    "optim": "`optim`: the optimizer and its schedule",
    "train": "`train`: the loop, the device, the run directory and trackers",
}


def _type_name(typ: Any) -> str:
    if typing.get_origin(typ) is list:
        return f"list[{typing.get_args(typ)[0].__name__}]"
    return str(typ.__name__)


def _default(f: dataclasses.Field[Any]) -> str:
    value = cfg.default_of(f)
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, list):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    if value == "":
        return '`""`'
    return f"`{value}`"


def _constraints(f: dataclasses.Field[Any]) -> str:
    meta = f.metadata
    parts = []
    if meta.get("choices"):
        parts.append("one of " + ", ".join(f"`{c}`" for c in meta["choices"]))
    if meta.get("min") is not None:
        parts.append(("> " if meta.get("exclusive_min") else ">= ") + _bound(meta["min"]))
    if meta.get("max") is not None:
        parts.append(("< " if meta.get("exclusive_max") else "<= ") + _bound(meta["max"]))
    return ", ".join(parts) if not meta.get("choices") else "; ".join(parts)


def _bound(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    """The whole configuration reference as Markdown."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from src/vaekit/config/options.py and training_options.py by "
        "`python -m vaekit.docgen`; do not edit. -->",
        "",
        "Every option of a run, in one place. A preset or a YAML file (`--config NAME|PATH`)",
        "sets some of them; every option is also a command-line flag, `--SECTION.FIELD VALUE`",
        "(`--optim.schedule cosine`), and some have a short flag too. In Python, pass the same",
        'dotted keys: `vaekit.load_config("noise-demo", {"train.epochs": 2})`. Lists are',
        "written `--model.hidden 512,256` on the command line. The resolved configuration of",
        "a run is saved as `RUN/config.yaml`.",
        "",
    ]
    section = None
    for key, f, typ in cfg.iter_fields():
        head = key.split(".")[0] if "." in key else "name"
        if head != section:
            section = head
            if lines[-1]:
                lines.append("")
            lines += [f"## {SECTION_TITLES[head]}", ""]
            lines += ["| option | type | default | flag | constraints | meaning |"]
            lines += ["|---|---|---|---|---|---|"]
        flag = f"`{f.metadata['flag']}`" if f.metadata.get("flag") else ""
        row = [
            f"`{key}`",
            _type_name(typ),
            _default(f),
            flag,
            _constraints(f),
            _cell(f.metadata["help"]),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines).rstrip("\n") + "\n"


PACKAGE = Path(__file__).resolve().parent

ARCHITECTURE_HEAD = """# How vaekit is built

<!-- Generated from the module docstrings by `python -m vaekit.docgen architecture`; do not
edit: change a module's docstring instead. -->

Every module of `src/vaekit`, with the first paragraph of its docstring. One concept per
module. The areas import down the layers only (an area never imports one beside it or
above it), and `tests/test_layout.py` reads every import statement to hold it, with no
cycle between modules. From the top:

- `__main__`; then `cli` (nothing but `__main__` imports it), the package root (the
  public API: no other module imports it, `__version__` is in `version.py`) and `docgen`.
- `experiments`; then `training` (the one loop; it draws each epoch's sample grids with
  `viz`; `training/objective.py` is one minibatch's loss).
- `viz`, `compare` and `publish`; then `tracking`; then `evaluation`; then `loading`.
- `models`, `diffusers` (the bridge to diffusers' AutoencoderKL: it builds on `models`,
  which reach into it at `init.py` and `autoencoderkl.py` only, without a cycle) and
  `data` (which neither imports, nor it them);
  then `io`; then `config`. Inside `data`, the core imports neither wing (`files`,
  `rows`) and the wings do not import each other.
- the leaves: `allocator`, `arguments`, `devices`, `limits`, `losses`, `normalize`,
  `progress`, `untrusted_files`, and below them `errors`, `version`, `wording`,
  `templates`, `configs`.

The same test keeps each module under 400 lines and each function under 60, and finds any
block of six identical code lines that stands in two places.
"""


def render_architecture(package: Path = PACKAGE) -> str:
    """docs/architecture.md: the module map, one row a module, grouped by area."""
    lines = [ARCHITECTURE_HEAD]
    area = None
    for path in sorted(package.rglob("*.py"), key=lambda p: p.relative_to(package).parts):
        rel = path.relative_to(package)
        here = rel.parts[0] if len(rel.parts) > 1 else "the package root"
        if here != area:
            area = here
            lines += ["", f"## {area if area == 'the package root' else area + '/'}", ""]
            lines += ["| module | what it is |", "|---|---|"]
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        first = " ".join(doc.strip().split("\n\n")[0].split())
        lines.append(f"| `{rel.as_posix()}` | {_cell(first)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    page = sys.argv[1] if len(sys.argv) > 1 else "configuration"
    print(render_architecture() if page == "architecture" else render(), end="")


if __name__ == "__main__":
    main()
