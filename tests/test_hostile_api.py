"""A hostile sweep of the Python API and of every file format vaekit reads (issue 23).

The cases are generated, not listed: every public function and constructor of
`vaekit.__all__`, `vaekit.data.__all__` and `vaekit.evaluation`, and every public method
of the model class (`VAE`, on a model with a latent vector, and `latents` / `decode` /
`decode_images` on one with a spatial latent), found by `inspect`; each parameter, read
from `inspect.signature`, is given each hostile kind of value (tests/hostile_api_worker.py:
None, a string, an object, NaN, infinity, -1, 0, 10^12, empty, a wrong shape, a tensor of
NaN, a dataset whose methods lie or raise, an absent device) while the others keep values
that work. A parameter added tomorrow is swept the same day, and a required one without a
good value fails `test_every_public_parameter_is_swept`. Every file format is damaged the
ways that hurt before (tests/hostile_api_files.py): nesting 100,000 levels deep or past the
depth limit, sizes declared huge in tiny files, NaN and infinite tensors, wrong dtypes.

Each case runs in a worker process under a 4 GiB address-space limit and a 20-second
timeout, and must return, or raise a VaekitError of one line (a plainly wrong type may
raise a one-line TypeError; the user's own object may raise its own exception): never
another exception, a hang or a MemoryError. See docs/guarantees.md.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import vaekit
import vaekit.data
import vaekit.evaluation
import vaekit.models
from conftest import ROOT
from hostile_api_files import file_cases
from hostile_api_worker import KINDS, Fixtures, good_values
from vaekit.models import VAE, VQVAE, LadderVAE

MEMORY_LIMIT = 4 * 2**30
TIMEOUT = 60  # generous: two loaded cores; a real hang runs far past it
# methods that only a model's own machinery calls, in the model's units, on tensors it
# made itself (the training loop's building blocks, documented as such): their hostile
# inputs are the loop's bugs, not a user's mistakes. Everything else public is swept.
INTERNAL = getattr(vaekit.models, "INTERNAL", {"forward", "elbo_terms", "mean", "prepare",
                   "log_importance_weights", "log_likelihood", "from_folder",
                   "set_normalization"})  # fmt: skip
SPATIAL = ("latents", "decode", "decode_images")
# a VQ-VAE's own public methods, on a model with a map of codes (its constructor is
# vaekit.VQVAE's case; what it inherits is the VAE's)
VQ = tuple(
    name
    for name, member in vars(VQVAE).items()
    if not name.startswith("_") and callable(member) and name not in INTERNAL
)
# a ladder VAE's own public methods (its passes are internal: LADDER_INTERNAL)
LADDER = tuple(
    name
    for name, member in vars(LadderVAE).items()
    if not name.startswith("_") and callable(member)
    and name not in getattr(vaekit.models, "LADDER_INTERNAL", INTERNAL)
)  # fmt: skip
# kinds that say nothing new for a parameter: a device only for `device`, and the
# data-shaped lies only where data go
DEVICE_PARAMS = {"device"}


def targets() -> dict[str, inspect.Signature]:
    """Every public callable of the API, by the name the worker resolves, and its
    signature: generated, so that a new function or parameter is swept at once."""
    found: dict[str, inspect.Signature] = {}
    for module in (vaekit, vaekit.data, vaekit.evaluation):
        names = getattr(module, "__all__", None) or [
            n for n in dir(module) if not n.startswith("_")
        ]
        for name in names:
            obj = getattr(module, name)
            if inspect.ismodule(obj) or not callable(obj) or obj is vaekit.VaekitError:
                continue
            if isinstance(obj, type) and issubclass(obj, BaseException):
                continue
            found[f"{module.__name__}.{name}"] = inspect.signature(obj)
    for name, member in inspect.getmembers(VAE):
        function = getattr(member, "__func__", member)
        if name.startswith("_") or name in INTERNAL or not callable(member):
            continue
        if not getattr(function, "__module__", "").startswith("vaekit"):
            continue  # nn.Module's own
        found[f"VAE.{name}"] = inspect.signature(member)
    for name in SPATIAL:
        found[f"spatial.{name}"] = inspect.signature(getattr(VAE, name))
    for name in VQ:
        found[f"vq.{name}"] = inspect.signature(getattr(VQVAE, name))
    for name in LADDER:
        found[f"ladder.{name}"] = inspect.signature(getattr(LadderVAE, name))
    return found


def parameters(signature: inspect.Signature) -> list[inspect.Parameter]:
    return [
        p for p in signature.parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]  # fmt: skip


def kinds_for(p: inspect.Parameter) -> list[str]:
    """The hostile kinds for parameter `p`: an absent device only for a device, and None
    only where None is not the default (there it is no hostile value, but the default)."""
    device = p.name in DEVICE_PARAMS
    return [
        k for k in KINDS
        if (k != "absent_device" or device) and (k != "none" or p.default is not None)
    ]  # fmt: skip


def api_cases() -> list[dict[str, Any]]:
    return [
        {"id": f"{target}({p.name}={kind})", "target": target, "param": p.name, "kind": kind}
        for target, signature in targets().items()
        for p in parameters(signature)
        for kind in kinds_for(p)
    ]


def sweep(src: Path, work: Path, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run `cases` against the vaekit in `src`, in one worker process (restarted after a
    crash); the results in order."""
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{ROOT / 'tests'}"}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MALLOC_ARENA_MAX="2")
    results: list[dict[str, Any]] = []
    log = os.environ.get("VAEKIT_HOSTILE_LOG")
    pending = list(cases)
    while pending:
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "hostile_api_worker.py"), str(MEMORY_LIMIT),
             str(work)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, env=env, cwd=work,  # relative paths a case passes land in `work`
        )  # fmt: skip
        assert worker.stdin is not None and worker.stdout is not None
        while pending:
            case = {**pending[0], "timeout": TIMEOUT}
            worker.stdin.write(json.dumps(case) + "\n")
            worker.stdin.flush()
            line = worker.stdout.readline()
            pending.pop(0)
            if not line:  # the worker died: a crash; the rest go to a new one
                results.append({"id": case["id"], "outcome": "crash", "detail": ""})
                break
            results.append(json.loads(line))
            if log:
                with open(log, "a") as f:
                    r = results[-1]
                    f.write(f"{r.get('seconds', '?'):>7} {r['outcome']:7} {r['id']}\n")
        worker.stdin.close()
        worker.wait(timeout=60)
    return results


