"""A hostile sweep of every option of every command and of every file vaekit reads.

The cases are generated, not listed: every config option (from the config dataclasses:
each numeric option below its minimum, above its maximum, NaN, infinite, of the wrong
type or empty, and at its minimum), every option and positional argument of every
command (from the CLI's own parsers: out of range, garbage, empty, hostile paths), and
every file of a run directory and of the data (config.yaml, config.json,
model.safetensors, state.pt, metrics.jsonl, .npz files, image folders and their
decoded cache) made empty, truncated, garbage, of the wrong type or shape, or absurdly
large. A new option is covered the day it is added.

Every case runs as a user runs it (`vaekit ...` through the CLI's main) in a worker
process under a memory limit and a timeout (tests/hostile_worker.py), and must end in a
non-zero exit with one line naming the problem, or succeed (a training run that says it
succeeded must load with finite weights): never a traceback, a hang, a crash or a
damaged run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

import vaekit
from conftest import ROOT, TINY_FLAGS, tiny_config
from vaekit.cli import build_parser
from vaekit.config import default_of, iter_fields

MEMORY_LIMIT = 4 * 2**30  # the worker's address space: vaekit and torch take ~0.9 GiB
TIMEOUT = 20  # seconds per case
# options whose largest value is a legitimate but long run (epochs, examples, evaluation
# sizes): at their maximum they are refused by nothing and would only take time
LONG_AT_MAX = {
    "train.epochs",
    "data.noise_examples",
    "data.limit_train",
    "data.limit_test",
    "train.eval_batch_size",
    "train.batch_size",
    "loss.iw_samples",
    "model.hidden",
    "model.latent_dim",
    "model.label_dim",
    "model.channels",
    "model.blocks_per_level",
    "data.image_size",
    "model.codebook_size",  # a million codes: seconds of distances per batch
    "model.pseudo_inputs",  # 65,536 pseudo-images through the encoder at every step
    "loss.factorvae_hidden",  # 4,096 units a layer: a discriminator of 67M weights
}
RUN_OPTIONS = {"train.out", "train.resume"}  # set by each case itself
# options that act only on a quantised posterior: their cases train a VQ-VAE
VQ_OPTIONS = {
    "model.codebook_size",
    "model.code_dim",
    "model.commitment",
    "model.ema_decay",
    "model.restart_dead",
}
# options that act only on a VampPrior or an IAF posterior: their cases train one
COMPOSED_OPTIONS = {
    "model.pseudo_inputs": ["--model.prior", "vamp"],
    "model.flow_steps": ["--model.posterior", "iaf"],
    "model.flow_context": ["--model.posterior", "iaf"],
    "model.latent_dims": ["--model.posterior", "ladder"],  # the ladder's layers
}
# the richer families on each latent and conditioning the Gaussian VAE takes (a spatial
# latent with labels is the Gaussian VAE's own one-line refusal; a ladder's spatial latent
# is refused in one line): family_cases trains each at its option's hostile values
FAMILIES = {
    "vamp": ("model.pseudo_inputs", ["--model.prior", "vamp"]),
    "iaf": ("model.flow_steps", ["--model.posterior", "iaf"]),
    "iaf+vamp": ("model.flow_steps", ["--model.posterior", "iaf", "--model.prior", "vamp",
                                      "--model.pseudo_inputs", "4"]),
    "ladder": ("model.latent_dims", ["--model.posterior", "ladder"]),
    "iaf+context": ("model.flow_context", ["--model.posterior", "iaf"]),
    "iaf+vamp+context": ("model.flow_context", ["--model.posterior", "iaf", "--model.prior",
                                                "vamp", "--model.pseudo_inputs", "4"]),
    # a ladder of maps: model.latent_channels switches it on (the channels are latent_dims')
    "ladder of maps": ("model.latent_channels", ["--model.posterior", "ladder",
                                                "--model.latent_dims", "2,1"]),
}  # fmt: skip
CONV_TINY = ["--model.arch", "conv", "--model.channels", "4,8", "--model.blocks_per_level", "0"]
LAYOUTS = {
    "conv vector": CONV_TINY,
    "conv spatial": [*CONV_TINY, "--model.latent_channels", "2"],
    "conditional mlp": ["--model.conditional"],
    "conditional conv": [*CONV_TINY, "--model.conditional"],
    "conditional conv spatial": [*CONV_TINY, "--model.latent_channels", "2",
                                 "--model.conditional"],
}  # fmt: skip
FAMILY_VALUES = {  # smallest, largest (not pseudo_inputs': LONG_AT_MAX), past the largest
    "model.pseudo_inputs": ["1", "65537"],
    "model.flow_steps": ["1", "64", "65"],
    "model.latent_dims": ["1,1", "2,1", ",".join(["1"] * 17)],
    "model.flow_context": ["1", "4096", "4097"],  # 0, the default, is the iaf family's
    "model.latent_channels": ["1", "4096", "4097"],  # any > 0: the ladder's maps
}
# choices that train only beside other options (or refuse, in one clear line, without
# them): their cases add those, kept tiny, so that each choice trains and is checked
CHOICE_FLAGS = {
    ("model.arch", "conv"): ["--model.channels", "4,8"],
    ("model.arch", "autoencoderkl"): ["--model.channels", "4,8", "--model.latent_channels", "2"],
    ("model.posterior", "ladder"): ["--model.latent_dims", "2,1"],
    ("data.augment", "crop"): ["--data.image_size", "8"],  # of 32 px images (CHOICE_DATA)
    **{
        ("loss.perceptual", name): [
            *("--loss.perceptual_backbone_weights", "random"),
            *("--loss.perceptual_lin_weights", "random"),
            *("--data.noise_examples", "64"),
        ]
        for name in ("lpips-vgg", "lpips-alex")
    },
}
# choices that the noise cannot train: lpips-alex reads 31 px at least (the noise has 28),
# crop crops a folder's images; their cases train on data of their own, made in config_cases
CHOICE_DATA = {"lpips-alex": "choice-data/32px.npz", "crop": "choice-data/folder"}

# options that act only under one loss.objective: their cases train with it
OBJECTIVE_OPTIONS = {
    "loss.tc_weight": "tcvae",
    "loss.mi_weight": "tcvae",
    "loss.dim_kl_weight": "tcvae",
    "loss.tc_estimator": "tcvae",
    "loss.factorvae_hidden": "factorvae",
    "loss.factorvae_layers": "factorvae",
    "loss.factorvae_lr": "factorvae",
    "loss.mmd_weight": "wae_mmd",
    "loss.mmd_kernel": "infovae",
    "loss.wae_encoder": "wae_mmd",
    "loss.info_alpha": "infovae",
}


# -- the worker -------------------------------------------------------------------------------
class Worker:
    """tests/hostile_worker.py in a process of its own, restarted after a crash."""

    def __init__(self, src: Path) -> None:
        self.src = src
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": f"{self.src}{os.pathsep}{ROOT / 'tests'}"}
        # one malloc arena per thread would reserve 64 MiB of address space each
        env.update(HF_HUB_OFFLINE="1", WANDB_MODE="disabled", OMP_NUM_THREADS="1")
        env.update(MALLOC_ARENA_MAX="2")
        return subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "hostile_worker.py"), str(MEMORY_LIMIT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )

    def run(self, case: dict[str, Any]) -> dict[str, Any]:
        if self.process is None or self.process.poll() is not None:
            self.process = self.start()
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(case) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            return {"id": case["id"], "outcome": "crash", "code": code, "stderr": "", "detail": ""}
        return json.loads(line)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(timeout=30)


# -- the cases --------------------------------------------------------------------------------
def option_values(key: str, f: Any, typ: Any) -> Iterator[tuple[str, str]]:
    """(label, command-line value) pairs for one config option: hostile ones, and the
    option's extremes where a run at them stays short."""
    meta = f.metadata
    origin = getattr(typ, "__origin__", None)
    if origin is list:
        yield from [("empty", ""), ("nan", "nan"), ("negative", "-1"), ("garbage", "abc")]
        yield from [("huge", "1e9"), ("brackets", "[]"), ("zero", "0")]
        if meta.get("max") is not None:
            yield "above max", str(int(meta["max"]) + 1)
        yield "min", "1" if key != "train.tracker" else ""
        yield from ((f"choice {c}", c) for c in meta.get("choices", ()))  # data.augment's
        return
    if typ is bool:
        yield from [("garbage", "maybe"), ("empty", ""), ("true", "true"), ("false", "false")]
        return
    if typ is str:
        yield from [("empty", ""), ("newline", "a\nb"), ("long", "x" * 5000), ("nan", "nan")]
        yield from [("path escape", "../../../etc/passwd"), ("dev null", "/dev/null")]
        yield from ((f"choice {c}", c) for c in meta.get("choices", ()))  # each its own run
        return
    yield from [("nan", "nan"), ("inf", "inf"), ("-inf", "-inf"), ("garbage", "abc")]
    yield from [("empty", ""), ("huge", "1e30"), ("int overflow", "9" * 40)]
    if typ is int:
        yield "fraction", "2.5"
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None:
        step = 1 if typ is int else max(abs(lo) * 1e-3, 1e-9)
        yield "below min", repr(lo - step if not meta.get("exclusive_min") else lo)
        if not meta.get("exclusive_min"):
            yield "min", repr(lo)
    if hi is not None:
        yield "above max", repr(hi + (1 if typ is int else abs(hi) * 1e-3 + 1e-9))
        if key not in LONG_AT_MAX and not meta.get("exclusive_max"):
            yield "max", repr(hi)


