"""The argument parser every vaekit command uses."""

from __future__ import annotations

import argparse
import typing
from collections.abc import Callable


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line naming the fix, not a usage dump."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def count(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high` (a bad one is argparse's usual
    one-line error, naming the option and the range)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a whole number from {low:,} to {high:,}; got {text!r}"
            ) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low:,} to {high:,}; got {value:,}")
        return value

    parse.__name__ = f"count({low}, {high})"
    return parse


def one_line(text: object) -> str:
    """A message on one line, whatever a user's input put into it (a path or a revision
    with a newline): line breaks and other control characters are escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
