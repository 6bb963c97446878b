"""The core commands, train and evaluate, and the flags other modules share: every config
field as a flag of `train`, and evaluate's reconstruction flags, which `report` takes too.
Like every cli module: parse, call the library, print; nothing else."""

from __future__ import annotations

import argparse
import json
import os
import shlex
from typing import Any

from .parser import count

COMMON_HELP = (
    "RUN is a run directory written by `vaekit train`, a model folder, hf://OWNER/NAME, or a "
    "diffusers AutoencoderKL (diffusers:PATH_OR_REPO, or a folder diffusers saved; it needs "
    "--data)"
)


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    from ..config import default_of, iter_fields

    groups: dict[str, argparse._ArgumentGroup] = {}
    for key, f, typ in iter_fields():
        section = key.partition(".")[0] if "." in key else "general"
        group = groups.setdefault(section, parser.add_argument_group(f"{section} options"))
        names = [f"--{key}"]
        if f.metadata.get("flag"):
            names.insert(0, f.metadata["flag"])
        default = default_of(f)
        help_text = f"{f.metadata['help']} (default: {default!r})"
        kwargs: dict[str, Any] = {
            "dest": f"cfg:{key}",
            "default": argparse.SUPPRESS,
            "help": help_text.replace("%", "%%"),
        }
        if typ is bool:
            kwargs.update(nargs="?", const="true", metavar="BOOL")
        else:
            kwargs["metavar"] = key.rpartition(".")[2].upper()
        group.add_argument(*names, **kwargs)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The core commands: train and evaluate."""
    _train_parser(sub)
    _evaluate_parser(sub)


def _train_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train",
        help="train a VAE (every config option is a flag)",
        description="Train a VAE. Options come from --config (a YAML file or a "
        "preset name), then from flags; every config field is a dotted flag.",
    )
    p.add_argument("--config", help="YAML file or preset name (see `vaekit presets`)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last saved state"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    _add_config_flags(p)


def _evaluate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "evaluate",
        help="test-set ELBO, log p(x), image and latent metrics",
        description=f"Evaluate a trained model on its test set. {COMMON_HELP}.",
    )
    p.add_argument("run")
    p.add_argument(
        "--iw-samples",
        type=count(0, 1_000_000),
        default=0,
        metavar="K",
        help="also estimate log p(x) by importance sampling with K samples",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="decoder precision of the log p(x) estimate (bf16: faster on CPUs "
        "with AMX, within ~0.01 nats; see benchmarks/eval_speed.py)",
    )
    p.add_argument(
        "--pass-size",
        type=count(1, 10**10),
        default=None,
        metavar="VALUES",
        help="values per forward pass of the log p(x) estimate, counted in the "
        "decoder's widest tensor: bounds its memory at ~20 bytes each (default 4000000)",
    )
    p.add_argument(
        "--fid",
        nargs="?",
        const="inception",
        choices=("inception", "random"),
        help="also the FID of prior samples against the test set, with the "
        "Inception network (needs vaekit[inception] and its weights) or a seeded "
        "random feature network (comparable only between vaekit runs)",
    )
    p.add_argument(
        "--fid-samples",
        type=count(2, 1_000_000),
        default=10000,
        metavar="N",
        help="prior samples, and test images, the FID compares (default 10000)",
    )
    add_reconstruction_flags(p)
    add_data_flags(p)
    p.add_argument("--batch-size", type=count(1, 2**20), default=1000)
    p.add_argument("--seed", type=count(0, 2**63 - 1), default=0)
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.add_argument(
        "--disentanglement",
        action="store_true",
        help="also MIG and DCI of the posterior means on --data FOLDER, a factor set with "
        "factors.csv (scripts/make_shapes.py --factors)",
    )


LPIPS_FLAGS = ("--lpips-backbone-weights", "--lpips-lin-weights")


def add_reconstruction_flags(p: argparse.ArgumentParser) -> None:
    """--rfid, --lpips and the weights they use: `evaluate` and `report` share them."""
    p.add_argument(
        "--rfid",
        nargs="?",
        const="inception",
        choices=("inception", "random"),
        help="also the reconstruction FID: test images against their reconstructions, "
        "with the feature networks of --fid (compares up to --fid-samples images)",
    )
    p.add_argument(
        "--fid-weights",
        metavar="PATH",
        help="a local copy of the Inception weights (torch-fidelity's "
        "weights-inception-2015-12-05-6726825d.pth); by default they download once into "
        "the torch hub cache",
    )
    p.add_argument(
        "--lpips",
        nargs="?",
        const="lpips-vgg",
        default="none",
        choices=("lpips-vgg", "lpips-alex", "none"),
        help="also the LPIPS distance of the reconstructions to the test images (weights "
        "download once into the torch hub cache; default none)",
    )
    for part, what in (("backbone", "VGG16 / AlexNet weights"), ("lin", "LPIPS layer weights")):
        p.add_argument(
            f"--lpips-{part}-weights",
            default="",
            metavar="PATH",
            help=f"a local file of the {what} for --lpips, or 'random' (seeded random "
            "weights: keeps the code path, measures nothing perceptual)",
        )


def reconstruction_options(args: argparse.Namespace) -> dict[str, Any]:
    """evaluate()'s rfid, lpips and fid_weights from the flags `add_reconstruction_flags` adds."""
    from ..errors import ConfigError
    from ..evaluation.perceptual import build_perceptual

    weights = (args.lpips_backbone_weights, args.lpips_lin_weights)
    if args.lpips == "none" and any(weights):
        raise ConfigError("--lpips-backbone-weights and --lpips-lin-weights need --lpips")
    lpips: Any = None
    if args.lpips != "none":  # built here, so that its errors name this command's flags
        lpips = build_perceptual(args.lpips, "cpu", *weights, settings=LPIPS_FLAGS)
    return {"rfid": args.rfid, "lpips": lpips, "fid_weights": args.fid_weights}


