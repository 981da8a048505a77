"""Reading decision logs: the `admission.decision` lines in, DecisionRecords out.

Every other line (other log events, kubelet or container-runtime noise) is skipped unparsed; a
decision line that does not parse counts as malformed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from webhook.correlate.records import DecisionRecord, SourceStats
from webhook.correlate.timestamps import parse_time

DECISION_EVENT = b"admission.decision"


def decision_records(lines: Iterable[bytes], stats: SourceStats) -> Iterator[DecisionRecord]:
    """Yield the `admission.decision` lines of a decision log; every other line is ignored.

    A line may carry a prefix before its JSON object (`kubectl logs --prefix`, CRI log files).
    """
    n = count = 0
    try:
        for line in lines:
            n += 1
            if DECISION_EVENT not in line:
                if line.strip():
                    stats.other(n, line)
                continue
            start = line.find(b"{")
            try:
                doc = orjson.loads(line[start:] if start > 0 else line)
            except orjson.JSONDecodeError:
                stats.malformed += 1
                stats.other(n, line)
                continue
            record = _decision(doc)
            if record is None:
                stats.malformed += 1
                stats.other(n, line)
                continue
            count += 1
            if stats.first is None or record.time < stats.first:
                stats.first = record.time
            if stats.last is None or record.time > stats.last:
                stats.last = record.time
            yield record
    except Exception:
        stats.error_line = n + 1
        raise
    finally:
        stats.lines, stats.events, stats.records = n, count, count


def decision_record(doc: Any) -> DecisionRecord | None:
    """The record of one parsed `admission.decision` line (or what `serve --decisions-to` sends
    of one), None when it is not one."""
    return _decision(doc)


def _decision(doc: Any) -> DecisionRecord | None:
    if not isinstance(doc, dict) or doc.get("event") != "admission.decision":
        return None
    decision_id, stamp = doc.get("decision_id"), doc.get("timestamp")
    if not isinstance(decision_id, str) or not decision_id or not isinstance(stamp, str):
        return None
    try:
        t = parse_time(stamp)
    except ValueError:
        return None
    allowed = doc.get("allowed") is not False and doc.get("decision") != "deny"
    denied_by: tuple[str, ...] = ()
    if not allowed:
        rules = doc.get("rules")
        denied_by = tuple(
            dict.fromkeys(
                r["id"]
                for r in (rules if isinstance(rules, list) else [])
                if isinstance(r, dict)
                and isinstance(r.get("id"), str)
                and r.get("result") == "fail"
                and r.get("mode", "enforce") == "enforce"
            )
        )
        if not denied_by:
            notes = doc.get("audit_annotations")
            listed = notes.get("rules") if isinstance(notes, dict) else None
            denied_by = tuple(x for x in _s(listed).split(",") if x) or ("(unknown)",)
    return DecisionRecord(
        decision_id=decision_id,
        time=t,
        time_text=stamp,
        decision=_s(doc.get("decision")),
        allowed=allowed,
        denied_by=denied_by,
        operation=_s(doc.get("operation")),
        resource=_s(doc.get("resource")),
        subresource=_s(doc.get("subresource")),
        namespace=_s(doc.get("namespace")),
        name=_s(doc.get("name")),
        user=_s(doc.get("user")),
        dry_run=doc.get("dry_run") is True,
        client=(client := _s(doc.get("client"))),
        peer=_s(doc.get("peer")),
        common_names=_common_names(client),
    )


def _common_names(subject: str) -> tuple[str, ...]:
    """The commonName values of a subject as the server logs it (`,` `=` escaped with `\\`)."""
    names: list[str] = []
    for part in re.split(r"(?<!\\),", subject):
        if part.startswith("commonName="):
            names.append(re.sub(r"\\(.)", r"\1", part[len("commonName=") :]))
    return tuple(names)


def _s(value: object) -> str:
    return value if isinstance(value, str) else ""
