"""`kubefence correlate`: join decision logs with kube-apiserver audit logs and report what slipped.

The I/O shell around `webhook.correlate`: opens every file (plain or gzip, told by content, `-` for
stdin), streams them into the core and writes the report. Exit 1 when there are bypasses, 0
otherwise, 2 for unreadable input (naming file and line), a file without a single record of the
kind its flag expects (empty, the other kind of log, binary), or bad flags. Logs that do not
overlap in time are a warning (in the report; on stderr too when the report is not text on stdout).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gzip
import io
import sys
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import IO, cast

from webhook.auditpolicy import load_policy
from webhook.commands.cluster_flags import add_format_argument
from webhook.commands.running import (
    add_probing_arguments,
    add_webhook_name_argument,
    detection_options,
    duration,
    positive_int,
)
from webhook.config import load_settings
from webhook.correlate.correlation import Correlation
from webhook.correlate.model import Report
from webhook.correlate.records import SourceStats
from webhook.correlate.registration_windows import (
    records_configuration_writes,
    registration_notice,
)
from webhook.correlate.render_html import render_html
from webhook.correlate.render_json import render_json
from webhook.correlate.render_text import render_text
from webhook.correlate.sources import Kind, refusal, warnings
from webhook.correlate.timestamps import parse_time
from webhook.errors import InputError
from webhook.settings import Settings

HELP = (
    "join decision logs with kube-apiserver audit logs; report bypasses (fail-open or dodged), "
    "audit gaps, retried decisions, denials, probing and sensitive access"
)

_BUFFER = 1 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--audit-log",
        action="append",
        metavar="FILE",
        help="kube-apiserver audit log (JSON lines, plain or gzip, - for stdin); repeatable;"
        " required without --follow",
    )
    parser.add_argument(
        "--decision-log",
        action="append",
        metavar="FILE",
        help="kubefence decision log (plain or gzip, - for stdin); repeatable; required without"
        " --follow",
    )
    parser.add_argument(
        "--follow",
        type=Path,
        metavar="FILE",
        help="instead of a report: follow this growing, rotating audit log file (the file"
        " backend) from its end and print one JSON alert line per detection, as `kubefence"
        " monitor` does",
    )
    parser.add_argument(
        "--from-start",
        action="store_true",
        help="with --follow: read the file from its start (default: only lines written from now)",
    )
    parser.add_argument(
        "--audit-policy",
        type=Path,
        metavar="FILE",
        help="the API server's audit Policy (--audit-policy-file): when it does not record"
        " writes of kubefence's ValidatingWebhookConfiguration, nothing is assumed about when"
        " kubefence was registered",
    )
    add_webhook_name_argument(parser)
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="kubefence config file (exemptions, names, and drift.webhookConfiguration: the"
        " configuration whose writes tell when kubefence was registered)",
    )
    parser.add_argument(
        "--client-subject",
        action="append",
        metavar="SUBJECT",
        help="the API server's client certificate (commonName or whole subject, as `serve"
        " --client-subject`); decisions for other clients, or unauthenticated ones, count only"
        " when an audit event records them, and are listed apart otherwise (repeatable; default:"
        " any verified certificate)",
    )
    parser.add_argument(
        "--since", type=_rfc3339, metavar="TIME", help="report from this time (RFC 3339)"
    )
    parser.add_argument(
        "--until", type=_rfc3339, metavar="TIME", help="report up to this time (RFC 3339)"
    )
    add_format_argument(
        parser,
        ("text", "json", "html"),
        "text",
        "text tables, JSON (its keys are a contract) or one self-contained HTML page",
    )
    parser.add_argument("--out", type=Path, metavar="FILE", help="write the report here")
    add_probing_arguments(parser)
    parser.add_argument(
        "--join-window",
        type=duration,
        metavar="DURATION",
        default=120.0,
        help="how long after a decision its audit event may be written (default 2m); memory "
        "grows with the decisions in one window",
    )
    parser.add_argument(
        "--clock-skew",
        type=duration,
        metavar="DURATION",
        default=1.0,
        help="tolerated clock difference between webhook and API server (default 1s)",
    )
    parser.add_argument(
        "--max-items",
        type=positive_int("items"),
        metavar="N",
        default=1000,
        help="list at most this many of each finding; counts stay exact (default 1000)",
    )


# Said once when --config is not given (the chart's NOTES print the line with it).
NO_CONFIG_NOTICE = (
    "no --config: the exemptions and the namespaces kubefence's webhook configuration leaves out"
    " are not known, nor which configuration is kubefence's (so requests made before it was"
    " registered are listed as bypasses): the defaults are used, and kubefence's own namespace"
    " shows up; give the installed config.yaml"
)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if args.from_start and args.follow is None:
        raise InputError("--from-start goes with --follow")
    if args.follow is not None:
        if args.audit_log or args.decision_log:
            raise InputError("--follow reads one audit log: give no --audit-log or --decision-log")
        return _follow(args, settings)
    given = (("--audit-log", args.audit_log), ("--decision-log", args.decision_log))
    missing = [flag for flag, value in given if not value]
    if missing:
        raise InputError(f"the following arguments are required: {', '.join(missing)}")
    if args.since is not None and args.until is not None and args.since > args.until:
        raise InputError("--since is after --until")
    paths = [*args.audit_log, *args.decision_log]
    if paths.count("-") > 1:
        raise InputError("stdin (-) can be given only once")
    options = dataclasses.replace(
        detection_options(args, settings),
        webhook_configuration=_configuration(settings),
        configuration_recorded=_recorded(args.audit_policy, settings),
        since=args.since,
        until=args.until,
        join_window=args.join_window,
        clock_skew=args.clock_skew,
        max_items=args.max_items,
        client_subjects=frozenset(args.client_subject or ()),
    )
    with contextlib.ExitStack() as stack:
        audit = [(p, open_lines(p, stack)) for p in args.audit_log]
        decisions = [(p, open_lines(p, stack)) for p in args.decision_log]
        correlation = Correlation(audit, decisions, options)
        try:
            report = correlation.run()
        except (OSError, EOFError, zlib.error) as exc:
            source = correlation.failed_source()
            where = f"{source.name}: line {source.error_line}" if source else "input"
            raise InputError(f"{where}: cannot read: {_reason(exc)}") from None
    # A file without one record of its kind (empty, swapped, binary) would report "0 bypasses".
    checked: list[tuple[SourceStats, Kind]] = [(s, "audit") for s in correlation.audit_stats]
    checked += [(s, "decision") for s in correlation.decision_stats]
    for stats, kind in checked:
        problem = refusal(stats, kind)
        if problem is not None:
            raise InputError(problem)
    if args.config is None:  # says it all: the configuration's name is unknown too
        report = dataclasses.replace(report, notices=(NO_CONFIG_NOTICE,))
    _write(args, report)
    return 1 if report.summary.bypasses else 0


def _write(args: argparse.Namespace, report: Report) -> None:
    """The report in its format to --out or stdout; warnings and notices on stderr when the
    report is not text on stdout (the notices once it is written: bad input stays one line)."""
    said_apart = args.out is not None or args.format != "text"
    if said_apart:
        for warning in warnings(report):
            print(f"kubefence correlate: warning: {warning}", file=sys.stderr)
    if args.format == "json":
        data = render_json(report)
    elif args.format == "html":
        data = render_html(report).encode()
    else:
        data = render_text(report).encode()
    if args.out is not None:
        try:
            args.out.write_bytes(data)
        except OSError as exc:
            raise InputError(f"{args.out}: cannot write: {_reason(exc)}") from None
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    if said_apart:
        for notice in report.notices:
            print(f"kubefence correlate: notice: {notice}", file=sys.stderr)


def _follow(args: argparse.Namespace, settings: Settings) -> int:
    """Alert lines for a followed audit log until interrupted (Ctrl-C: exit 130, run_command's)."""
    from webhook import decisionlog
    from webhook.monitor.follow import follow_alerts, follow_lines

    if not args.follow.exists():
        raise InputError(f"{args.follow}: cannot read: No such file or directory")
    options = dataclasses.replace(
        detection_options(args, settings),
        webhook_configuration=_configuration(settings),
        configuration_recorded=_recorded(args.audit_policy, settings),
        since=args.since,
        until=args.until,
    )
    notice = (
        NO_CONFIG_NOTICE
        if args.config is None
        else registration_notice(
            options.webhook_configuration, options.configuration_recorded, resource_seen=True
        )
    )
    if notice:
        print(f"kubefence correlate: notice: {notice}", file=sys.stderr)
    decisionlog.configure()
    log = decisionlog.get_logger()
    lines = follow_lines(args.follow, from_start=args.from_start)
    for alert in follow_alerts(lines, options):
        log.warning(alert.event, **alert.fields())
    return 0


def _configuration(settings: Settings) -> str:
    """kubefence's ValidatingWebhookConfiguration, as the config's drift section names it."""
    return settings.drift.webhook_configuration if settings.drift is not None else ""


def _recorded(path: Path | None, settings: Settings) -> bool | None:
    """Whether the audit Policy at `path` records the configuration's writes (None: no policy)."""
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {_reason(exc)}") from None
    # As kube-apiserver reads it: unknown fields dropped, not refused (as config.py reads it).
    policy = load_policy(text, str(path), strict=False)
    return records_configuration_writes(policy, _configuration(settings) or "kubefence")


def open_lines(path: str, stack: contextlib.ExitStack) -> Iterable[bytes]:
    """The lines of a file or stdin (`-`), gunzipped when the content is gzip."""
    raw: IO[bytes]
    if path == "-":
        raw = sys.stdin.buffer
    else:
        try:
            raw = stack.enter_context(open(path, "rb", buffering=_BUFFER))  # noqa: SIM115
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {_reason(exc)}") from None
    buffered = (
        raw
        if isinstance(raw, io.BufferedReader)
        else io.BufferedReader(cast(io.RawIOBase, raw), _BUFFER)
    )
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        unzipped = stack.enter_context(gzip.GzipFile(fileobj=buffered, mode="rb"))
        return io.BufferedReader(cast(io.RawIOBase, unzipped), _BUFFER)
    return buffered


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or exc.__class__.__name__


def _rfc3339(text: str) -> float:
    try:
        return parse_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an RFC 3339 time with a zone, e.g. 2024-05-01T00:00:00Z"
        ) from None