def cmd_train(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..training.trainer import train

    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg:")}
    config = load_config(args.config, overrides)
    run_dir = train(config, resume=args.resume, overwrite=args.overwrite)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    pictures = ", samples.png, reconstructions.png" if (run_dir / "samples.png").exists() else ""
    print(f"run written to {run_dir}: config.yaml, metrics.jsonl, model.safetensors{pictures}")
    print(f"next: vaekit evaluate {shlex.quote(str(run_dir))}")
    return 0


SPLITS = ("test", "train", "val", "all")  # loading.SPLITS, not imported: --help stays light


def add_data_flags(p: argparse.ArgumentParser, image_size: bool = True) -> None:
    """--data, --split (and --image-size): where a command's examples come from."""
    p.add_argument(
        "--data",
        metavar="SOURCE",
        help="the examples to use: anything `vaekit train --data` takes (a dataset name, an "
        ".npz/.npy/.csv/.parquet file, a folder of images, hf:OWNER/NAME), read at the "
        "model's image size (default: the data the run trained on)",
    )
    p.add_argument(
        "--split",
        choices=SPLITS,
        default="test",
        help="test: the source's test split, or the part training holds out from a source "
        "without one (data.test_fraction, data.split_seed); train, val: the rows training "
        "steps on and validates on; all: every example (default test)",
    )
    if image_size:
        add_image_size_flag(p)


def add_image_size_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--image-size",
        type=count(8, 4096),
        metavar="PIXELS",
        help="diffusers models (no fixed input size): the size images are read and drawn at "
        "(default: the model's sample_size); a vaekit run always uses its own",
    )


def load_run(args: argparse.Namespace, progress: bool = False) -> tuple[Any, Any]:
    """The model args.run names and the examples of args.data / args.split (the run's own
    data without --data): vaekit.loading.load_with_data."""
    from ..loading import load_with_data

    return load_with_data(
        args.run,
        args.data,
        split=args.split,
        image_size=getattr(args, "image_size", None),
        progress=progress,
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..evaluation.evaluate import evaluate
    from ..evaluation.likelihood import DEFAULT_BUDGET
    from ..evaluation.summary import summary

    if args.disentanglement and not args.data:
        raise ConfigError("--disentanglement needs --data FOLDER, a folder with factors.csv")
    model, examples = load_run(args, progress=not args.json)
    y = examples.y if model.conditional else None
    stats = evaluate(
        model,
        examples.x,
        y,
        batch_size=args.batch_size,
        seed=args.seed,
        iw_samples=args.iw_samples,
        progress=not args.json,
        budget=args.pass_size or DEFAULT_BUDGET,
        precision=args.precision,
        fid=args.fid,
        fid_samples=args.fid_samples,
        **reconstruction_options(args),
    )
    if args.disentanglement:
        from ..evaluation import disentanglement

        stats["disentanglement"] = disentanglement.of_run(model, args.data, seed=args.seed)
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return 0
    print(summary(stats, examples.dataset))
    if args.disentanglement:
        print(disentanglement.summary_line(stats["disentanglement"]))
    return 0


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
}
