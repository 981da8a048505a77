"""What every command shares: the one error handler, and the argument types of their flags."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from webhook import exitcodes
from webhook.errors import InputError


def run_command(
    name: str, run: Callable[[argparse.Namespace], int], args: argparse.Namespace
) -> int:
    """`run`'s exit code; bad input is `kubefence NAME: reason` on stderr, Ctrl-C INTERRUPTED."""
    try:
        return run(args)
    except InputError as exc:
        print(f"kubefence {name}: {exc}", file=sys.stderr)
        return exitcodes.BAD_INPUT
    except KeyboardInterrupt:
        return exitcodes.INTERRUPTED


def positive_int(what: str) -> Callable[[str], int]:
    """An argparse type for a whole number of at least 1; the error names `what` it counts."""

    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of {what}")
        return int(text)

    return parse