def config_cases(work: Path) -> Iterator[dict[str, Any]]:
    """`vaekit train` with each hostile value of each config option."""
    from PIL import Image

    (work / CHOICE_DATA["crop"]).mkdir(parents=True, exist_ok=True)
    images = np.random.default_rng(0).integers(0, 256, (72, 32, 32), dtype=np.uint8)
    np.savez(work / CHOICE_DATA["lpips-alex"], x_train=images)
    for i, image in enumerate(images[:12]):
        Image.fromarray(image).save(work / CHOICE_DATA["crop"] / f"{i}.png")
    for key, f, typ in iter_fields():
        if key in RUN_OPTIONS:
            continue
        for label, value in option_values(key, f, typ):
            case_id = f"train --{key} {label}"
            out = work / "runs" / f"{len(case_id)}-{abs(hash(case_id))}"
            argv = ["train", "--data", "noise", *TINY_FLAGS, "--out", str(out)]
            argv += [f"--{key}", value] if not (typ is bool and value == "") else [f"--{key}"]
            argv += ["--model.posterior", "vq"] if key in VQ_OPTIONS else []
            argv += COMPOSED_OPTIONS.get(key, [])
            argv += CHOICE_FLAGS.get((key, value), [])
            if value in CHOICE_DATA:
                argv += ["--data", str(work / CHOICE_DATA[value])]
            if key in OBJECTIVE_OPTIONS:
                argv += ["--loss.objective", OBJECTIVE_OPTIONS[key]]
            case = {"id": case_id, "argv": argv, "check": "run", "run": str(out)}
            if (key, value) == ("model.arch", "autoencoderkl"):  # the worker's first diffusers
                case["timeout"] = 3 * TIMEOUT  # import: ~10 s of a loaded machine's time
            yield case


