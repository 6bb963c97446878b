"""The docs cannot drift: every command they show runs, and the config reference is current.

Each page (docs/*.md and README.md) runs top to bottom in its own directory: every line
of a ```bash block is a command (plain `vaekit ...` lines through `vaekit.cli.main`, in
this process, to skip a second's import each; anything else through bash), and every
```python block is executed. Commands are made cheap, never different in kind: training
on MNIST or Fashion-MNIST uses the `noise` data instead, every `vaekit train` runs one
epoch on at most 256 examples (a resume: two), presets with LPIPS use random LPIPS
networks, and scripts/make_shapes.py writes 150 images instead of 3000. A block after
`<!-- not run: REASON -->`, and a line matching SKIP below, is not run;
test_what_is_not_run_says_why lists them (run with -rA or -s). A block after
`<!-- file: NAME -->` is the file NAME the page asks the reader to save: it
is written into the page's directory (which is on the Python path while the page runs).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import vaekit
from vaekit import cli, docgen

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = {**{p.name: p for p in sorted(DOCS.glob("*.md"))}, "../README.md": ROOT / "README.md"}
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.*?)\s*-->")
FILE = re.compile(r"<!--\s*file:\s*([\w.-]+)\s*-->")

# lines of README.md that cannot run here, with the reason and where they are tested
SKIP = [
    (r"^make\b", "make demo/test: fetches Fashion-MNIST and trains for minutes / runs this suite"),
    (r"vaekit explore", "a web server that runs until Ctrl-C (tests/test_explore.py)"),
    (r"hf://|vaekit push", "needs the Hugging Face Hub (tests/test_hub.py: a local stand-in)"),
    (r"vaekit reproduce", "trains five models for ~10 minutes (tests/test_reproduce.py)"),
    (r"faces128|wandb", "needs the VGG16/LPIPS weight files or a wandb login"),
    (r"vaekit data fetch", "downloads Fashion-MNIST where no local copy exists"),
]
MNIST_PRESETS = ("fashion-mlp", "mnist-mlp", "kingma2013-mnist")
# presets with LPIPS: random LPIPS networks keep the code path without the 530 MB download
LPIPS_PRESETS = ("sd-vae-finetune",)
RANDOM_LPIPS = "--loss.perceptual_backbone_weights random --loss.perceptual_lin_weights random"
CHEAP = [
    "--data.noise_examples",
    "256",
    "--data.limit_train",
    "256",
    "--data.limit_test",
    "64",
    "--train.progress",
    "false",
]


@dataclass
class Block:
    page: str
    line: int
    lang: str
    text: str
    not_run: str | None  # the reason, when the page marks the block
    file: str | None = None  # the file the page asks the reader to save this block as


def blocks(page: str, path: Path) -> list[Block]:
    """The ```bash and ```python blocks of a page, with the not-run marker before each."""
    lines = path.read_text().splitlines()
    found, i, previous = [], 0, ""
    while i < len(lines):
        fence = re.match(r"^```(\w+)\s*$", lines[i])
        if fence:
            start, body = i + 1, []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            marker = NOT_RUN.search(previous)
            file = FILE.search(previous)
            if fence.group(1) in ("bash", "python"):
                found.append(
                    Block(
                        page,
                        start,
                        fence.group(1),
                        "\n".join(body),
                        marker.group(1) if marker else None,
                        file.group(1) if file else None,
                    )
                )
        elif lines[i].strip():
            previous = lines[i]
        i += 1
    return found


def commands(text: str) -> list[str]:
    """A bash block's commands: one per line, `\\` continuations joined, comments dropped."""
    out, pending = [], ""
    for raw in text.splitlines():
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line = re.sub(r"\s+#\s.*$", "", pending + raw).strip()  # a trailing comment
        pending = ""
        if line and not line.startswith("#"):
            out.append(line)
    return out


def skip_reason(command: str) -> str | None:
    return next((why for pattern, why in SKIP if re.search(pattern, command)), None)


