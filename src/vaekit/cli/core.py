"""The core commands. Like every cli module: parse, call the library, print; nothing else."""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path
from typing import Any

from .parser import Parser, count

COMMON_HELP = "RUN is a run directory written by `vaekit train` (or hf://OWNER/NAME)"


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
    """The core commands: train, evaluate, sample, reconstruct, interpolate, data, presets."""
    _train_parser(sub)
    _evaluate_parser(sub)
    _sample_parser(sub)
    _reconstruct_parser(sub)
    _interpolate_parser(sub)
    _data_parser(sub)
    _presets_parser(sub)


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
    p.add_argument("--batch-size", type=count(1, 2**20), default=1000)
    p.add_argument("--seed", type=count(0, 2**63 - 1), default=0)
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")


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
    lpips = None if args.lpips == "none" else args.lpips
    if lpips is not None and any(weights):
        lpips = build_perceptual(lpips, "cpu", *weights)
    return {"rfid": args.rfid, "lpips": lpips, "fid_weights": args.fid_weights}


def _sample_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sample", help="decode samples from the prior into a PNG grid")
    p.add_argument("run")
    p.add_argument("--n", type=count(1, 10_000), default=64)
    p.add_argument("--seed", type=count(0, 2**63 - 1), default=0)
    p.add_argument("--label", help="class-conditional models: class index or name")
    p.add_argument("--out", help="PNG path, or .npy for numbers (default: RUN/samples.png)")


def _reconstruct_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("reconstruct", help="originals above, reconstructions below")
    p.add_argument("run")
    p.add_argument("--n", type=count(1, 10_000), default=16)
    p.add_argument("--out", help="PNG path, or .npy for numbers (default: RUN/reconstructions.png)")


def _interpolate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("interpolate", help="decode a path between test images' posterior means")
    p.add_argument("run")
    p.add_argument("--steps", type=count(1, 1000), default=10)
    p.add_argument("--pairs", type=count(1, 1000), default=4)
    p.add_argument("--method", choices=("linear", "slerp"), default="linear")
    p.add_argument("--seed", type=count(0, 2**63 - 1), default=0)
    p.add_argument("--out", help="PNG path, or .npy for numbers (default: RUN/interpolation.png)")


def _data_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("data", help="fetch or list datasets")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=Parser)
    f = data_sub.add_parser("fetch", help="find or download a named dataset")
    f.add_argument("name")
    f.add_argument(
        "--root", default="", help="data directory (default: $VAEKIT_DATA or ~/.cache/vaekit)"
    )
    f.add_argument("--no-download", action="store_true", help="only look for local files")
    data_sub.add_parser("list", help="named datasets and where they are found")


def _presets_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub.add_parser("presets", help="list the configuration presets shipped with vaekit")


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


