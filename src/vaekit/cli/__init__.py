"""The `vaekit` command. Each module registers its subcommands; `main` dispatches.

Every command only parses arguments, calls the library and prints. A user error
(`VaekitError`) ends in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO, cast

from ..version import __version__
from . import catalog, compare, core, encode, export, generate, hub, inspect, prior, reproduce
from .parser import Parser, one_line

# modules that register subcommands: each has register(sub) and a COMMANDS dict; this
# order is the order `vaekit --help` lists them in
MODULES = [core, compare, encode, generate, prior, catalog, inspect, reproduce, hub, export]


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
    from ..wording import command_line

    tune_malloc()  # conv activations: reuse freed memory instead of fresh zeroed pages
    stdout = sys.stdout
    sys.stdout = cast(TextIO, _Stdout(stdout))
    try:
        import_modules(args.imports)
        with command_line():  # errors name this command's flags, not Python's keywords
            code = commands[args.command](args)
        sys.stdout.flush()  # a full disk or a closed pipe shows here, not at exit
        return code
    except StdoutFailed as e:
        _silence(stdout)
        if e.errno != errno.EPIPE:  # a closed pipe (`| head`) is no error to report
            print(
                f"vaekit {args.command}: error: cannot write to standard output "
                f"({e.strerror or e}); the output is lost",
                file=sys.stderr,
            )
        return 1
    except TrainingInterrupted as e:
        print(f"vaekit: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except VaekitError as e:
        print(f"vaekit {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vaekit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    finally:
        sys.stdout = stdout


class StdoutFailed(OSError):
    """Writing the command's output to stdout failed (a full disk, a closed pipe)."""


class _Stdout:
    """sys.stdout whose write errors become `StdoutFailed`, told apart from other OSErrors."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as e:
            raise StdoutFailed(e.errno, e.strerror) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as e:
            raise StdoutFailed(e.errno, e.strerror) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _silence(stream: TextIO) -> None:
    """Point stdout's descriptor at /dev/null, so that the flush at exit, which would meet
    the same error, succeeds (as the Python docs advise for SIGPIPE)."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # no descriptor (captured by a test): nothing to flush
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fd)
    os.close(null)


def import_modules(names: list[str]) -> None:
    """Import the modules named by --import: code the user names on the command line (never
    code named by a file), typically their registered architectures."""
    import importlib
    import os
    import re

    from ..errors import ConfigError, first_line

    for name in names:
        if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name):
            raise ConfigError(f"--import {name!r} is not a module name; write e.g. my_models")
        if os.getcwd() not in sys.path:  # as `python -m` would: ./my_models.py is found
            sys.path.insert(0, os.getcwd())
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(
                f"--import {name}: the module cannot be imported ({first_line(e)})"
            ) from None
        except Exception as e:  # the module itself failed: say where, in one line
            where = ""
            tb = e.__traceback__
            while tb is not None:
                where = f" at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
                tb = tb.tb_next
            if isinstance(e, SyntaxError):
                where = f" at {e.filename}:{e.lineno}"
            raise ConfigError(
                f"--import {name}: the module failed ({first_line(e, named=True)}{where})"
            ) from None
