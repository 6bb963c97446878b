"""`vaekit export RUN --format diffusers OUT`: a trained model in another library's format."""

from __future__ import annotations

import argparse
import math

FORMATS = ("diffusers",)


def _factor(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number; got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0; got {text!r}")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "export",
        help="write a trained model in another library's format (diffusers)",
        description="Write RUN's model as a folder that diffusers.AutoencoderKL."
        "from_pretrained(OUT) loads: config.json and diffusion_pytorch_model.safetensors, "
        "written by diffusers itself. Models of the autoencoderkl architecture export "
        "(model.arch autoencoderkl, or model.init diffusers:...). Needs vaekit[diffusers].",
    )
    p.add_argument("run", metavar="RUN", help="a run directory written by `vaekit train`")
    p.add_argument(
        "out", metavar="OUT", help="the folder to write (new or empty; not in or around RUN)"
    )
    p.add_argument("--format", required=True, choices=FORMATS, help="the format to write")
    p.add_argument(
        "--scaling-factor",
        type=_factor,
        metavar="X",
        help="the config's scaling_factor, which diffusion pipelines multiply latents by "
        "(default: the one of the model.init model, else diffusers' 0.18215); set it to "
        "1 / the standard deviation of your latents",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier export in OUT: a folder holding only an AutoencoderKL's "
        "config.json and diffusion_pytorch_model* files (never a run directory)",
    )


def cmd_export(args: argparse.Namespace) -> int:
    from ..io.export import check_target, write_diffusers
    from ..models import load
    from ..models.autoencoderkl import diffusers_model

    check_target(args.out, args.overwrite, args.run)  # before anything loads
    model = load(args.run)
    config, state = diffusers_model(model)
    if args.scaling_factor is not None:
        config["scaling_factor"] = args.scaling_factor
    out = write_diffusers(args.out, config, state, overwrite=args.overwrite, run=args.run)
    print(f"wrote {out}: config.json, diffusion_pytorch_model.safetensors")
    print(f"load it with: diffusers.AutoencoderKL.from_pretrained({str(out)!r})")
    return 0


COMMANDS = {"export": cmd_export}
