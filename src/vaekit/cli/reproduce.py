"""`vaekit reproduce PAPER`: re-run a paper's experiments and draw its figures."""

from __future__ import annotations

import argparse
import json

from .parser import count

PAPERS = ("kingma2013",)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """reproduce"""
    p = sub.add_parser(
        "reproduce",
        help="re-run a paper's experiment: kingma2013 (Figure 2, Appendix A)",
        description="Reproduce Kingma & Welling (2013): Figure 2, the lower "
        "bound on training and test sets against the training samples "
        "evaluated, for latent sizes 3, 5, 10, 20 and 200 (500 tanh units, "
        "minibatches of 100, Adagrad), on MNIST when it is on this machine, "
        "else Fashion-MNIST; and the 2-D manifold of Appendix A. Writes "
        "figure2.png, figure2.json, manifold.png and one model per latent size.",
    )
    p.add_argument("paper", choices=PAPERS)
    p.add_argument(
        "--budget",
        default="small",
        metavar="small|full",
        help="small: 10^6 training samples per latent size, the bound on 1000 "
        "train + 1000 test images (~10 min on 2 CPU cores); full: the paper's "
        "10^8 samples on the whole sets (hours on a CPU). Default: small",
    )
    p.add_argument("--out", help="output directory (default: runs/kingma2013-BUDGET)")
    p.add_argument(
        "--data",
        help="dataset instead of MNIST / Fashion-MNIST (a name, .npz or "
        "folder of 28x28 grayscale images)",
    )
    p.add_argument("--seed", type=count(0, 2**63 - 1), default=0)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument(
        "--threads",
        type=count(0, 256),
        default=0,
        help="CPU threads for torch (0: torch's "
        "default; 1 is faster when other jobs share the cores)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def cmd_reproduce(args: argparse.Namespace) -> int:
    from ..experiments.kingma2013 import reproduce_kingma2013, summary
    from ..io import outputs

    out = args.out or f"runs/{args.paper}-{args.budget}"
    outputs.check_dir(out)  # before the data loads and the training starts
    result = reproduce_kingma2013(
        out,
        budget=args.budget,
        data=args.data,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0
    print(summary(result))
    print(f"written to {out}: figure2.png, figure2.json, manifold.png, nz-*/ (models)")
    return 0


COMMANDS = {"reproduce": cmd_reproduce}
