"""What there is to train on: the named datasets (`vaekit data fetch NAME`, `vaekit data
list`) and the configuration presets vaekit ships (`vaekit presets`). Like every cli
module: parse, call the library, print; nothing else."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .parser import Parser

if TYPE_CHECKING:
    from ..config import Config


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The datasets and the presets: data (fetch, list), presets."""
    _data_parser(sub)
    _presets_parser(sub)


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
        posterior = "" if cfg.model.posterior == "gaussian" else f" posterior={cfg.model.posterior}"
        print(
            f"{name:18} data={cfg.data.name} arch={cfg.model.arch}{posterior} "
            f"latent={latent_text(cfg)} likelihood={cfg.model.likelihood}"
        )
    return 0


def latent_text(cfg: Config) -> str:
    """The latent of the model a config builds: '4x16x16' for a spatial map (as the model
    computes it from the images' size; 'Cx(H/f)x(W/f)' where the size comes from a named
    dataset), '20' for a vector, or "model.init's" (the starting model decides)."""
    from ..data.sources import DATASET_NAMES
    from ..diffusers import autoencoderkl, vqmodel
    from ..diffusers.init import latent_shape
    from ..models.conv import latent_map_shape

    m = cfg.model
    if m.init:  # the starting model's config.json sets it (not read here: maybe a download)
        return "model.init's"
    if m.arch != "autoencoderkl" and not (m.arch == "conv" and m.latent_channels):
        return str(m.latent_dim)
    channels = cfg.data.channels or 3
    # a VQModel's codes are model.code_dim wide (its vq_embed_dim), if set
    width = (m.code_dim if m.posterior == "vq" and m.arch == "autoencoderkl" else 0) or (
        m.latent_channels or 4
    )
    if cfg.data.name in DATASET_NAMES:  # their own size, not data.image_size's
        factor = 2 ** (len(m.channels) - (m.arch == "autoencoderkl"))
        return f"{width}x(H/{factor})x(W/{factor})"
    shape = (channels, cfg.data.image_size, cfg.data.image_size)
    if m.arch == "conv":
        c, h, w = latent_map_shape(shape, list(m.channels), m.latent_channels)
    else:
        layout = vqmodel if m.posterior == "vq" else autoencoderkl
        encoder_args = layout.from_model_config(m, channels)[0]
        c, h, w = latent_shape(encoder_args, shape, "model.arch autoencoderkl")
    return f"{c}x{h}x{w}"


COMMANDS = {
    "data": cmd_data,
    "presets": cmd_presets,
}
