"""`vaekit train-prior RUN`: a prior over a VQ-VAE run's codes (a gated PixelCNN), trained
on the codes of the run's own training data and saved beside it, so that `vaekit sample`,
`evaluate` and `report` use it. Like every cli module: parse, call the library, print."""

from __future__ import annotations

import argparse
import shlex

from .parser import count


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number; got {text!r}") from None
    if not 0 < value <= 10:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 10; got {text}")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train-prior",
        help="train a prior over a VQ-VAE run's codes, so that it can sample",
        description="Train a gated PixelCNN prior over the codes of a VQ-VAE run (model."
        "posterior vq) on the codes of the run's training rows, keep the epoch with the "
        "lowest NLL on its validation rows, and save it beside the run "
        "(code_prior.safetensors, code_prior.json). It holds the run's lock while it trains and "
        "saves its state at each epoch's end and on Ctrl-C (code_prior_state.pt): --resume "
        "continues it.",
    )
    p.add_argument("run", help="a VQ-VAE run directory written by `vaekit train`")
    p.add_argument("--epochs", type=count(1, 100_000), default=10)
    p.add_argument("--batch-size", type=count(1, 1_000_000), default=64)
    p.add_argument("--lr", type=_rate, default=1e-3, help="Adam's learning rate (default 1e-3)")
    p.add_argument("--channels", type=count(1, 4096), default=64, help="per stack (default 64)")
    p.add_argument("--layers", type=count(1, 256), default=5, help="gated layers (default 5)")
    p.add_argument(
        "--kernel", type=count(1, 63), default=3, help="odd width of their convolutions (default 3)"
    )
    p.add_argument("--seed", type=count(0, 2**63 - 1), default=0)
    p.add_argument(
        "--data",
        metavar="SOURCE",
        help="the examples whose codes train the prior (default: the data the run trained on)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default cpu)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the train-prior saved in RUN (code_prior_state.pt: an interrupted one, "
        "or a finished one with more --epochs), with the same options",
    )


def cmd_train_prior(args: argparse.Namespace) -> int:
    from ..training.prior import train_prior

    result = train_prior(
        args.run,
        data=args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        channels=args.channels,
        layers=args.layers,
        kernel=args.kernel,
        seed=args.seed,
        device=args.device,
        progress=True,
        resume=args.resume,
    )
    record = result.model.code_prior.training_record if result.model.code_prior else {}
    print(
        f"code prior written to {result.saved_in}: code_prior.safetensors, code_prior.json "
        f"(epoch {record.get('best_epoch')}, validation NLL {record.get('val_nll', 0):.3f} nats "
        "per example)"
    )
    print(f"next: vaekit sample {shlex.quote(str(args.run))}")
    return 0


COMMANDS = {"train-prior": cmd_train_prior}