def family_cases(work: Path) -> Iterator[dict[str, Any]]:
    """`vaekit train` of each richer family on each layout (LAYOUTS), at its option's
    smallest, largest and past-largest values: a run, or one line that says why not."""
    for family, (key, flags) in FAMILIES.items():
        for layout, layout_flags in LAYOUTS.items():
            for value in FAMILY_VALUES[key]:
                case_id = f"train {family} on a {layout}: --{key} {value}"
                out = work / "family-runs" / f"{len(case_id)}-{abs(hash(case_id))}"
                argv = ["train", "--data", "noise", *TINY_FLAGS, "--data.noise_examples", "64",
                        "--out", str(out), *flags, *layout_flags, f"--{key}", value]  # fmt: skip
                yield {"id": case_id, "argv": argv, "check": "run", "run": str(out)}


def command_cases(run: Path, work: Path) -> Iterator[dict[str, Any]]:
    """Every option of every other command, from the CLI's own parsers."""
    parser, _ = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    base = {
        "evaluate": ["evaluate", str(run)],
        "encode": ["encode", str(run), "--out", str(work / "z.npz")],
        "score": ["score", str(run), "--out", str(work / "s.npz")],
        "sample": ["sample", str(run), "--out", str(work / "s.png")],
        "reconstruct": ["reconstruct", str(run), "--out", str(work / "r.png")],
        "interpolate": ["interpolate", str(run), "--out", str(work / "i.png")],
        "report": ["report", str(run), "--iw-samples", "2", "--max-test", "16"],
        "manifold": ["manifold", str(run), "--n", "3", "--out", str(work / "m.png")],
        "latents": ["latents", str(run), "--max-test", "32", "--out", str(work / "l.png")],
        "curves": ["curves", str(run), "--out", str(work / "c.png")],
        "kl": ["kl", str(run), "--max-test", "32", "--out", str(work / "k.png")],
        "push": ["push", str(run), "alice/tiny", "--dry-run", "--iw-samples", "2"],
        "explore": ["explore", str(run), "--port", "0"],  # serves until the case's timeout
        "reproduce": ["reproduce", "kingma2013", "--budget", "nope"],  # refused: fast
    }
    runs_forever = {"explore", "reproduce"}
    for name, p in sub.choices.items():
        if name not in base:
            continue
        for action in p._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            flag = action.option_strings[-1]
            if action.nargs == 0:  # a switch: on
                if name not in runs_forever:
                    yield {"id": f"{name} {flag}", "argv": [*base[name], flag]}
                continue
            for label, value in _argument_values(action):
                if name in runs_forever and (label == "min" or label.startswith("choice")):
                    continue
                if flag == "--host" and label == "empty":  # all interfaces: not in a test
                    continue
                yield {"id": f"{name} {flag} {label}", "argv": [*base[name], flag, value]}
        for label, path in _hostile_paths(work):
            argv = list(base[name])
            argv[1 if name != "reproduce" else 2] = path
            if name != "explore":
                yield {"id": f"{name} RUN={label}", "argv": argv}


