"""`kubefence review`: decide one AdmissionReview offline; print what the server would answer.

Exit 0 allowed, 1 denied, 2 bad input.
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
from webhook.errors import InputError, ReviewError

HELP = "decide one AdmissionReview offline (--state DIR, --config) and print the response"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", nargs="?", default="-", help="AdmissionReview JSON file, or - for stdin"
    )
    parser.add_argument(
        "--state", type=Path, help="folder of cluster manifests (Namespaces, NetworkPolicies, Pods)"
    )
    parser.add_argument("--config", type=Path, help="kubefence config file")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    cluster = load_state(args.state, settings.limits) if args.state else StaticView([])
    source = "stdin" if args.file == "-" else args.file
    try:
        body = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        raise InputError(f"{source}: cannot read: {exc.strerror}") from None
    try:
        request = parse_review(body)
    except ReviewError as exc:
        raise InputError(f"{source}: {exc}") from None
    decision = decide(request, cluster, settings)
    sys.stdout.buffer.write(render_response(decision.response(), request.api_version) + b"\n")
    return 0 if decision.allowed else 1