def report(results: list[dict[str, Any]]) -> tuple[dict[str, int], list[dict[str, Any]]]:
    counts: dict[str, int] = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    return counts, [r for r in results if r["outcome"] != "ok"]


def test_the_python_api_sweep_finds_nothing(tmp_path: Path, record_property: Any) -> None:
    cases = api_cases() + file_cases()
    results = sweep(ROOT / "src", tmp_path, cases)
    counts, bad = report(results)
    record_property("hostile_api_cases", len(results))
    print(f"hostile API sweep: {len(results)} cases, {counts}")
    text = "\n".join(f"- {r['id']}: {r['outcome']}\n  {r['detail'][-500:]}" for r in bad)
    assert len(results) == len(cases)
    assert not bad, f"{len(bad)} of {len(results)} hostile API cases went wrong:\n{text}"


def test_every_public_parameter_is_swept(tmp_path: Path) -> None:
    """A new function or parameter is covered the day it is added: every parameter of
    every public callable gets every hostile kind, and every required one has a value
    that works (hostile_api_worker.good_values), so that the others can be hostile."""
    found = targets()
    expected = {"vaekit.load", "vaekit.evaluate", "vaekit.train", "vaekit.Trainer",
                "VAE.sample", "vaekit.data.from_torch", "spatial.latents"}  # fmt: skip
    assert expected <= set(found)
    cases = {(c["target"], c["param"]) for c in api_cases()}
    fx = Fixtures(tmp_path)
    for target, signature in found.items():
        goods = good_values(fx, target)
        for p in parameters(signature):
            assert (target, p.name) in cases, (target, p.name)
            if p.default is p.empty:
                assert p.name in goods, f"add a good value for {target}({p.name}=...)"


if __name__ == "__main__":  # count the bad outcomes of another tree: python THIS SRC
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        all_cases = api_cases() + file_cases()
        found = sweep(Path(sys.argv[1]).resolve(), Path(tmp), all_cases)
    counts, bad = report(found)
    print(json.dumps({"cases": len(found), "counts": counts}))
    for r in bad:
        print(f"{r['outcome']:7} {r['id']}  {r['detail'].strip().splitlines()[-1:]}")
