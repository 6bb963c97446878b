"""The commands that use a trained model on data: encode (the posterior of every example)
and score (per-example -ELBO and log p(x)), into .npy, .npz, .parquet or .csv. Like every
cli module: parse, call the library, print; nothing else."""

from __future__ import annotations

import argparse
from typing import Any

from .core import COMMON_HELP
from .parser import count

DATA_HELP = (
    "the examples: any data source vaekit reads (a dataset name, an .npz, .npy, .csv or "
    ".parquet file, a folder of images, hf:OWNER/NAME), read with the run's data settings "
    "(default: the run's own data)"
)
SPLIT_HELP = (
    "which examples: train, val, test or all (default: all of --data, else test); a source "
    "too small to hold out a test split (one example) is read with all only"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Encode and score data with a trained model."""
    p = sub.add_parser(
        "encode",
        help="posterior means and log-variances of every example, into a file",
        description=f"Encode examples with a trained model. {COMMON_HELP}. .npy holds the "
        "posterior means; .npz mu, logvar (and z), id, label and file; .parquet and .csv one "
        "row per example (z0.. means, logvar0.., sample{k}_z{d}).",
    )
    _common(p, "latents.npz")
    p.add_argument(
        "--samples",
        type=count(0, 10_000),
        default=0,
        metavar="K",
        help="also K draws z ~ q(z|x) per example, seeded by --seed (not in .npy)",
    )
    p = sub.add_parser(
        "score",
        help="per-example -ELBO, its terms and log p(x), into a file",
        description=f"Score examples with a trained model (anomaly detection). {COMMON_HELP}. "
        "The columns: nelbo, recon, kl (nats), with --iw-samples log_px and iw_ess; the mean "
        "of nelbo is what `vaekit evaluate` prints at the same --batch-size and --seed.",
    )
    _common(p, "scores.parquet")
    p.add_argument(
        "--iw-samples",
        type=count(0, 1_000_000),
        default=0,
        metavar="K",
        help="also the importance-weighted estimate of log p(x) with K samples",
    )
    p.add_argument("--sort", action="store_true", help="most anomalous first")


def _common(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument("run")
    p.add_argument("--data", metavar="SOURCE", help=DATA_HELP)
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help=f".npy, .npz, .parquet or .csv (e.g. {example}; tables need vaekit[tables])",
    )
    p.add_argument("--split", choices=("train", "val", "test", "all"), help=SPLIT_HELP)
    p.add_argument(
        "--batch-size",
        type=count(1, 2**20),
        default=1000,
        metavar="N",
        help="examples read and encoded at a time: bounds the memory (default 1000)",
    )
    p.add_argument("--seed", type=count(0, 2**63 - 1), default=0)


def _model_and_data(run: str, data: str | None, split: str | None) -> tuple[Any, Any, str]:
    """The model, its data (--data read with the run's data settings, else the run's own)
    and the split asked for (default: all of --data, else the test split)."""
    from ..loading import data_of, load

    model = load(run)  # a run, a model folder, hf://... or a diffusers AutoencoderKL
    split = split or ("test" if data is None else "all")
    return model, data_of(model, data, split=split, progress=data is not None, source=run), split


def _prepare(args: argparse.Namespace) -> tuple[Any, Any, str]:
    from ..io import outputs, records

    path = outputs.check_file(args.out, example="latents.npz")
    records.check_format(path)
    if args.command == "encode" and args.samples and path.suffix.lower() == ".npy":
        from ..errors import ConfigError

        raise ConfigError(
            f"--out {path}: an .npy file holds the posterior means only; write .npz, .parquet "
            "or .csv to keep --samples"
        )
    return _model_and_data(args.run, args.data, args.split)


def cmd_encode(args: argparse.Namespace) -> int:
    from ..evaluation.encode import encode

    model, data, split = _prepare(args)
    path = encode(
        model,
        data,
        out=args.out,
        split=split,
        samples=args.samples,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=True,
    )
    print(f"encoded {_which(split)} examples of {data.name} into {path}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from ..evaluation.score import score

    model, data, split = _prepare(args)
    path = score(
        model,
        data,
        out=args.out,
        split=split,
        iw_samples=args.iw_samples,
        sort=args.sort,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=True,
    )
    print(f"scored {_which(split)} examples of {data.name} into {path}")
    return 0


def _which(split: str) -> str:
    return "all" if split == "all" else f"the {split}"


COMMANDS = {"encode": cmd_encode, "score": cmd_score}
