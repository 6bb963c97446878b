"""The `vaekit` command. Each module registers its subcommands; `main` dispatches.

Every command only parses arguments, calls the library and prints. A user error
(`VaekitError`) ends in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .. import __version__
from . import core, hub, inspect, reproduce
from .parser import Parser

# modules that register subcommands: each has register(sub) and a COMMANDS dict
MODULES = [core, inspect, reproduce, hub]


def build_parser() -> tuple[Parser, dict[str, Callable[[argparse.Namespace], int]]]:
    parser = Parser(
        prog="vaekit",
        description="Variational autoencoders: train, evaluate, "
        "sample, reconstruct, interpolate and inspect.",
    )
    parser.add_argument("--version", action="version", version=f"vaekit {__version__}")
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (repeatable): where your @vaekit.register architectures "
        "are defined, so that their runs train, load and draw; looked up on the Python path "
        "and in the current directory",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {}
    for module in MODULES:
        module.register(sub)
        commands.update(module.COMMANDS)
    return parser, commands


def main(argv: list[str] | None = None) -> int:
    parser, commands = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # name the subcommand whose flags were mistyped
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        target = sub.choices.get(args.command, parser) if args.command else parser
        target.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "data" and args.data_command is None:
        parser.error("data needs an action: fetch NAME or list")
    from ..allocator import tune_malloc
    from ..errors import TrainingInterrupted, VaekitError

    tune_malloc()  # conv activations: reuse freed memory instead of fresh zeroed pages
    try:
        import_modules(args.imports)
        return commands[args.command](args)
    except TrainingInterrupted as e:
        print(f"vaekit: {e}", file=sys.stderr)
        return e.exit_code
    except VaekitError as e:
        print(f"vaekit {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vaekit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


def import_modules(names: list[str]) -> None:
    """Import the modules named by --import: code the user names on the command line (never
    code named by a file), typically their registered architectures."""
    import importlib
    import os
    import re

    from ..errors import ConfigError

    for name in names:
        if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name):
            raise ConfigError(f"--import {name!r} is not a module name; write e.g. my_models")
        if os.getcwd() not in sys.path:  # as `python -m` would: ./my_models.py is found
            sys.path.insert(0, os.getcwd())
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(f"--import {name}: the module cannot be imported ({e})") from None
        except Exception as e:  # the module itself failed: say where, in one line
            where = ""
            tb = e.__traceback__
            while tb is not None:
                where = f" at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
                tb = tb.tb_next
            if isinstance(e, SyntaxError):
                where = f" at {e.filename}:{e.lineno}"
            first = str(e).splitlines()[0] if str(e) else ""
            raise ConfigError(
                f"--import {name}: the module failed ({type(e).__name__}: {first}{where})"
            ) from None
