"""`vaekit export RUN --format diffusers OUT`: a trained model in another library's format."""

from __future__ import annotations

import argparse
import math
from typing import Any

FORMATS = ("diffusers",)
MEASURE = "measure"


def _factor(text: str) -> float | str:
    if text == MEASURE:
        return MEASURE
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number or {MEASURE}; got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0; got {text!r}")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "export",
        help="write a trained model in another library's format (diffusers)",
        description="Write RUN's model as a folder that diffusers.AutoencoderKL."
        "from_pretrained(OUT) loads (diffusers.VQModel's, for a VQ-VAE): config.json and "
        "diffusion_pytorch_model.safetensors, written by diffusers itself. Models of the "
        "autoencoderkl architecture export (model.arch autoencoderkl, with model.posterior "
        "vq a VQModel, or model.init diffusers:...). Needs vaekit[diffusers].",
    )
    p.add_argument("run", metavar="RUN", help="a run directory written by `vaekit train`")
    p.add_argument(
        "out", metavar="OUT", help="the folder to write (new or empty; not in or around RUN)"
    )
    p.add_argument("--format", required=True, choices=FORMATS, help="the format to write")
    p.add_argument(
        "--scaling-factor",
        type=_factor,
        metavar="X|measure",
        help="the config's scaling_factor, which diffusion pipelines multiply latents by. "
        "Default: measured on the run's training images (1 / the standard deviation of "
        "posterior samples of up to 128 evenly spaced images); a run started from "
        "model.init keeps its starting model's unless you pass measure",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier export in OUT: a folder holding only an AutoencoderKL's "
        "(or VQModel's) config.json and diffusion_pytorch_model* files (never a run directory)",
    )


def cmd_export(args: argparse.Namespace) -> int:
    from functools import partial

    from ..diffusers import autoencoderkl, vqmodel
    from ..diffusers.export import check_target, write_diffusers
    from ..diffusers.export_checks import check_rebuilt, check_units
    from ..models import load

    check_target(args.out, args.overwrite, args.run)  # before anything loads
    model = load(args.run)
    layout = vqmodel if vqmodel.is_vqmodel(model) else autoencoderkl
    config, state = layout.diffusers_model(model)
    check_units(model)
    config["scaling_factor"] = choose_factor(args, model, config)
    out = write_diffusers(
        args.out,
        config,
        state,
        overwrite=args.overwrite,
        run=args.run,
        check=partial(check_rebuilt, model),
        class_name=layout.CLASS_NAME,
    )
    print(f"wrote {out}: config.json, diffusion_pytorch_model.safetensors")
    print(f"load it with: diffusers.{layout.CLASS_NAME}.from_pretrained({str(out)!r})")
    return 0


def choose_factor(args: argparse.Namespace, model: Any, config: dict[str, Any]) -> float:
    """The factor --scaling-factor gives, model.init's (kept unless `measure` is asked
    for), or the one measured on the run's training images; printed with its origin."""
    from ..diffusers.export import check_factor
    from ..evaluation.latent_scale import scaling_factor, training_images

    if isinstance(args.scaling_factor, float):
        print(f"scaling_factor {args.scaling_factor:.6g} (--scaling-factor)")
        return args.scaling_factor
    init = model.run_config.model.init if model.run_config is not None else ""
    if args.scaling_factor is None and init:
        where = f"the scaling_factor {args.run} keeps from model.init {init}"
        factor = check_factor(config.get("scaling_factor", 0.18215), where)
        print(f"scaling_factor {factor:.6g}, kept from model.init {init}", end="")
        print(" (to measure it on the training images: --scaling-factor measure)")
        return factor
    factor, n = scaling_factor(model, training_images(model, args.run))
    print(
        f"scaling_factor {factor:.6g}: 1 / the standard deviation of the latents (posterior "
        f"samples) of {n} training images"
    )
    return factor


COMMANDS = {"export": cmd_export}
