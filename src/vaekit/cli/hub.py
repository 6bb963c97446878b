"""`vaekit push RUN REPO_ID`: share a trained model on the Hugging Face Hub."""

from __future__ import annotations

import argparse
import sys

from .parser import count


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The Hub commands: push (loading is `hf://OWNER/NAME` wherever a RUN is taken)."""
    p = sub.add_parser(
        "push",
        help="upload a trained model and its model card to the Hugging Face Hub",
        description="Upload RUN's config.json, model.safetensors, sample images and a "
        "generated model card (README.md: the config, the evaluation numbers, the samples) "
        "to the Hub model repo REPO_ID, in one commit. Load it back anywhere with "
        "vaekit.load('hf://REPO_ID') or any command that takes a RUN. Needs vaekit[hub]; "
        "log in with `hf auth login` or set HF_TOKEN.",
    )
    p.add_argument("run", metavar="RUN", help="a run directory written by `vaekit train`")
    p.add_argument("repo_id", metavar="REPO_ID", help="OWNER/NAME on the Hub")
    p.add_argument(
        "--private",
        action="store_true",
        help="create the repo as private (an existing repo keeps its visibility)",
    )
    p.add_argument(
        "--iw-samples",
        type=count(0, 1_000_000),
        default=100,
        metavar="K",
        help="the card's log p(x) uses K importance samples per test image "
        "(0: ELBO only; default: 100)",
    )
    p.add_argument(
        "--no-evaluate",
        action="store_true",
        help="take the card's numbers from "
        "the training log instead of evaluating (no dataset needed)",
    )
    p.add_argument("--seed", type=count(0, 2**63 - 1), default=0, help="seed of the evaluation")
    p.add_argument(
        "--data",
        metavar="SOURCE",
        help="evaluate the card's numbers on the test split of SOURCE (anything `vaekit "
        "train --data` takes) instead of the data the run trained on",
    )
    p.add_argument("--message", help="commit message")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the model card and the files that would be sent; upload nothing",
    )


def cmd_push(args: argparse.Namespace) -> int:
    from ..io.hub import describe
    from ..publish import plan_push, push

    options = {
        "iw_samples": args.iw_samples,
        "run_evaluate": not args.no_evaluate,
        "seed": args.seed,
        "progress": sys.stderr.isatty(),
        "data": args.data,
    }
    if args.dry_run:
        plan = plan_push(args.run, args.repo_id, **options)
        card = plan.files["README.md"]
        print(card.decode("utf-8") if isinstance(card, bytes) else card)
        print(f"dry run: would upload to {args.repo_id}:", file=sys.stderr)
        describe(plan, sys.stderr)
        return 0
    plan = push(args.run, args.repo_id, private=args.private, message=args.message, **options)
    print(f"pushed {args.run} to {args.repo_id}: {plan.url}")
    describe(plan)
    print(f'load it with: vaekit.load("hf://{args.repo_id}")')
    return 0


COMMANDS = {"push": cmd_push}
