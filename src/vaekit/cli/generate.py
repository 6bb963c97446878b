"""The commands that draw with a trained model: sample (decoded draws from the prior),
reconstruct (test images above their reconstructions) and interpolate (a path between
test images' posterior means), each into a PNG grid or a file of numbers (.npy; .npz;
a table model's rows .csv or .parquet with its training table's column names). Like every
cli module: parse, call the library, print; nothing else."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .core import add_data_flags, add_image_size_flag, load_run
from .parser import count


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The pictures a model draws: sample, reconstruct, interpolate."""
    _sample_parser(sub)
    _reconstruct_parser(sub)
    _interpolate_parser(sub)


def _sample_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sample", help="decode samples from the prior into a PNG grid")
    p.add_argument("run")
    p.add_argument("--n", type=count(1, 10_000), default=64)
    p.add_argument("--seed", type=count(0, 2**63 - 1), default=0)
    p.add_argument("--label", help="class-conditional models: class index or name")
    p.add_argument(
        "--out",
        help="PNG path, or .npy for numbers; a table model's rows also .csv or .parquet, "
        "with the training table's column names (default: RUN/samples.png)",
    )
    add_image_size_flag(p)


def _reconstruct_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("reconstruct", help="originals above, reconstructions below")
    p.add_argument("run")
    p.add_argument("--n", type=count(1, 10_000), default=16)
    p.add_argument(
        "--out",
        help="PNG path (originals above reconstructions), or numbers: .npy the "
        "reconstructions (sample's layout), .npz the originals `x` and their "
        "`reconstruction`; a table model's also .csv or .parquet (default: "
        "RUN/reconstructions.png)",
    )
    add_data_flags(p)


def _interpolate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("interpolate", help="decode a path between test images' posterior means")
    p.add_argument("run")
    p.add_argument("--steps", type=count(1, 1000), default=10)
    p.add_argument("--pairs", type=count(1, 1000), default=4)
    p.add_argument("--method", choices=("linear", "slerp"), default="linear")
    p.add_argument("--seed", type=count(0, 2**63 - 1), default=0)
    p.add_argument("--out", help="PNG path, or .npy for numbers (default: RUN/interpolation.png)")
    add_data_flags(p)


def _out_path(args: argparse.Namespace, default: str) -> Path:
    """Where a picture command writes, checked before anything loads: --out, else
    RUN/DEFAULT (a Hub or diffusers model: ./DEFAULT, not its cache or folder)."""
    from ..diffusers.model import reference_of
    from ..io import outputs

    if args.out:
        return outputs.check_file(args.out, example=default)
    if str(args.run).startswith("hf://") or reference_of(args.run) is not None:
        return outputs.check_file(default)  # never into a cache or another library's model
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
    from ..loading import load

    out = _out_path(args, "samples.png")
    model = load(args.run, image_size=args.image_size)
    label = _label(model, args.label)
    if model.conditional and label is None:
        raise ConfigError("this model is class-conditional: pass --label (a class name or index)")
    images = model.sample(args.n, label, generator=torch.Generator().manual_seed(args.seed))
    _save_examples(out, images, model, nrow=8)
    print(out)
    return 0


def _save_examples(out: Path, examples: Any, model: Any, nrow: int, **more: Any) -> None:
    """Examples in the user's units: as numbers (.npy; .npz with `more` arrays beside them;
    a table model's rows also .csv / .parquet under its training table's column names), else
    as a PNG grid (which a table's rows, 1x1 "pixels" each, cannot be)."""
    from ..errors import ConfigError
    from ..io import outputs
    from ..viz import grid

    if out.suffix in outputs.NUMBERS:
        if out.suffix in (".csv", ".parquet") and not model.is_table:
            raise ConfigError(
                f"--out {out}: a {out.suffix} file holds table rows and this model's examples "
                f"are images; write them as numbers with --out {out.with_suffix('.npy')}"
            )
        arrays = {"x": examples, **more} if more else {"x": examples}
        numpy = {k: v.detach().cpu().numpy() for k, v in arrays.items()}
        outputs.write_numbers(out, numpy, getattr(model, "column_names", []))
        return
    if model.is_table:
        raise ConfigError(
            f"this model's examples are table rows, which make no picture; write them as "
            f"numbers with --out {out.with_suffix('.csv')} (or {out.with_suffix('.npy').name}, "
            f"{out.with_suffix('.parquet').name})"
        )
    grid.save_grid(out, examples, nrow=nrow, scale=grid.auto_scale(model.input_shape[1]))


def cmd_reconstruct(args: argparse.Namespace) -> int:
    import torch

    from ..data import to_float
    from ..io.outputs import NUMBERS

    out = _out_path(args, "reconstructions.png")
    model, examples = load_run(args)
    n = min(args.n, examples.x.shape[0])
    x = to_float(examples.x[:n])
    x = x.flatten(1) if model.is_table else x  # rows (n, F) in, rows out
    y = examples.y[:n] if model.conditional and examples.y is not None else None
    recon = model.reconstruct(x, y)
    if out.suffix not in NUMBERS:  # a picture: the originals above their reconstructions
        _save_examples(out, torch.cat([x, recon]), model, nrow=n)
    else:  # numbers: sample's layout; an .npz holds the originals beside them
        more = {"reconstruction": recon} if out.suffix == ".npz" else {}
        _save_examples(out, x if more else recon, model, nrow=n, **more)
    print(out)
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    import torch

    from ..data import to_float

    out = _out_path(args, "interpolation.png")
    model, examples = load_run(args)
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(examples.x.shape[0], generator=g)[: 2 * args.pairs]
    if idx.numel() < 2:
        from ..errors import DataError

        raise DataError(f"interpolation needs at least two examples; {examples.name} has one")
    pairs = idx.numel() // 2
    x = to_float(examples.x[idx])
    y = examples.y[idx] if model.conditional and examples.y is not None else None
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


COMMANDS = {
    "sample": cmd_sample,
    "reconstruct": cmd_reconstruct,
    "interpolate": cmd_interpolate,
}