def _argument_values(action: argparse.Action) -> Iterator[tuple[str, str]]:
    yield from [("empty", ""), ("garbage", "abc"), ("nan", "nan"), ("newline", "a\nb")]
    if action.choices:
        yield from ((f"choice {c}", str(c)) for c in action.choices)  # one id each
        return
    bounds = getattr(action.type, "__name__", "")
    if bounds.startswith("count("):
        lo, hi = (int(v) for v in bounds[6:-1].split(","))
        yield from [("below min", str(lo - 1)), ("above max", str(hi + 1)), ("float", "1e3")]
        yield "min", str(lo)
    else:
        yield from [("long", "x" * 5000), ("path escape", "../../x")]


def _hostile_paths(work: Path) -> Iterator[tuple[str, str]]:
    regular = work / "a-file"
    regular.write_text("not a run")
    loop = work / "loop"
    if not loop.is_symlink():
        loop.symlink_to(loop)
    yield from [("missing", str(work / "missing")), ("a file", str(regular))]
    yield from [("empty", ""), ("root", "/"), ("dev null", "/dev/null"), ("loop", str(loop))]
    yield from [("hub dotdot", "hf://a/b@../../x"), ("hub newline", "hf://a/b@x\ny")]


# -- damaged files ---------------------------------------------------------------------------
def _bytes_mutations(data: bytes) -> Iterator[tuple[str, bytes]]:
    rng = np.random.default_rng(0)
    yield "empty", b""
    yield "truncated", data[: len(data) // 2]
    yield "one byte", data[:1]
    yield "garbage", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()


def _json_mutations(meta: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """config.json with each field made hostile: wrong types, absurd and negative sizes."""
    for value in ([], None, 1, "x"):
        yield f"whole {value!r}", value
    arch = meta["architecture"]
    hostile: list[Any] = [None, "x", -5, 0, 10**9, 1e308, [], {"a": 1}, True]
    for key in list(arch):
        for value in hostile:
            yield f"architecture.{key}={value!r}", {**meta, "architecture": {**arch, key: value}}
    for half in ("encoder", "decoder"):
        for key, value in (("name", "os.system"), ("name", 5), ("args", "x")):
            changed = {**arch[half], key: value}
            yield f"{half}.{key}={value!r}", {**meta, "architecture": {**arch, half: changed}}
        for arg in arch[half]["args"]:
            for value in (-1, 10**9, "x", None, [10**9]):
                args = {**arch[half]["args"], arg: value}
                changed = {**arch[half], "args": args}
                yield (
                    f"{half}.args.{arg}={value!r}",
                    {
                        **meta,
                        "architecture": {**arch, half: changed},
                    },
                )
    for value in ("abc", 5, [1, [2]], None):
        yield f"class_names={value!r}", {**meta, "class_names": value}
    for value in ("x", [], {"train": {"epochs": -1}}, {"nope": 1}):
        yield f"config={value!r}", {**meta, "config": value}


def _weights_mutations(path: Path) -> Iterator[tuple[str, bytes]]:
    from safetensors.torch import load_file, save

    tensors = load_file(str(path))
    first = next(iter(tensors))
    yield "int8 weights", save({k: v.to(torch.int8) for k, v in tensors.items()})
    yield "bool weights", save({k: v.bool() for k, v in tensors.items()})
    yield "nan weights", save({**tensors, first: torch.full_like(tensors[first], float("nan"))})
    yield "extra tensor", save({**tensors, "extra": torch.zeros(3)})
    yield "missing tensor", save({k: v for k, v in tensors.items() if k != first})
    yield "huge shape", save({**tensors, first: torch.zeros(1, 1)})
    header = json.dumps({"x": {"dtype": "F32", "shape": [10**9, 10**9], "data_offsets": [0, 8]}})
    yield "lying header", struct.pack("<Q", len(header)) + header.encode() + b"\0" * 8


def _state_mutations(path: Path) -> Iterator[tuple[str, Any]]:
    state = torch.load(path, weights_only=True)
    for key in ("model", "optimizer", "schedule", "rng", "config", "epoch", "architecture"):
        yield f"no {key}", {k: v for k, v in state.items() if k != key}
    for key, value in (("epoch", -3), ("epoch", "x"), ("step_in_epoch", 10**9), ("rng", {})):
        yield f"{key}={value!r}", {**state, key: value}
    yield "optimizer garbage", {**state, "optimizer": {"state": 5, "param_groups": "x"}}
    yield "model shapes", {**state, "model": {k: v[:1] for k, v in state["model"].items()}}
    yield "format 2", {**state, "format": 2}
    yield "a list", [1, 2]


def file_cases(run: Path, work: Path) -> Iterator[dict[str, Any]]:
    """Each file of a run damaged, then the commands that read it."""
    resume = [
        "train", "--config", "{run}/config.yaml", "--out", "{run}", "--resume",
        "--epochs", "2", "--train.progress", "false",
    ]  # fmt: skip
    readers = {
        "config.yaml": [resume],
        "config.json": [["sample", "{run}", "--n", "4"], ["evaluate", "{run}", "--json"]],
        "model.safetensors": [["sample", "{run}", "--n", "4"]],
        "state.pt": [resume],
        "metrics.jsonl": [
            ["curves", "{run}"],
            ["push", "{run}", "a/b", "--dry-run", "--no-evaluate"],
        ],  # fmt: skip
    }

    def cases(name: str, label: str, write: Any) -> Iterator[dict[str, Any]]:
        for argv in readers[name]:
            target = work / "damaged" / f"{name}-{abs(hash((label, tuple(argv))))}"
            yield {
                "id": f"{name} {label}: {argv[0]}",
                "argv": [a.replace("{run}", str(target)) for a in argv],
                "setup": {"copy": str(run), "to": str(target), "file": name, "write": write},
            }

    for name in readers:
        data = (run / name).read_bytes()
        for label, content in _bytes_mutations(data):
            yield from cases(name, label, {"bytes": content.hex()})
        yield from cases(name, "a directory", {"directory": True})
        yield from cases(name, "missing", {"delete": True})
    meta = json.loads((run / "config.json").read_text())
    for label, value in _json_mutations(meta):
        yield from cases("config.json", label, {"json": value})
    for label, content in _weights_mutations(run / "model.safetensors"):
        yield from cases("model.safetensors", label, {"bytes": content.hex()})
    for label, state in _state_mutations(run / "state.pt"):
        yield from cases("state.pt", label, {"torch": state})
    yaml_texts = {
        "duplicate key": "train:\n  epochs: 2\n  epochs: 3\n",
        "deep nesting": "a: " + "[" * 3000 + "]" * 3000 + "\n",
        "a list": "- 1\n- 2\n",
        "huge number": "train:\n  epochs: 1e400\n",
        "unknown key": "nope: 1\n",
        "billion laughs": "a: &a [1,1,1,1,1,1,1,1,1]\n"
        + "".join(
            f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
            for p, c in zip("abcdefg", "bcdefgh", strict=True)
        ),  # fmt: skip
    }
    for label, text in yaml_texts.items():
        yield from cases("config.yaml", label, {"bytes": text.encode().hex()})
    for label, line in (
        ("1e308", '{"epoch": 1, "train_nelbo": 1e308, "test_nelbo": -1e308}'),
        ("nested", "[" * 100_000 + "]" * 100_000),
        ("long line", '{"epoch": "' + "x" * 1_000_000 + '"}'),
    ):
        yield from cases("metrics.jsonl", label, {"bytes": line.encode().hex()})


def prior_cases(work: Path) -> Iterator[dict[str, Any]]:
    """`vaekit train-prior` with each hostile value of each of its options and RUNs, and a
    VQ-VAE run's code prior files damaged, then the commands that read them."""
    vq = {"model.posterior": "vq", "model.codebook_size": 8, "model.code_dim": 2}
    run = vaekit.train(tiny_config(work / "vq-template", **vq))
    vaekit.train_prior(str(run), epochs=1, channels=4, layers=1)
    target = work / "vq-train-prior"  # train-prior writes its files here, case after case
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(run, target)
    base = ["train-prior", str(target), "--epochs", "1", "--channels", "4", "--layers", "1"]
    parser, _ = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for action in sub.choices["train-prior"]._actions:
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            flag = action.option_strings[-1]
            for label, value in _argument_values(action):
                yield {"id": f"train-prior {flag} {label}", "argv": [*base, flag, value]}
    for label, path in _hostile_paths(work):
        yield {"id": f"train-prior RUN={label}", "argv": ["train-prior", path, *base[2:]]}
    readers = [["sample", "{run}", "--n", "2"], ["evaluate", "{run}", "--json"]]
    for name in ("code_prior.safetensors", "code_prior.json"):
        writes = [
            (label, {"bytes": b.hex()}) for label, b in _bytes_mutations((run / name).read_bytes())
        ]
        writes += [("a directory", {"directory": True}), ("missing", {"delete": True})]
        for (label, write), argv in ((w, a) for w in writes for a in readers):
            damaged = work / "damaged" / f"{name}-{abs(hash((label, tuple(argv))))}"
            yield {
                "id": f"{name} {label}: {argv[0]}",
                "argv": [a.replace("{run}", str(damaged)) for a in argv],
                "setup": {"copy": str(run), "to": str(damaged), "file": name, "write": write},
            }


def prior_state_cases(work: Path) -> Iterator[dict[str, Any]]:
    """`vaekit train-prior --resume` on a damaged code_prior_state.pt (its resumable state)."""
    vq = {"model.posterior": "vq", "model.codebook_size": 8, "model.code_dim": 2}
    run = vaekit.train(tiny_config(work / "vq-state-template", **vq), overwrite=True)
    vaekit.train_prior(str(run), epochs=1, channels=4, layers=1)
    resume = ["train-prior", "{run}", "--epochs", "2", "--channels", "4", "--layers", "1",
              "--resume"]  # fmt: skip
    path = run / "code_prior_state.pt"
    saved = torch.load(path, weights_only=True)
    writes = [(label, {"bytes": b.hex()}) for label, b in _bytes_mutations(path.read_bytes())]
    writes += [("a directory", {"directory": True}), ("missing", {"delete": True})]
    for key in ("options", "fingerprints", "prior", "optimizer", "history", "best", "epoch"):
        writes.append((f"no {key}", {"torch": {k: v for k, v in saved.items() if k != key}}))
    shrunk = {k: v[:1] for k, v in saved["prior"].items()}
    for key, value in (("epoch", -3), ("step_in_epoch", 10**9), ("options", "x"),
                       ("options", {}), ("history", 5), ("best", None), ("prior", shrunk),
                       ("fingerprints", {"model": "x", "codes": "y"})):  # fmt: skip
        label = f"{key}={value!r}"[:60]
        writes.append((label, {"torch": {**saved, key: value}}))
    for label, write in writes:
        damaged = work / "damaged" / f"code_prior_state-{abs(hash(label))}"
        yield {
            "id": f"code_prior_state.pt {label}: train-prior --resume",
            "argv": [a.replace("{run}", str(damaged)) for a in resume],
            "setup": {"copy": str(run), "to": str(damaged), "file": path.name, "write": write},
        }


def data_cases(work: Path) -> Iterator[dict[str, Any]]:
    """`vaekit train --data X` on damaged .npz files and image folders."""
    good = work / "data" / "good.npz"
    good.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.savez(good, x_train=rng.integers(0, 256, (64, 8, 8), dtype=np.uint8))
    arrays: dict[str, dict[str, Any]] = {
        "object array": {"x_train": np.array([None, 1], dtype=object)},
        "no x_train": {"y_train": np.zeros(3, dtype=np.int64)},
        "five dimensions": {"x_train": np.zeros((2, 1, 1, 8, 8), dtype=np.uint8)},
        "zero images": {"x_train": np.zeros((0, 8, 8), dtype=np.uint8)},
        "zero size": {"x_train": np.zeros((4, 0, 8), dtype=np.uint8)},
        "scalar": {"x_train": np.array(3.0)},
        "nan floats": {"x_train": np.full((8, 8, 8), np.nan, dtype=np.float32)},
        "labels 1e12": {
            "x_train": np.zeros((8, 8, 8), dtype=np.uint8),
            "y_train": np.full(8, 10**12, dtype=np.int64),
        },
        "uint64 labels": {
            "x_train": np.zeros((8, 8, 8), dtype=np.uint8),
            "y_train": np.full(8, 2**64 - 1, dtype=np.uint64),
        },
        "strings": {"x_train": np.array(["a", "b"])},
    }
    for label, content in arrays.items():
        path = work / "data" / f"{abs(hash(label))}.npz"
        np.savez(path, **content)  # type: ignore[arg-type]
        yield _data_case(f"npz {label}", path, work)
    raw = good.read_bytes()
    for label, content in _bytes_mutations(raw):
        path = work / "data" / f"{abs(hash(label))}-bytes.npz"
        path.write_bytes(content)
        yield _data_case(f"npz {label}", path, work)
    bomb = work / "data" / "bomb.npz"  # a tiny file that says it holds 8 TB
    with zipfile.ZipFile(bomb, "w") as z:
        header = np.lib.format.header_data_from_array_1_0(np.zeros(1, dtype=np.uint8))
        header["shape"] = (10**6, 1000, 1000, 8)
        buf = __import__("io").BytesIO()
        np.lib.format.write_array_header_1_0(buf, header)
        z.writestr("x_train.npy", buf.getvalue() + b"\0" * 16)
    yield _data_case("npz lying header", bomb, work)
    yield from _folder_cases(work)
    yield from _hf_cases(work)


def _hf_cases(work: Path) -> Iterator[dict[str, Any]]:
    """`--data hf:PATH` on Hugging Face datasets (save_to_disk) vaekit cannot use."""
    try:
        import datasets
    except ImportError:  # the [datasets] extra is part of dev; without it, nothing to try
        return
    image = np.zeros((8, 8), dtype=np.uint8)
    columns: dict[str, dict[str, list[Any]]] = {
        "strings": {"text": ["a", "b"] * 6},
        "empty": {"image": []},
        "ragged lists": {"image": [[[1, 2], [3]]] * 12},
        "shapes differ": {"image": [image.tolist()] * 11 + [np.zeros((9, 8)).tolist()]},
        "two image columns": {"a": [image.tolist()] * 12, "b": [image.tolist()] * 12},
        "string labels": {"image": [image.tolist()] * 12, "label": ["cat"] * 12},
        "negative floats": {"image": [np.full((8, 8), -1.0).tolist()] * 12},
    }
    for label, content in columns.items():
        path = work / "hf" / str(abs(hash(label)))
        if not path.exists():
            datasets.Dataset.from_dict(content).save_to_disk(str(path))
        yield _data_case(f"hf {label}", Path(f"hf:{path}"), work)
    yield _data_case("hf missing split", Path(f"hf:{path}:nope"), work)
    yield _data_case("hf nothing there", Path("hf:"), work)


def _folder_cases(work: Path) -> Iterator[dict[str, Any]]:
    from PIL import Image

    def folder(label: str) -> Path:
        path = work / "folders" / str(abs(hash(label)))
        path.mkdir(parents=True, exist_ok=True)
        for i in range(12):  # a test split of 1 image at test_fraction 0.1
            Image.new("L", (12, 12), color=i * 20).save(path / f"{i}.png")
        return path

    empty = work / "folders" / "empty"
    empty.mkdir(parents=True, exist_ok=True)
    yield _data_case("folder empty", empty, work)
    path = folder("truncated")
    (path / "bad.png").write_bytes((path / "0.png").read_bytes()[:20])
    yield _data_case("folder with a truncated png", path, work)
    path = folder("zero bytes")
    (path / "zero.png").write_bytes(b"")
    yield _data_case("folder with an empty png", path, work)
    path = folder("directory")
    (path / "dir.png").mkdir(exist_ok=True)
    yield _data_case("folder with a directory named .png", path, work)
    path = folder("dangling")
    link = path / "gone.png"
    if not link.is_symlink():
        link.symlink_to(path / "nowhere.png")
    yield _data_case("folder with a dangling link", path, work)
    path = folder("fifo")
    if not (path / "pipe.png").exists():
        os.mkfifo(path / "pipe.png")
    yield _data_case("folder with a FIFO named .png", path, work)
    path = folder("cache")
    yield {**_data_case("folder cache damaged", path, work), "setup": {"damage_cache": str(path)}}


def _data_case(label: str, path: Path, work: Path) -> dict[str, Any]:
    out = work / "data-runs" / str(abs(hash(label)))
    argv = ["train", "--data", str(path), "--data.image_size", "8", *TINY_FLAGS, "--out", str(out)]
    return {"id": f"data: {label}", "argv": argv, "check": "run", "run": str(out)}


# -- the sweep --------------------------------------------------------------------------------
def prepare(case: dict[str, Any], work: Path) -> None:
    """Lay out what a case needs on disk: a damaged copy of the run, a damaged cache."""
    setup = case.pop("setup", None)
    if setup is None:
        return
    if "damage_cache" in setup:
        folder = Path(setup["damage_cache"])
        vaekit.train(tiny_config(work / "cache-warm", **{"data.name": str(folder),
                     "data.image_size": 8}), overwrite=True)  # fmt: skip
        for f in (folder / ".vaekit-cache").glob("*"):
            f.write_bytes(b"damaged")
        return
    target = Path(setup["to"])
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(setup["copy"], target)
    path, write = target / setup["file"], setup["write"]
    if write.get("delete"):
        path.unlink()
    elif write.get("directory"):
        path.unlink()
        path.mkdir()
    elif "bytes" in write:
        path.write_bytes(bytes.fromhex(write["bytes"]))
    elif "json" in write:
        path.write_text(json.dumps(write["json"]))
    elif "torch" in write:
        torch.save(write["torch"], path)


def all_cases(run: Path, work: Path) -> list[dict[str, Any]]:
    cases = [
        *config_cases(work),
        *family_cases(work),
        *command_cases(run, work),
        *file_cases(run, work),
        *prior_cases(work),
        *prior_state_cases(work),
        *data_cases(work),
    ]
    for case in cases:
        case.setdefault("cwd", str(work))
        case.setdefault("timeout", TIMEOUT)
    return cases


def sweep(src: Path, work: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run every case against the vaekit in `src`; (all results, the bad ones)."""
    run = vaekit.train(tiny_config(work / "template", **{"train.epochs": 2}))
    cases = all_cases(run, work)
    worker = Worker(src)
    results = []
    log = os.environ.get("VAEKIT_HOSTILE_LOG")  # a file to follow the sweep case by case
    try:
        for case in cases:
            prepare(case, work)
            results.append({**worker.run(case), "argv": case["argv"]})
            if log:
                with open(log, "a") as f:
                    r = results[-1]
                    f.write(f"{r.get('seconds', '?'):>7} {r['outcome']:9} {r['id']}\n")
    finally:
        worker.close()
    return results, [r for r in results if r["outcome"] != "ok"]


def test_the_hostile_sweep_finds_nothing(tmp_path: Path, record_property: Any) -> None:
    results, bad = sweep(ROOT / "src", tmp_path)
    counts: dict[str, int] = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    record_property("hostile_cases", len(results))
    record_property("hostile_outcomes", counts)
    print(f"hostile sweep: {len(results)} cases, {counts}")
    report = "\n".join(
        f"- {r['id']}: {r['outcome']} (exit {r.get('code')})\n"
        f"  {(r['detail'] or r['stderr'])[-600:]}"
        for r in bad
    )
    assert not bad, f"{len(bad)} of {len(results)} hostile cases went wrong:\n{report}"


def test_every_option_gets_hostile_values() -> None:
    """A new option is covered the day it is added: every config option yields cases, and
    every numeric one has a maximum and is tried past it."""
    for key, f, typ in iter_fields():
        values = dict(option_values(key, f, typ))
        assert values, key
        if typ in (int, float):
            assert f.metadata.get("max") is not None, f"{key} has no maximum"
            assert "above max" in values and "nan" in values, key
        default_of(f)  # every option has a default
    # an option of one objective is tried under it (a name that moved would be tried under none)
    keys = {key for key, _, _ in iter_fields()}
    assert set(OBJECTIVE_OPTIONS) <= keys
    objectives = {value for _, value in option_values("loss.objective", *_field("loss.objective"))}
    assert set(OBJECTIVE_OPTIONS.values()) < objectives


def test_every_config_case_trains_in_a_directory_of_its_own(tmp_path: Path) -> None:
    """Cases that shared an id shared one --out: all but the first were refused ("already
    holds a run"), so only each choice-valued option's first choice ever trained."""
    cases = list(config_cases(tmp_path))
    assert len({c["id"] for c in cases}) == len({c["run"] for c in cases}) == len(cases)
    ids = {c["id"] for c in cases}  # and the extra flags of a choice name a real one
    assert {f"train --{key} choice {value}" for key, value in CHOICE_FLAGS} <= ids
    assert all(any(i.endswith(f" choice {value}") for i in ids) for value in CHOICE_DATA)


def test_every_family_is_tried_on_every_layout(tmp_path: Path) -> None:
    """vamp, iaf, iaf+vamp and the ladder each on a conv vector and spatial latent and with
    labels (family_cases), each case in a directory of its own."""
    cases = list(family_cases(tmp_path))
    assert len({c["run"] for c in cases}) == len(cases)
    for family in FAMILIES:
        for layout in LAYOUTS:
            assert any(c["id"].startswith(f"train {family} on a {layout}:") for c in cases)


def _field(key: str) -> tuple[Any, Any]:
    return next((f, typ) for k, f, typ in iter_fields() if k == key)


if __name__ == "__main__":  # count the bad outcomes of another tree: python test_hostile.py SRC
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        all_results, bad_results = sweep(Path(sys.argv[1]).resolve(), Path(tmp))
    print(json.dumps({"cases": len(all_results), "bad": len(bad_results)}))
    for r in bad_results:
        print(f"{r['outcome']:9} {r['id']}")
