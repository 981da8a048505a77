"""`kubefence review`: decide one AdmissionReview offline; print what the server would answer.

The same limits as the server: a body over `server.maxBodyBytes` is refused with the server's 413
message. Without `--state` the cluster is empty, and stderr says so. Exit 0 allowed, 1 denied, 2
bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from webhook.admission import parse_review, render_response
from webhook.cluster.static import load_state
from webhook.cluster.view import StaticView
from webhook.config import load_settings
from webhook.decide import decide
from webhook.errors import BodyTooLarge, InputError, ReviewError

HELP = "decide one AdmissionReview offline (--state DIR, --config) and print the response"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", nargs="?", default="-", help="AdmissionReview JSON file, or - for stdin"
    )
    parser.add_argument(
        "--state",
        type=Path,
        help="folder of cluster manifests (Namespaces, NetworkPolicies, Pods); without it the "
        "cluster is empty",
    )
    parser.add_argument("--config", type=Path, help="kubefence config file")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    cluster = load_state(args.state, settings.limits) if args.state else StaticView([])
    source = "stdin" if args.file == "-" else args.file
    body = _read_body(args.file, source, settings.max_body_bytes)
    try:
        request = parse_review(body)
    except ReviewError as exc:
        raise InputError(f"{source}: {exc}") from None
    if args.state is None:
        # Silently deciding against nothing would read as "the cluster is unfenced".
        print(
            "kubefence review: no --state DIR: deciding against an empty cluster "
            "(no namespaces, no NetworkPolicies)",
            file=sys.stderr,
        )
    decision = decide(request, cluster, settings)
    sys.stdout.buffer.write(render_response(decision.response(), request.api_version) + b"\n")
    return 0 if decision.allowed else 1


def _read_body(file: str, source: str, limit: int) -> bytes:
    """The review's bytes; a body the server would answer with 413 is refused the same way."""
    try:
        if file == "-":
            if sys.stdin.isatty():  # else a bare `kubefence review` would seem to hang
                print(
                    "kubefence review: reading an AdmissionReview from stdin (end with Ctrl-D); "
                    "give a FILE to read one",
                    file=sys.stderr,
                    flush=True,
                )
            body = sys.stdin.buffer.read(limit + 1)
        else:
            with Path(file).open("rb") as stream:
                body = stream.read(limit + 1)
    except OSError as exc:
        raise InputError(f"{source}: cannot read: {exc.strerror}") from None
    if len(body) > limit:
        raise InputError(f"{source}: {BodyTooLarge.over(limit)}")
    return body