def cheapen(command: str) -> str:
    """The same command on cheap data: noise for (Fashion-)MNIST, one epoch, few examples."""
    command = re.sub(r"^python\b", shlex.quote(sys.executable), command)
    command = command.replace("scripts/", f"{ROOT}/scripts/").replace("--n 3000", "--n 150")
    train = re.search(r"vaekit train\b(?!-)(.*?)(?=\|\||&&|;|$)", command)
    if not train:
        return command
    args = train.group(1)
    data = re.search(r"--data (\S+)", args)
    config = re.search(r"--config (\S+)", args)
    if data and data.group(1) in ("mnist", "fashion-mnist"):
        args = args.replace(data.group(0), "--data noise")
    elif not data and (not config or config.group(1) in MNIST_PRESETS):
        args += " --data noise"
    if "--resume" in args:
        args = re.sub(r"--epochs \d+", "--epochs 2", args)
    else:
        args += " --epochs 1"
    if config and config.group(1) in LPIPS_PRESETS:
        args += " " + RANDOM_LPIPS
    args = args.rstrip() + " " + " ".join(CHEAP) + " "
    return command[: train.start(1)] + args + command[train.end(1) :]


def run_command(command: str, cwd: Path) -> tuple[int, str]:
    """Plain `vaekit` lines in this process; anything with shell syntax through bash."""
    words = shlex.split(command, comments=True)
    plain = words and words[0] == "vaekit" and not set("|&;<>$") & set(command.split("#")[0])
    if plain:
        here = os.getcwd()
        os.chdir(cwd)
        try:
            return cli.main(words[1:]), ""
        except SystemExit as e:  # argparse errors
            return int(e.code or 0), ""
        finally:
            os.chdir(here)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.returncode, result.stdout + result.stderr


def run_page(page: str, path: Path, cwd: Path) -> None:
    """Run every runnable block of the page at `path` in `cwd`, in order; the modules the
    page saved are forgotten afterwards."""
    sys.path.insert(0, str(cwd))
    try:
        _run_blocks(page, path, cwd)
    finally:
        while str(cwd) in sys.path:  # `vaekit --import` puts the directory there too
            sys.path.remove(str(cwd))
        for name, module in list(sys.modules.items()):
            if str(getattr(module, "__file__", "") or "").startswith(str(cwd)):
                del sys.modules[name]


def _run_blocks(page: str, path: Path, cwd: Path) -> None:
    # the README's "your own .npz" stands for a file the reader has: 28x28 uint8 images
    rng = np.random.default_rng(0)
    np.savez(cwd / "my_images.npz", x_train=rng.integers(0, 256, (300, 28, 28), dtype=np.uint8))
    for block in blocks(page, path):
        where = f"{page}:{block.line}"
        if block.not_run is not None:
            continue
        if block.file is not None:
            (cwd / block.file).write_text(block.text + "\n")
            continue
        if block.lang == "python":
            here = os.getcwd()
            os.chdir(cwd)
            try:
                exec(compile(block.text, where, "exec"), {"__name__": "__docs__"})
            finally:
                os.chdir(here)
            continue
        for command in commands(block.text):
            if skip_reason(command):
                continue
            code, output = run_command(cheapen(command), cwd)
            assert code == 0, f"{where}: `{command}` exited {code}\n{output}"


@pytest.mark.parametrize("page", PAGES)
def test_every_command_in_the_page_runs(page: str, tmp_path: Path) -> None:
    run_page(page, PAGES[page], tmp_path)


def test_what_is_not_run_says_why() -> None:
    skipped = [s for page in PAGES for s in _not_run(page)]
    for line in skipped:
        print("not run:", line)
        assert line.split(": ", 1)[1].strip(), line
    # what is skipped stays the exception: the expensive or networked few
    assert len(skipped) <= 16, skipped