def _load_run(run: str) -> tuple[Any, Any]:
    """The model and its test set."""
    from ..data import load_data
    from ..models import load

    model = load(run)
    cfg = model.training_config()
    data = load_data(cfg.data, seed=cfg.train.seed, progress=False)
    return model, data


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation.evaluate import evaluate
    from ..evaluation.likelihood import DEFAULT_BUDGET
    from ..evaluation.summary import summary

    model, data = _load_run(args.run)
    y = data.y_test if model.conditional else None
    stats = evaluate(
        model,
        data.x_test,
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
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return 0
    print(summary(stats, data.name))
    return 0


def _out_path(args: argparse.Namespace, default: str) -> Path:
    """Where a picture command writes, checked before anything loads: --out, else
    RUN/DEFAULT (a Hub model: ./DEFAULT, not its cache)."""
    from ..io import outputs

    if args.out:
        return outputs.check_file(args.out, example=default)
    if str(args.run).startswith("hf://"):
        return outputs.check_file(default)
    path = Path(args.run) / default
    if path.parent.is_dir():  # a RUN that is no folder is named by the load instead
        outputs.check_file(path, example=default)
    return path


def _label(model: Any, label: str | None) -> int | None:
    from ..errors import ConfigError

    if label is None:
        return None
    if not model.conditional:
        raise ConfigError("--label needs a class-conditional model (model.conditional: true)")
    names = list(getattr(model, "class_names", []))
    if label in names:
        return names.index(label)
    if label.isdigit() and int(label) < model.num_classes:
        return int(label)
    raise ConfigError(
        f"--label {label!r} is not a class of this model; classes: "
        f"{', '.join(names) or model.num_classes}"
    )


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from ..errors import ConfigError
    from ..models import load

    out = _out_path(args, "samples.png")
    model = load(args.run)
    label = _label(model, args.label)
    if model.conditional and label is None:
        raise ConfigError("this model is class-conditional: pass --label (a class name or index)")
    images = model.sample(args.n, label, generator=torch.Generator().manual_seed(args.seed))
    _save_examples(out, images, model, nrow=8)
    print(out)
    return 0


def _save_examples(out: Path, examples: Any, model: Any, nrow: int) -> None:
    """Examples in the user's units: as numbers in an .npy file, else as a PNG grid (which a
    table's rows, 1x1 "pixels" each, cannot be)."""
    from ..errors import ConfigError
    from ..io import fileio
    from ..viz import grid

    if out.suffix == ".npy":
        import io

        import numpy as np

        buffer = io.BytesIO()
        np.save(buffer, examples.cpu().numpy(), allow_pickle=False)
        fileio.write_bytes(out, buffer.getvalue())
        return
    if model.is_table:
        raise ConfigError(
            f"this model's examples are table rows, which make no picture; write them as "
            f"numbers with --out {out.with_suffix('.npy')}"
        )
    grid.save_grid(out, examples, nrow=nrow, scale=grid.auto_scale(model.input_shape[1]))


def cmd_reconstruct(args: argparse.Namespace) -> int:
    import torch

    from ..data import to_float

    out = _out_path(args, "reconstructions.png")
    model, data = _load_run(args.run)
    n = min(args.n, data.x_test.shape[0])
    x = to_float(data.x_test[:n])
    y = data.y_test[:n] if model.conditional else None
    images = torch.cat([x, model.reconstruct(x, y)])
    _save_examples(out, images, model, nrow=n)
    print(out)
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    import torch

    from ..data import to_float

    out = _out_path(args, "interpolation.png")
    model, data = _load_run(args.run)
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(data.x_test.shape[0], generator=g)[: 2 * args.pairs]
    if idx.numel() < 2:
        from ..errors import DataError

        raise DataError("interpolation needs at least two test images")
    pairs = idx.numel() // 2
    x = to_float(data.x_test[idx])
    y = data.y_test[idx] if model.conditional else None
    path = model.interpolate(
        x[:pairs],
        x[pairs : 2 * pairs],
        args.steps,
        args.method,
        None if y is None else y[:pairs],
        None if y is None else y[pairs : 2 * pairs],
    )  # (P, steps, C, H, W)
    _save_examples(out, path.flatten(0, 1) if out.suffix != ".npy" else path, model, args.steps)
    print(out)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from ..data import sources

    if args.data_command == "fetch":
        directory = sources.fetch(args.name, args.root, download=not args.no_download)
        print(directory)
        return 0
    for name in sources.DATASET_NAMES:
        if name == "noise":
            print("noise           generated on the fly (no files)")
            continue
        found = sources.find_local(name)
        where = str(found) if found else "not found (vaekit data fetch " + name + ")"
        print(f"{name:15} {where}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from ..config import load_config, preset_names

    for name in preset_names():
        cfg = load_config(name)
        print(
            f"{name:18} data={cfg.data.name} arch={cfg.model.arch} latent={cfg.model.latent_dim}"
            f" likelihood={cfg.model.likelihood}"
        )
    return 0


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "sample": cmd_sample,
    "reconstruct": cmd_reconstruct,
    "interpolate": cmd_interpolate,
    "data": cmd_data,
    "presets": cmd_presets,
}
