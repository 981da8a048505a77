"""What every command shares: the one error handler, and the argument types of their flags.

A closed stdout (`kubefence scan | head -1`) ends the command quietly with exit 141, what a shell
reports for a program killed by SIGPIPE; 1 would read as "findings" for scan and correlate.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from webhook import exitcodes
from webhook.config import parse_duration
from webhook.correlate.model import CorrelateOptions
from webhook.errors import InputError
from webhook.settings import Settings


def run_command(
    name: str, run: Callable[[argparse.Namespace], int], args: argparse.Namespace
) -> int:
    """`run`'s exit code; bad input is `kubefence NAME: reason` on stderr, Ctrl-C INTERRUPTED."""
    try:
        code = run(args)
        sys.stdout.flush()  # here, so that a closed stdout is seen here and not at exit
    except BrokenPipeError:
        _silence_stdout()
        return exitcodes.BROKEN_PIPE
    except InputError as exc:
        print(f"kubefence {name}: {exc}", file=sys.stderr)
        return exitcodes.BAD_INPUT
    except OSError as exc:  # a file the command writes or reads that no check above foresaw
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"kubefence {name}: {where}{exc.strerror or exc}", file=sys.stderr)
        return exitcodes.BAD_INPUT
    except KeyboardInterrupt:
        return exitcodes.INTERRUPTED
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's flush at exit does not fail again (the
    recipe of the `signal` module's docs, "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def positive_int(what: str) -> Callable[[str], int]:
    """An argparse type for a whole number of at least 1; the error names `what` it counts."""

    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of {what}")
        return int(text)

    return parse


def duration(text: str) -> float:
    """An argparse type for a positive Go-style duration (`90s`, `10m`, `1h30m`), in seconds."""
    seconds = parse_duration(text)
    if seconds is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 90s, 10m or 1h30m")
    return seconds


def add_probing_arguments(parser: argparse.ArgumentParser) -> None:
    """`--probe-threshold` and `--probe-window`, the same for `correlate` and `monitor`: both
    count probing by the authenticated user through the one detection core."""
    parser.add_argument(
        "--probe-threshold",
        type=positive_int("denials"),
        metavar="N",
        default=10,
        help="denials of one authenticated user within --probe-window that count as probing",
    )
    parser.add_argument(
        "--probe-window",
        type=duration,
        default=600.0,
        metavar="DURATION",
        help="the sliding probing window (default 10m)",
    )


def add_webhook_name_argument(parser: argparse.ArgumentParser) -> None:
    """`--webhook-name`, the same for every command that reads kubefence's webhook in audit
    events; `detection_options` reads it."""
    parser.add_argument(
        "--webhook-name",
        action="append",
        metavar="NAME",
        help="the webhook's name in the ValidatingWebhookConfiguration (repeatable; default: the "
        "config's webhookName or webhookNames)",
    )


def detection_options(args: argparse.Namespace, settings: Settings) -> CorrelateOptions:
    """What every detecting command takes alike from its flags and config: the webhook's names
    (`--webhook-name`, else the config's, each once), the exempt namespaces, the probing flags.
    The command's own options go on with `dataclasses.replace`."""
    return CorrelateOptions(
        webhook_names=tuple(dict.fromkeys(args.webhook_name or settings.webhook_names)),
        exempt_namespaces=settings.exemptions.namespaces,
        probe_threshold=args.probe_threshold,
        probe_window=args.probe_window,
    )


def port_number(text: str) -> int:
    """An argparse type for a TCP port, 0 (any free one) to 65535."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    return int(text)
