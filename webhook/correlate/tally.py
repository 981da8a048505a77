"""What one correlate run found: exact counts, listed findings, aggregates, and the Report of them.

Invariants: counts are exact; each listed finding stops at `max_items`. Aggregates grow with
users, namespaces, rules and minutes, never with the number of requests. Denials are counted per
second for the timeline (per minute once more than `SECOND_SLOTS` seconds had activity) and per
user in a sliding `probe_window` for probers.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Sequence
from math import ceil

from webhook.correlate.model import (
    Access,
    AuditGap,
    Bucket,
    Bypass,
    CorrelateOptions,
    FenceRemoval,
    Prober,
    Report,
    Retried,
    Summary,
    Unverified,
)
from webhook.correlate.records import AuditRecord, DecisionRecord, SourceStats
from webhook.correlate.sources import logs_overlap
from webhook.correlate.timestamps import format_time

# The timeline counts per second, so a span of a few minutes still gets bars of a few seconds; past
# this many seconds with activity (two busy hours) it folds them into minutes, bounding memory.
SECOND_SLOTS = 7200
# Bar widths a reader takes in at a glance (seconds); wider spans use whole days.
NICE_WIDTHS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)
DAY = 86400
# What a timeline slot counts, by index.
ALLOWED, DENIED, FAIL_OPEN, DODGED, GAPS, UNREGISTERED = range(6)
SLOT = 6  # counts in a slot
_SLOT_OF_CAUSE = {"fail-open": FAIL_OPEN, "dodged": DODGED, "unregistered": UNREGISTERED}
_COUNT_OF_CAUSE = {"fail-open": "fail_open", "dodged": "dodged", "unregistered": "unregistered"}


class Tally:
    """The counters and findings the join reports into; `report` turns them into the Report."""

    def __init__(self, options: CorrelateOptions) -> None:
        self.options = options
        self._counts: dict[str, int] = {}
        self._bypasses: list[Bypass] = []
        self._gaps: list[AuditGap] = []
        self._retried: list[Retried] = []
        self._access: list[Access] = []
        self._access_by_user: dict[str, int] = {}
        self._by_rule: dict[str, int] = {}
        self._by_namespace: dict[str, int] = {}
        self._by_user: dict[str, int] = {}
        self._recent_denials: dict[str, list[float]] = {}
        self._unverified: list[Unverified] = []
        self._fence_removals: list[FenceRemoval] = []
        self._peaks: dict[str, tuple[int, float, float]] = {}
        self._slots: dict[int, list[int]] = {}
        self._resolution = 1  # seconds a slot spans: 1, then 60 once there are too many

    def decision(self, d: DecisionRecord, prober: str) -> None:
        """A decision: allowed or denied per second; denials by rule, namespace, user, and by
        `prober` (the authenticated user) in the sliding probe window.

        Decisions come in as they are joined, so a little out of time order: the window's times
        are kept sorted and its densest stretch measured when it grows.
        """
        bucket = self.bucket(d.time)
        if d.allowed:
            bucket[ALLOWED] += 1
            return
        bucket[DENIED] += 1
        self.count("denials")
        for rule in d.denied_by:
            self._by_rule[rule] = self._by_rule.get(rule, 0) + 1
        self._by_namespace[d.namespace] = self._by_namespace.get(d.namespace, 0) + 1
        self._by_user[d.user] = self._by_user.get(d.user, 0) + 1
        recent = self._recent_denials.setdefault(prober, [])
        insort(recent, d.time)
        cut = bisect_left(recent, recent[-1] - self.options.probe_window)
        if cut:
            del recent[:cut]
        peak = self._peaks.get(prober)
        if len(recent) >= self.options.probe_threshold and (peak is None or len(recent) > peak[0]):
            self._peaks[prober] = (len(recent), recent[0], recent[-1])

    def bucket(self, t: float) -> list[int]:
        """The timeline slot of time `t`, indexed by ALLOWED, DENIED, FAIL_OPEN, DODGED, GAPS,
        UNREGISTERED."""
        key = int(t // self._resolution)
        slot = self._slots.get(key)
        if slot is None:
            if self._resolution == 1 and len(self._slots) >= SECOND_SLOTS:
                self._fold_into_minutes()
                return self.bucket(t)
            slot = self._slots[key] = [0] * SLOT
        return slot

    def _fold_into_minutes(self) -> None:
        minutes: dict[int, list[int]] = {}
        for second, counts in self._slots.items():
            slot = minutes.setdefault(second // 60, [0] * SLOT)
            for i, n in enumerate(counts):
                slot[i] += n
        self._slots, self._resolution = minutes, 60

    def count(self, name: str) -> None:
        self._counts[name] = self._counts.get(name, 0) + 1

    def access(self, record: AuditRecord) -> None:
        """A sensitive request (exec, attach, port-forward, proxy) that succeeded."""
        self.count("sensitive_access")
        self._access_by_user[record.user] = self._access_by_user.get(record.user, 0) + 1
        if len(self._access) < self.options.max_items:
            self._access.append(
                Access(
                    record.received_text,
                    record.audit_id,
                    record.user,
                    record.verb,
                    record.resource_key,
                    record.subresource,
                    record.namespace,
                    record.name,
                    record.code,
                    record.decision_ids[0] if record.decision_ids else "",
                    _authenticated(record),
                )
            )

    def fence_removed(self, record: AuditRecord, cause: str) -> None:
        """A NetworkPolicy write that left a namespace unfenced or neutralised (`cause`: decided
        by our webhook, or undecided: a bypass)."""
        self.count("fence_removals")
        if len(self._fence_removals) < self.options.max_items:
            self._fence_removals.append(
                FenceRemoval(
                    record.received_text,
                    record.audit_id,
                    cause,
                    record.user,
                    record.verb,
                    record.namespace,
                    record.name,
                    record.code,
                    record.fence_lost,
                    _authenticated(record),
                )
            )

    def bypass(self, record: AuditRecord, cause: str) -> None:
        """A registered write that was admitted without a decision of ours (`cause`: fail-open,
        dodged, unregistered)."""
        self.count("bypasses")
        self.count(_COUNT_OF_CAUSE.get(cause, "dodged"))
        self.bucket(record.received)[_SLOT_OF_CAUSE.get(cause, DODGED)] += 1
        if len(self._bypasses) < self.options.max_items:
            self._bypasses.append(
                Bypass(
                    record.received_text,
                    record.audit_id,
                    cause,
                    record.user,
                    record.verb,
                    record.resource_key,
                    record.subresource,
                    record.namespace,
                    record.name,
                    record.code,
                    record.dry_run,
                    record.failed_open,
                    _authenticated(record),
                )
            )

    def retried(
        self, d: DecisionRecord, audit_id: str, recorded_decision_id: str, collection: bool
    ) -> None:
        """A decision that was one more webhook call of a request recorded with another one."""
        self.count("retried")
        if len(self._retried) < self.options.max_items:
            self._retried.append(
                Retried(
                    d.time_text,
                    d.decision_id,
                    d.operation,
                    d.resource,
                    d.namespace,
                    d.name,
                    d.user,
                    audit_id,
                    recorded_decision_id,
                    collection,
                )
            )

    def unverified(self, d: DecisionRecord) -> None:
        """A decision for another client than the API server, that no audit event recorded."""
        self.count("unverified")
        if len(self._unverified) < self.options.max_items:
            self._unverified.append(
                Unverified(
                    d.time_text,
                    d.decision_id,
                    d.client,
                    d.peer,
                    d.decision,
                    d.operation,
                    d.resource,
                    d.subresource,
                    d.namespace,
                    d.name,
                    d.user,
                )
            )

    def gap(self, d: DecisionRecord, failed_open_audit_id: str) -> None:
        """A decision whose request the audit logs should hold but do not."""
        self.count("audit_gaps")
        self.bucket(d.time)[GAPS] += 1
        if len(self._gaps) < self.options.max_items:
            self._gaps.append(
                AuditGap(
                    d.time_text,
                    d.decision_id,
                    d.decision,
                    d.operation,
                    d.resource,
                    d.subresource,
                    d.namespace,
                    d.name,
                    d.user,
                    d.dry_run,
                    failed_open_audit_id,
                )
            )

    def report(
        self,
        audit: Sequence[SourceStats],
        decisions: Sequence[SourceStats],
        *,
        audit_span: tuple[float | None, float | None],
        decision_span: tuple[float | None, float | None],
        notices: tuple[str, ...] = (),
        first_registered: float | None = None,
    ) -> Report:
        """The Report of everything counted, with the sources' stats and time spans."""
        c = self._counts.get
        probers = tuple(
            Prober(user, n, format_time(start), format_time(end))
            for user, (n, start, end) in sorted(self._peaks.items(), key=lambda kv: -kv[1][0])
        )
        summary = Summary(
            audit_events=sum(s.events for s in audit),
            decisions=c("decisions", 0),
            joined=c("joined", 0),
            retried=c("retried", 0),
            bypasses=c("bypasses", 0),
            fail_open=c("fail_open", 0),
            dodged=c("dodged", 0),
            audit_gaps=c("audit_gaps", 0),
            uncovered=c("uncovered", 0),
            audit_without_decision=c("audit_without_decision", 0),
            denials=c("denials", 0),
            probers=len(probers),
            sensitive_access=c("sensitive_access", 0),
            malformed_lines=sum(s.malformed for s in audit),
            logs_overlap=logs_overlap(audit_span, decision_span, self.options.clock_skew),
            unverified=c("unverified", 0),
            fence_removals=c("fence_removals", 0),
            unregistered=c("unregistered", 0),
            before_registration=c("before_registration", 0),
        )
        return Report(
            summary=summary,
            bypasses=tuple(self._bypasses),
            audit_gaps=tuple(self._gaps),
            retried=tuple(self._retried),
            probers=probers,
            sensitive_access=tuple(self._access),
            sensitive_by_user=_ranked(self._access_by_user),
            denials_by_rule=_ranked(self._by_rule),
            denials_by_namespace=_ranked(self._by_namespace),
            denials_by_user=_ranked(self._by_user),
            timeline=timeline(self._slots, self._resolution),
            options=self.options,
            audit_span=audit_span,
            decision_span=decision_span,
            audit_sources=tuple(audit),
            decision_sources=tuple(decisions),
            unverified=tuple(self._unverified),
            fence_removals=tuple(self._fence_removals),
            notices=notices,
            first_registered=first_registered,
        )


