"""Whether each input held what its flag promises, and whether the two kinds of log meet in time.

Invariant: a file with no valid record of its kind (an empty audit log, a decision log given as
`--audit-log`, a binary file) is never read as "nothing happened": `refusal` names the file and
its first line that is not a record, saying what that line is. Logs that do not overlap in time
join nothing; `logs_overlap` tells, and the renderings warn. Pure: stats and spans in, text out.
"""

from __future__ import annotations

from typing import Literal

import orjson

from webhook.correlate.model import Report
from webhook.correlate.records import SourceStats
from webhook.correlate.render_cells import span

Kind = Literal["audit", "decision"]

_WHAT: dict[Kind, str] = {
    "audit": "audit.k8s.io/v1 Event",
    "decision": "kubefence admission.decision line",
}


def refusal(stats: SourceStats, kind: Kind) -> str | None:
    """The one-line error for a source without a single record of its kind, else None."""
    if stats.records or stats.error_line:
        return None
    what = _WHAT[kind]
    if not stats.first_other_line:
        return f"{stats.name}: empty: no {what} in it"
    lines = f"{stats.lines} line{'' if stats.lines == 1 else 's'}"
    return (
        f"{stats.name}: no {what} in {lines}; line {stats.first_other_line} is "
        f"{describe_line(stats.first_other, kind)}"
    )


def describe_line(line: bytes, kind: Kind) -> str:
    """What a line that is not a record of `kind` is, for a reader who gave the wrong file."""
    if b"\x00" in line or not _is_text(line):
        return "binary data, not JSON lines"
    start = line.find(b"{")
    try:
        doc = orjson.loads(line[start:] if start > 0 else line)
    except orjson.JSONDecodeError:
        text = line.decode("utf-8", "replace").strip()
        return f"not JSON: {text[:60]!r}"
    if not isinstance(doc, dict):
        return "JSON, but not an object"
    event = doc.get("event")
    audit = str(doc.get("apiVersion", "")).startswith("audit.k8s.io/") and doc.get("kind") in (
        "Event",
        "EventList",
    )
    if event == "admission.decision":
        if kind == "audit":
            return "a kubefence decision line: give this file with --decision-log"
        return "a kubefence decision line without a decision_id or timestamp"
    if audit:
        if kind == "decision":
            return "a kube-apiserver audit Event: give this file with --audit-log"
        return "an audit Event without auditID, stage, verb, user or its timestamps"
    if isinstance(event, str) and kind == "decision":
        return f"a {event!r} log line, not a decision"
    if isinstance(event, str):
        return f"a {event!r} log line: kubefence's logs go with --decision-log"
    return f"JSON, but not an {_WHAT[kind]}"


def logs_overlap(
    audit_span: tuple[float | None, float | None],
    decision_span: tuple[float | None, float | None],
    clock_skew: float,
) -> bool:
    """False when both spans are known and lie apart by more than the clock skew."""
    a0, a1 = audit_span
    d0, d1 = decision_span
    if a0 is None or a1 is None or d0 is None or d1 is None:
        return True
    return d0 <= a1 + clock_skew and a0 <= d1 + clock_skew


def overlap_warning(
    audit_span: tuple[float | None, float | None],
    decision_span: tuple[float | None, float | None],
) -> str:
    """The warning line for logs that do not overlap in time."""
    return (
        f"the decision logs ({span(decision_span)}) and the audit logs ({span(audit_span)}) do "
        "not overlap in time: no decision can join; are they of one cluster and one period?"
    )


def warnings(report: Report) -> list[str]:
    """What makes a report doubtful, one line each, for every rendering."""
    if report.summary.logs_overlap:
        return []
    return [overlap_warning(report.audit_span, report.decision_span)]


def _is_text(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
