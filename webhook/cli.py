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


# Subcommand name -> module under webhook.commands; imported only when chosen, so `kubefence
# audit-level` does not pay for aiohttp and the kubernetes client.
COMMANDS: dict[str, str] = {
    "serve": "serve",
    "demo": "demo",
    "review": "review",
    "audit-level": "audit_level",
    "scan": "scan",
    "correlate": "correlate",
    "certs": "certs",
}


def _load(name: str) -> Command:
    return importlib.import_module(f"webhook.commands.{COMMANDS[name]}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse's own exit code for usage errors is 2 already; keep its one-line form.
        self.exit(exitcodes.BAD_INPUT, f"{self.prog}: error: {message}\n")


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = _Parser(prog="kubefence", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"kubefence {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    # Only the chosen command's module is imported; the others get a bare entry for --help.
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name in COMMANDS:
        if name == chosen:
            command = _load(name)
            command.add_arguments(sub.add_parser(name, help=command.HELP, description=command.HELP))
        else:
            sub.add_parser(name, help=f"see `kubefence {name} --help`")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    return run_command(args.command, _load(args.command).run, args)