def _not_run(page: str) -> list[str]:
    out = []
    for block in blocks(page, PAGES[page]):
        if block.not_run is not None:
            out.append(f"{page}:{block.line} (block): {block.not_run}")
        elif block.lang == "bash":
            out += [
                f"{page}:{block.line} `{c}`: {skip_reason(c)}"
                for c in commands(block.text)
                if skip_reason(c)
            ]
    return out


def test_the_configuration_reference_is_generated_from_the_config() -> None:
    # the command the page names, as a user runs it
    out = subprocess.run(
        [sys.executable, "-m", "vaekit.docgen"], capture_output=True, text=True, check=True
    ).stdout
    assert out == docgen.render()
    page = (DOCS / "configuration.md").read_text()
    assert page == out, (
        "docs/configuration.md is stale: run `python -m vaekit.docgen > docs/configuration.md`"
    )
    for key, f, _ in vaekit.config.iter_fields():
        assert f"| `{key}` |" in page and f.metadata["help"].replace("|", "\\|") in page, key


def test_the_module_map_is_generated_from_the_code() -> None:
    """docs/architecture.md names every module, with its docstring's first paragraph."""
    page = (DOCS / "architecture.md").read_text()
    assert page == docgen.render_architecture(), (
        "docs/architecture.md is stale: run `python -m vaekit.docgen architecture > "
        "docs/architecture.md`"
    )
    for path in Path(vaekit.__file__).parent.rglob("*.py"):
        name = path.relative_to(Path(vaekit.__file__).parent).as_posix()
        assert f"| `{name}` |" in page, f"{name} is missing from docs/architecture.md"


def test_the_module_map_finds_a_new_module(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "__init__.py").write_text('"""The root."""\n')
    (tmp_path / "sub" / "__init__.py").write_text('"""An area.\n\nMore."""\n')
    (tmp_path / "sub" / "new.py").write_text('"""A new concept | with a bar."""\n')
    page = docgen.render_architecture(tmp_path)
    assert "| `sub/new.py` | A new concept \\| with a bar. |" in page
    assert "| `sub/__init__.py` | An area. |" in page


def test_every_page_is_linked_from_the_index() -> None:
    index = (DOCS / "README.md").read_text()
    for page in PAGES:
        if page not in ("README.md", "../README.md"):
            assert f"]({page})" in index, page


def test_every_test_a_page_names_exists() -> None:
    """A guarantee names the test that holds it: a renamed or deleted test must not leave
    the page pointing at nothing."""
    defined = {
        name
        for path in (ROOT / "tests").glob("test_*.py")
        for name in re.findall(r"^def (test_\w+)", path.read_text(), re.M)
    }
    for name, path in PAGES.items():
        # a test's name is a sentence; `test_nelbo` and the like are metrics
        for test in set(re.findall(r"`(test(?:_[a-z0-9]+){3,})`", path.read_text())):
            assert test in defined, f"{name} names {test}, which no test file defines"


def test_cheapen_swaps_datasets_and_shortens_training_only() -> None:
    cheap = cheapen("vaekit train --config fashion-mlp --out runs/f")
    assert "--data noise" in cheap and cheap.split().count("--epochs") == 1
    resumed = cheapen("vaekit train --config runs/f/config.yaml --out runs/f --resume --epochs 30")
    assert "--epochs 2" in resumed and "--data noise" not in resumed
    assert cheapen("vaekit sample runs/f --n 64") == "vaekit sample runs/f --n 64"
    npz = cheapen("vaekit train --data my_images.npz --out runs/m || echo no")
    assert "--data my_images.npz" in npz and npz.endswith("|| echo no")


@pytest.mark.parametrize(
    "command",
    ["vaekit train --data no/such/folder --out runs/x", "vaekit evaluate runs/none | cat"],
)
def test_a_failing_command_fails_its_page(command: str, tmp_path: Path) -> None:
    page = tmp_path / "broken.md"
    page.write_text(f"```bash\n{command}\n```\n")
    with pytest.raises(AssertionError, match="exited"):
        run_page("broken.md", page, tmp_path)
