"""Commands that show what a model learned: pictures, the HTML report, the latent explorer."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .core import (
    COMMON_HELP,
    add_data_flags,
    add_reconstruction_flags,
    load_run,
    reconstruction_options,
)
from .generate import _out_path
from .parser import count


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """report, explore, and the pictures: manifold, latents, curves, kl."""
    _report_parser(sub)
    _explore_parser(sub)
    _manifold_parser(sub)
    _latents_parser(sub)
    _curves_parser(sub)
    _kl_parser(sub)


def _report_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="write RUN/report.html: metrics, pictures, curves, config",
        description="Evaluate a run and write one self-contained HTML page "
        f"(images embedded, nothing fetched) with its pictures. {COMMON_HELP}.",
    )
    p.add_argument("run")
    p.add_argument(
        "--iw-samples",
        type=count(0, 1_000_000),
        default=100,
        metavar="K",
        help="importance samples per image for log p(x); 0 skips it (default 100)",
    )
    p.add_argument(
        "--max-test",
        type=count(1, 10**9),
        default=1000,
        metavar="N",
        help="evaluate and draw the first N test images (default 1000)",
    )
    p.add_argument("--batch-size", type=count(1, 2**20), default=1000)
    p.add_argument("--seed", type=count(0, 2**63 - 1), default=0)
    p.add_argument("--out", help="directory for the report and its pictures (default: RUN)")
    add_reconstruction_flags(p)
    add_data_flags(p)


def _explore_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "explore",
        help="a latent explorer in the browser (local web server)",
        description="Serve a page with one slider per latent dimension (a VQ-VAE: one "
        "box per code), the decoded image, draws from the model's own prior, encoding of "
        "test images and interpolation. Binds "
        f"127.0.0.1 unless --host says otherwise. {COMMON_HELP}.",
    )
    p.add_argument("run")
    p.add_argument("--port", type=count(0, 65535), default=8000, help="TCP port (0: any free port)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    p.add_argument("--verbose", action="store_true", help="log every request")
    add_data_flags(p)


def _manifold_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "manifold",
        help="decode a grid over two latent dimensions (PNG)",
        description="The learned manifold as in Kingma & Welling's Appendix A: "
        "a grid through the inverse Gaussian CDF over two latent dimensions "
        "(the two most active unless --dims), the others at 0.",
    )
    p.add_argument("run")
    p.add_argument("--n", type=count(1, 100), default=20, help="grid side (default 20)")
    p.add_argument("--dims", help="two latent dimensions, e.g. 0,3 (default: most active)")
    p.add_argument(
        "--max-test",
        type=count(1, 10**9),
        default=1000,
        metavar="N",
        help="test images used to find the most active dimensions",
    )
    p.add_argument("--out", help="PNG path (default: RUN/manifold.png)")
    add_data_flags(p, image_size=False)


def _latents_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("latents", help="test-set posterior means coloured by label (PNG)")
    p.add_argument("run")
    p.add_argument(
        "--max-test",
        type=count(1, 10**9),
        default=2000,
        metavar="N",
        help="number of test images to plot (default 2000)",
    )
    p.add_argument("--out", help="PNG path (default: RUN/latents.png)")
    add_data_flags(p)


def _curves_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("curves", help="training curves from metrics.jsonl (PNG)")
    p.add_argument("run")
    p.add_argument("--out", help="PNG path (default: RUN/curves.png)")


def _kl_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("kl", help="KL per latent dimension over the test set (PNG)")
    p.add_argument("run")
    p.add_argument("--max-test", type=count(1, 10**9), default=1000, metavar="N")
    p.add_argument("--out", help="PNG path (default: RUN/kl.png)")
    add_data_flags(p)


def _out(args: argparse.Namespace, name: str) -> Path:
    from ..viz.figures import FILES

    return _out_path(args, FILES[name])


def _test_set(args: argparse.Namespace) -> tuple[Any, Any, Any, list[str]]:
    model, examples = load_run(args)
    x = examples.x[: args.max_test]
    y = None if examples.y is None else examples.y[: args.max_test]
    return model, x, y, examples.class_names


def cmd_report(args: argparse.Namespace) -> int:
    from ..io import outputs
    from ..viz.report import build_report

    if args.out or Path(args.run).is_dir():  # checked before the run and its data load
        outputs.check_dir(args.out or args.run)
    path = build_report(
        args.run,
        out_dir=args.out,
        iw_samples=args.iw_samples,
        max_test=args.max_test,
        seed=args.seed,
        batch_size=args.batch_size,
        progress=True,
        data=args.data,
        split=args.split,
        image_size=args.image_size,
        **reconstruction_options(args),
    )
    print(path)
    return 0


def cmd_explore(args: argparse.Namespace) -> int:
    from ..viz.explore import serve

    serve(
        args.run,
        args.host,
        args.port,
        args.verbose,
        data=args.data,
        split=args.split,
        image_size=args.image_size,
    )
    return 0


def _parse_dims(text: str | None, latent_dim: int) -> tuple[int, int] | None:
    from ..errors import ConfigError

    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if (
        len(parts) != 2
        or not all(p.isdigit() for p in parts)
        or parts[0] == parts[1]
        or any(int(p) >= latent_dim for p in parts)
    ):
        raise ConfigError(
            f"--dims must be two different latent dimensions from 0 to "
            f"{latent_dim - 1}, like 0,1; got {text!r}"
        )
    return int(parts[0]), int(parts[1])


def cmd_manifold(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..viz import figures, grid

    out = _out(args, "manifold")
    model, x, y, _ = _test_set(args)
    if model.latent_dim < 2:
        raise ConfigError(
            "a manifold needs a latent space of at least 2 dimensions; this model has 1"
        )
    images = figures.manifold(model, args.n, _parse_dims(args.dims, model.latent_dim), x, y)
    print(grid.save_grid(out, images, nrow=args.n))
    return 0


def cmd_latents(args: argparse.Namespace) -> int:
    from ..viz import figures

    out = _out(args, "latents")
    model, x, y, names = _test_set(args)
    print(figures.save_png(out, figures.latent_scatter(model, x, y, names)))
    return 0


def cmd_curves(args: argparse.Namespace) -> int:
    from ..errors import VaekitError
    from ..models.pretrained import resolve
    from ..tracking import read_metrics
    from ..viz import figures

    out = _out(args, "curves")
    run_dir = resolve(args.run)
    records = read_metrics(run_dir)
    image = figures.training_curves(records)
    skipped = f" ({records.skipped} malformed lines or values skipped)" if records.skipped else ""
    if image is None:
        raise VaekitError(
            f"{run_dir} has no training curves: metrics.jsonl is missing or "
            f"holds no train_/val_ nelbo, recon or kl values{skipped}"
        )
    if skipped:
        print(f"vaekit: metrics.jsonl of {run_dir}: {skipped.strip(' ()')}", file=sys.stderr)
    print(figures.save_png(out, image))
    return 0


def cmd_kl(args: argparse.Namespace) -> int:
    from ..viz import figures

    out = _out(args, "kl")
    model, x, y, _ = _test_set(args)
    print(figures.save_png(out, figures.kl_chart(model, x, y)))
    return 0


COMMANDS = {
    "report": cmd_report,
    "explore": cmd_explore,
    "manifold": cmd_manifold,
    "latents": cmd_latents,
    "curves": cmd_curves,
    "kl": cmd_kl,
}
