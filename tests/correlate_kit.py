"""Real audit and decision logs of `tests/unit/fixtures/correlate/`, and copies of their lines:
shared by the correlate, detection-core and monitor tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson

from webhook.correlate.audit_reader import AuditReader
from webhook.correlate.correlation import correlate
from webhook.correlate.detect import PROBING, Detector
from webhook.correlate.model import CorrelateOptions, Report
from webhook.correlate.records import SourceStats
from webhook.correlate.timestamps import format_time

FIXTURES = Path(__file__).parent / "unit" / "fixtures" / "correlate"
WEBHOOK = "validate.kubefence.io"
EXEMPT = frozenset({"kube-system", "kube-public", "kube-node-lease"})
OPTIONS = CorrelateOptions(webhook_names=(WEBHOOK,), exempt_namespaces=EXEMPT)


def lines(name: str) -> list[bytes]:
    return (FIXTURES / name).read_bytes().splitlines(keepends=True)


def run(
    audit: list[bytes] | list[list[bytes]],
    decisions: list[bytes],
    options: CorrelateOptions = OPTIONS,
) -> Report:
    streams = audit if audit and isinstance(audit[0], list) else [audit]
    return correlate(
        [(f"audit-{i}", iter(s)) for i, s in enumerate(streams)],  # type: ignore[arg-type]
        [("decisions", iter(decisions))],
        options,
    )


def real_event(marker: bytes, name: str = "outage.audit.log") -> dict[str, Any]:
    """A real event (the first line containing `marker`), as a dict to copy and change."""
    line = next(x for x in lines(name) if marker in x)
    return dict(orjson.loads(line))


def real_decision(marker: bytes, name: str = "outage.decisions.log") -> dict[str, Any]:
    line = next(x for x in lines(name) if marker in x and b"admission.decision" in x)
    return dict(orjson.loads(line))


def dump(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc) + b"\n"


def at(doc: dict[str, Any], t: float, duration: float = 0.004) -> dict[str, Any]:
    """A copy of an event received at `t` (epoch seconds)."""
    doc = copy.deepcopy(doc)
    doc["requestReceivedTimestamp"] = format_time(t)
    doc["stageTimestamp"] = format_time(t + duration)
    return doc


# --- the detection core's two intakes, for comparing them ------------------------------------------


def detector_alerts(events: list[bytes], options: CorrelateOptions) -> list[tuple[str, str]]:
    reader = AuditReader(options)
    detector = Detector(options)
    found: list[tuple[str, str]] = []
    for record in reader.records(iter(events), SourceStats("audit")):
        found += [
            (a.event, a.user if a.event == PROBING else a.audit_id) for a in detector.feed(record)
        ]
    return found


def parsed_alerts(events: list[bytes], options: CorrelateOptions) -> list[tuple[str, str]]:
    """What the monitor does: parsed EventList items, screened by `relevant`."""
    reader = AuditReader(options)
    detector = Detector(options)
    found: list[tuple[str, str]] = []
    for item in orjson.loads(b'{"kind":"EventList","items":[' + b",".join(events) + b"]}")["items"]:
        record = reader.relevant(item)
        if record is not None:
            found += [
                (a.event, a.user if a.event == PROBING else a.audit_id)
                for a in detector.feed(record)
            ]
    return found
