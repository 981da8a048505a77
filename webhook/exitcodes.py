"""The exit codes of every `kubefence` command, in one table (docs/design.md, "CLI and exit
codes").

A command's `run` returns one of these; `webhook.cli.run_command` maps errors to them.
"""

from __future__ import annotations

OK = 0
FINDING = 1  # a finding or a denial, where the command says so
BAD_INPUT = 2  # one line on stderr naming the file and field; argparse's usage errors too
INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as a shell reports it
BROKEN_PIPE = 141  # stdout closed by the reader (`| head`): 128 + SIGPIPE, as a shell reports it
