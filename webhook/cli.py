"""The `kubefence` command line: a table of subcommands, each a module whose `run` is the exit code.

Exit codes are `webhook.exitcodes`'; `webhook.commands.running.run_command` is the one error
handler, for every command and every `serve --workers` worker: bad input is one line on stderr,
never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol

from webhook import __version__, exitcodes
from webhook.commands.running import run_command


class Command(Protocol):
    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


DESCRIPTION = (
    "kubefence: a Kubernetes validating admission webhook that keeps workloads inside "
    "NetworkPolicy fences and inside the cluster's audited scope, and the tools that read "
    "its decision log beside the API server's audit log. `kubefence COMMAND --help` for more."
)

# Subcommand name -> module under webhook.commands; imported only when chosen, so `kubefence
# audit-level` does not pay for aiohttp and the kubernetes client.
COMMANDS: dict[str, str] = {
    "serve": "serve",
    "demo": "demo",
    "review": "review",
    "audit-level": "audit_level",
    "scan": "scan",
    "check": "check",
    "correlate": "correlate",
    "detections": "detections",
    "monitor": "monitor",
    "certs": "certs",
}


def _load(name: str) -> Command:
    return importlib.import_module(f"webhook.commands.{COMMANDS[name]}")


class _Help(argparse.HelpFormatter):
    """Every flag's default shown, unless its help already says it or there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or default in (None, False, [], argparse.SUPPRESS)
            or "default" in text
            or "%(default)" in text
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse's usage errors in the form of every other error: `kubefence COMMAND: reason`.
        self.exit(exitcodes.BAD_INPUT, f"{self.prog}: {message}\n")


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = _Parser(prog="kubefence", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"kubefence {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    # Not required by argparse: bare `kubefence` gets the usage, not only an error (main).
    # Only the chosen command's module is imported (`kubefence audit-level` does not pay for
    # aiohttp); with none chosen (`kubefence --help`) every one is, for its line of help.
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name in COMMANDS:
        if chosen is None or name == chosen:
            command = _load(name)
            parser_ = sub.add_parser(name, help=command.HELP, description=command.HELP)
            if name == chosen:
                command.add_arguments(parser_)
        else:
            sub.add_parser(name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args, extra = parser.parse_known_args(args_list)
    if extra:  # named by the command's parser, as its other usage errors are
        chosen: argparse.ArgumentParser = parser
        if args.command is not None:
            sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            chosen = sub.choices[args.command]
        chosen.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:  # bare `kubefence`: what to type next, as kubectl does
        parser.print_usage(sys.stderr)
        print(
            f"kubefence: a COMMAND is required ({', '.join(COMMANDS)}); "
            "`kubefence --help` says what each does",
            file=sys.stderr,
        )
        return exitcodes.BAD_INPUT
    return run_command(args.command, _load(args.command).run, args)