def _authenticated(record: AuditRecord) -> str:
    """The authenticated user when it differs from the one the request ran as, else ""."""
    return record.auth_user if record.auth_user != record.user else ""


def _ranked(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def timeline(
    slots: dict[int, list[int]], resolution: int = 1, bars: int = 120
) -> tuple[Bucket, ...]:
    """The slots merged into at most `bars` buckets of one readable width, first to last slot.

    `slots` maps `time // resolution` to its counts. The width is the narrowest of `NICE_WIDTHS`
    (or whole days) that is a multiple of the resolution and fits the span in `bars`; buckets
    start at multiples of it, so bars line up with the clock.
    """
    if not slots:
        return ()
    first, end = min(slots) * resolution, (max(slots) + 1) * resolution
    width = _width(first, end, resolution, bars)
    start = first - first % width
    merged: dict[int, list[int]] = {}
    for key, counts in slots.items():
        slot = merged.setdefault((key * resolution - start) // width, [0] * SLOT)
        for i, n in enumerate(counts):
            slot[i] += n
    count = ceil((end - start) / width)
    empty = [0] * SLOT
    return tuple(
        Bucket(
            start=float(start + i * width),
            seconds=float(width),
            allowed=c[ALLOWED],
            denied=c[DENIED],
            fail_open=c[FAIL_OPEN],
            dodged=c[DODGED],
            gaps=c[GAPS],
            unregistered=c[UNREGISTERED],
        )
        for i in range(count)
        for c in (merged.get(i, empty),)
    )


def _width(first: int, end: int, resolution: int, bars: int) -> int:
    for width in NICE_WIDTHS:
        if width % resolution == 0 and ceil((end - (first - first % width)) / width) <= bars:
            return width
    # Whole days; one bar fewer, so the aligned start still leaves room for the last one.
    return DAY * max(1, ceil((end - first) / (DAY * (bars - 1))))
