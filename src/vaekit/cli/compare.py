"""`vaekit compare A B ... --data SOURCE`: several models on the same held-out examples, in
one table (or JSON). Like every cli module: parse, call the library, print; nothing else."""

from __future__ import annotations

import argparse
import json

from .core import add_data_flags, add_reconstruction_flags, reconstruction_options
from .parser import count


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """compare."""
    p = sub.add_parser(
        "compare",
        help="evaluate several models on the same examples: PSNR, SSIM, LPIPS, rFID",
        description="Evaluate several models (run directories, model folders, hf://OWNER/NAME, "
        "diffusers:PATH_OR_REPO or a folder diffusers saved) on the same examples of --data "
        "and print one table: PSNR, SSIM (and LPIPS, rFID when asked) of the reconstructions, "
        "the latent shape and the parameter count. Each model reads the data at its own "
        "image size; diffusers models at the first run's (else --image-size, else their "
        "sample_size).",
    )
    p.add_argument("models", nargs="+", metavar="MODEL")
    add_data_flags(p)
    add_reconstruction_flags(p)
    p.add_argument(
        "--fid-samples",
        type=count(2, 1_000_000),
        default=10000,
        metavar="N",
        help="images the rFID compares (default 10000)",
    )
    p.add_argument("--batch-size", type=count(1, 2**20), default=1000)
    p.add_argument("--seed", type=count(0, 2**63 - 1), default=0)
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")


def cmd_compare(args: argparse.Namespace) -> int:
    from ..compare import compare, table
    from ..errors import ConfigError

    if args.data is None:
        raise ConfigError("compare needs --data SOURCE: the examples every model is evaluated on")
    rows = compare(
        args.models,
        args.data,
        split=args.split,
        image_size=args.image_size,
        batch_size=args.batch_size,
        seed=args.seed,
        fid_samples=args.fid_samples,
        progress=not args.json,
        **reconstruction_options(args),
    )
    print(json.dumps(rows, indent=2) if args.json else table(rows))
    return 0


COMMANDS = {"compare": cmd_compare}
