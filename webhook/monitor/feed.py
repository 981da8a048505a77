"""The monitor's intake, pure: an audit.k8s.io/v1 EventList in, counts and alerts out.

`parse_batch` says whether a body is an EventList (the one-line reason when not); `Feed` takes its
items: each event is counted once by stage, de-duplicated on (auditID, stage) because the API
server sends a batch again when it was answered late, screened and judged by the shared
`webhook.correlate.detect.Detector`, and a canary's event is handed to the `CanaryWatch`.

Invariants: no I/O and no clock of its own (times are passed in); memory is bounded (the
de-duplication window is the newest `MAX_SEEN` events; the detector bounds the rest).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from webhook.correlate.audit_reader import AuditReader
from webhook.correlate.detect import Alert, CanaryWatch, Detector
from webhook.correlate.model import CorrelateOptions
from webhook.correlate.timestamps import parse_time

MAX_SEEN = 200_000  # (auditID, stage) pairs remembered: > 20 s of a 4,000 events/s feed, twice
API_VERSION = "audit.k8s.io/v1"


class BatchError(ValueError):
    """A body that is not an EventList; str: the one-line reason."""


def parse_batch(body: bytes) -> list[Any]:
    """The items of an `audit.k8s.io/v1` EventList; BatchError when the body is not one."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BatchError(f"body is not JSON: {exc.msg} at byte {exc.pos}") from None
    if not isinstance(doc, dict):
        raise BatchError("body is not a JSON object")
    if doc.get("kind") != "EventList" or doc.get("apiVersion") != API_VERSION:
        raise BatchError(f"body is not an {API_VERSION} EventList")
    items = doc.get("items")
    if items is None:
        return []
    if not isinstance(items, list):
        raise BatchError("EventList items is not a list")
    return items


@dataclass(slots=True)
class Taken:
    """What one slice of a batch gave: events new by stage, duplicates, malformed, alerts."""

    stages: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    malformed: int = 0
    alerts: list[Alert] = field(default_factory=list)
    newest: float | None = None  # the latest stageTimestamp among the new events


class Feed:
    """One monitor's detection state across batches."""

    def __init__(self, options: CorrelateOptions, canary: CanaryWatch | None = None) -> None:
        self.options = options
        self.reader = AuditReader(options)
        self.detector = Detector(options)
        self.canary = canary
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def take(self, items: Iterable[Any], now: float) -> Taken:
        """Count and judge events; `now` is the receiver's clock (for the canary)."""
        taken = Taken()
        seen = self._seen
        for item in items:
            if not isinstance(item, dict):
                taken.malformed += 1
                continue
            audit_id, stage = item.get("auditID"), item.get("stage")
            if not isinstance(audit_id, str) or not isinstance(stage, str):
                taken.malformed += 1
                continue
            key = (audit_id, stage)
            if key in seen:
                taken.duplicates += 1
                continue
            seen[key] = None
            if len(seen) > MAX_SEEN:
                seen.popitem(last=False)
            taken.stages[stage] = taken.stages.get(stage, 0) + 1
            stamp = item.get("stageTimestamp")
            if isinstance(stamp, str):
                try:
                    t = parse_time(stamp)
                except ValueError:
                    t = None
                if t is not None and (taken.newest is None or t > taken.newest):
                    taken.newest = t
            agent = item.get("userAgent")
            if self.canary is not None and isinstance(agent, str) and self.canary.seen(agent, now):
                continue
            record = self.reader.relevant(item)
            if record is not None:
                taken.alerts += self.detector.feed(record)
        return taken

    def renewed(self) -> Feed:
        """A feed with the same options and nothing remembered: what a replica that takes over
        the monitor Lease starts from (its canaries too: those sent before went to the other)."""
        canary = CanaryWatch(self.canary.timeout) if self.canary is not None else None
        return Feed(self.options, canary)

    def check(self, now: float) -> Alert | None:
        """A `evasion.feed_silent` alert when a canary is overdue."""
        return self.canary.check(now) if self.canary is not None else None
