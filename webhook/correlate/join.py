"""The join and the findings it makes: audit records and decisions in (roughly) time order.

Invariants:
- The join key is the `<webhook name>/decision-id` audit annotation, never the auditID (a client
  may choose its own Audit-ID). Stages of one request are folded on auditID *and* the request's
  received time, authenticated user, verb and URI.
- Memory is bounded by the join window, not by the length of the logs: a decision waits for its
  audit event at most `join_window` of audit time; joined events are remembered for retry pairing
  for two windows; a ResponseStarted waits for its ResponseComplete (long-running CONNECTs only).
- Only the request's final stage (or the last one held when reading ends) is judged for bypass
  and sensitive access; what is found is counted in one `Tally`.
- Whether kubefence was registered when a request was made comes from the logs' own events of
  its webhook configuration (`registration_windows`). A dodged bypass made before anything
  told (no write of the configuration, no decision of ours yet) is held until something does,
  or the logs end (then it stays `dodged`: nothing is assumed); at most `max_open_requests`
  are held, the oldest judged as it is first.
- An audit event repeated in the logs (a file given twice, overlapping rotations, a webhook
  backend's re-sent batch written out) is judged once, as the live paths judge it: a stage is
  skipped when the same request (its request key, not the auditID alone, which a client may
  choose) at the same stage and stageTimestamp was seen within `join_window` of audit time. The
  logs are merged by stageTimestamp, so repeats arrive close together; memory is bounded by that
  window.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from webhook.correlate.audit_reader import operations
from webhook.correlate.detect import (
    BEFORE_REGISTRATION,
    BYPASS,
    FENCE_REMOVED,
    SENSITIVE_ACCESS,
    findings,
    hinges_on_registration,
)
from webhook.correlate.model import CorrelateOptions, Report
from webhook.correlate.records import AuditRecord, DecisionRecord, SourceStats
from webhook.correlate.registration_windows import (
    RegistrationWindows,
    Standing,
    registration_notice,
)
from webhook.correlate.tally import Tally

FINAL_STAGES = frozenset({"ResponseComplete", "Panic"})
UNAUTHENTICATED = "unauthenticated"  # the decision log's `client` without a certificate

_Key = tuple[str, str, str, str, str]  # user, resource, subresource, namespace, name
_StageKey = tuple[tuple[str, str, str, str, str], str, float]  # request key, stage, stageTimestamp


@dataclass(slots=True)
class _Seen:
    """A recorded request remembered for pairing unjoined decisions with it."""

    received: float
    stage_time: float
    audit_id: str
    decision_id: str  # "" for a fail-open bypass
    operations: tuple[str, ...]  # what the request's verb may reach the webhook as
    collection: bool
    first: float | None = None  # when the recorded decision was made (None: not seen yet)


@dataclass(slots=True)
class _Open:
    record: AuditRecord
    joined: bool


class Correlator:
    """The join state machine; feed it records in (roughly) time order, `finish` for the Report."""

    def __init__(self, options: CorrelateOptions, tally: Tally | None = None) -> None:
        """`tally`: where the findings go (the report's own by default; the monitor's live
        `webhook.monitor.gaps` takes the gaps as alerts)."""
        self.options = options
        self.audit_start: float | None = None  # the audit logs' time span, when known
        self.audit_end: float | None = None
        self.audit_done = False
        self._audit_clock = float("-inf")
        self._last_expiry = float("-inf")
        self._decision_clock = float("-inf")
        self._decision_span: list[float] = []
        # decisions waiting for their audit event, and audit events waiting for their decision
        self._pending: dict[str, DecisionRecord] = {}
        self._pending_q: deque[DecisionRecord] = deque()
        self._early: dict[str, tuple[float, _Seen | None, str]] = {}  # ..., authenticated user
        self._early_q: deque[tuple[float, str]] = deque()
        # recorded requests by object, for pairing retried decisions; ResponseStarted in flight
        self._seen: dict[_Key, list[_Seen]] = {}
        self._seen_q: deque[tuple[float, _Key]] = deque()
        self._open: dict[tuple[str, str, str, str, str], _Open] = {}
        self._stages: set[_StageKey] = set()  # stages judged within the window: repeats skipped
        self._stages_q: deque[_StageKey] = deque()
        self._tally = tally if tally is not None else Tally(options)
        self.registration = RegistrationWindows(
            options.webhook_configuration, options.registration_grace
        )
        self._held: deque[AuditRecord] = deque()  # dodged bypasses waiting for the registration

    # -- input ------------------------------------------------------------------------------------

    def audit(self, record: AuditRecord) -> None:
        key = record.request_key
        if self._repeated((key, record.stage, record.stage_time)):
            return
        if record.configuration or record.decision_ids or record.failed_open:
            self._registration_news(record)
            if record.configuration and not record.registered:
                self.audit_reached(record.stage_time)
                return
        if record.stage in FINAL_STAGES:
            held = self._open.pop(key, None)
            if held is None or not held.joined:
                self._join(record)
            elif not record.decision_ids:
                record.decision_ids = held.record.decision_ids
            self._judge(record)
        else:
            held = self._open.get(key)
            if held is None:
                held = self._open[key] = _Open(record, False)
                if len(self._open) > self.options.max_open_requests:
                    oldest = next(iter(self._open))
                    self._judge(self._open.pop(oldest).record)
            else:
                held.record = record
            if record.decision_ids and not held.joined:
                self._join(record)
                held.joined = True
        self.audit_reached(record.stage_time)

    def audit_reached(self, t: float) -> None:
        """The audit logs have reached `t`: a live feed says so for events that are no record
        (most are not), so decisions expire whether or not a relevant event follows them."""
        if t > self._audit_clock:
            self._audit_clock = t
            if t - self._last_expiry >= 1.0:
                self._expire()

    def expire_early(self, cutoff: float) -> None:
        """Forget audit events with a decision-id still waiting for their decision, stamped at
        or before `cutoff` (a live feed, to which only some decisions are sent: the decision
        clock alone would keep them)."""
        self._expire_early(cutoff)

    def decision(self, record: DecisionRecord) -> None:
        span = self._decision_span
        if span:
            span[0], span[1] = min(span[0], record.time), max(span[1], record.time)
        else:
            span[:] = [record.time, record.time]
        in_window = self._in_window(record.time)
        if record.time > self._decision_clock:
            self._decision_clock = record.time
            self._expire_early(record.time - self.options.join_window)
        early = self._early.pop(record.decision_id, None)
        if early is not None:
            if early[1] is not None:
                early[1].first = record.time
            if in_window:
                self._count(record, early[2])
                self._tally.count("joined")
        elif self.audit_done:
            self._resolve(record, final=True)  # no audit event can come any more
        else:
            self._pending[record.decision_id] = record
            self._pending_q.append(record)
            cap = self.options.max_pending_decisions
            if cap and len(self._pending) > cap:  # a live feed that stopped: the oldest go
                while self._pending_q:
                    oldest = self._pending_q.popleft()
                    if self._pending.get(oldest.decision_id) is oldest:
                        del self._pending[oldest.decision_id]
                        self._tally.count("uncovered")
                        break

    def audit_finished(self, end: float | None) -> None:
        """No more audit records: the audit logs end at `end` (their last line's time)."""
        if self.audit_done:
            return
        self.audit_done = True
        for held in self._open.values():
            self._judge(held.record)
        self._open.clear()
        while self._held:  # nothing told whether kubefence was registered: as they are
            self._settle(self._held.popleft(), Standing.UNKNOWN)
        if end is not None and end > self._audit_clock:
            self._audit_clock = end
        self.audit_end = end if end is not None else self._audit_clock
        self._expire()
        for record in self._pending_q:
            if self._pending.pop(record.decision_id, None) is record:
                self._resolve(record, final=True)
        self._pending_q.clear()

    def finish(self, audit: Sequence[SourceStats], decisions: Sequence[SourceStats]) -> Report:
        self.audit_finished(None)
        self._expire_early(float("inf"))
        span = self._decision_span
        o = self.options
        notice = registration_notice(
            o.webhook_configuration, o.configuration_recorded, self.registration.resource_seen
        )
        return self._tally.report(
            audit,
            decisions,
            audit_span=(self.audit_start, self.audit_end),
            decision_span=(span[0], span[1]) if span else (None, None),
            notices=(notice,) if notice else (),
            first_registered=self.registration.first_created if o.registration_known else None,
        )

    # -- the join ---------------------------------------------------------------------------------

    def _join(self, record: AuditRecord) -> None:
        if not record.decision_ids:
            return
        seen = self._remember(record, record.decision_ids[0])
        for decision_id in record.decision_ids:
            found = self._pending.pop(decision_id, None)
            if found is not None:
                if self._in_window(found.time):
                    self._count(found, record.auth_user)
                    self._tally.count("joined")
                if decision_id == seen.decision_id:
                    seen.first = found.time
            else:
                recorded = seen if decision_id == seen.decision_id else None
                self._early[decision_id] = (record.stage_time, recorded, record.auth_user)
                self._early_q.append((record.stage_time, decision_id))

    def _remember(self, record: AuditRecord, decision_id: str) -> _Seen:
        key = (record.user, record.resource_key, record.subresource, record.namespace, record.name)
        seen = _Seen(
            record.received,
            record.stage_time,
            record.audit_id,
            decision_id,
            operations(record.verb, record.subresource),
            record.verb == "deletecollection",
        )
        self._seen.setdefault(key, []).append(seen)
        self._seen_q.append((record.stage_time, key))
        return seen

    def _judge(self, record: AuditRecord) -> None:
        """Bypass, sensitive-access and fence-removal findings of a request's last stage
        (`detect.findings`: the same as the live paths alert), given its registration standing;
        a dodged bypass whose standing is not known yet is held (`_registration_news`)."""
        if not self._in_window(record.received):
            return
        standing = self._standing(record.received)
        found = list(findings(record, self.options.exempt_namespaces, standing))
        if (
            standing is Standing.UNKNOWN
            and self.options.registration_known
            and (BYPASS, "dodged") in found
        ):
            self._held.append(record)
            if len(self._held) > self.options.max_open_requests:
                self._settle(self._held.popleft(), Standing.UNKNOWN)
            found = [f for f in found if not hinges_on_registration(*f)]
        self._found(record, found)

    def _standing(self, t: float) -> Standing:
        if not self.options.registration_known:
            return Standing.UNKNOWN
        return self.registration.standing(t)

    def _registration_news(self, record: AuditRecord) -> None:
        """An event of a webhook configuration, or a trace of ours: once the registration
        windows tell, the held bypasses are judged."""
        windows = self.registration
        if record.configuration:
            windows.observe(record)
        if record.decision_ids or record.failed_open:
            windows.traced(record.received)
        if windows.settled:
            while self._held:
                held = self._held.popleft()
                self._settle(held, windows.standing(held.received))

    def _settle(self, record: AuditRecord, standing: Standing) -> None:
        """A held bypass's findings, now that its standing is known (or will never be)."""
        found = findings(record, self.options.exempt_namespaces, standing)
        self._found(record, [f for f in found if hinges_on_registration(*f)])

    def _found(self, record: AuditRecord, found: list[tuple[str, str]]) -> None:
        for kind, cause in found:
            if kind == BYPASS:
                if cause == "fail-open":
                    self._remember(record, "")
                self._tally.bypass(record, cause)
            elif kind == BEFORE_REGISTRATION:
                self._tally.count("before_registration")
            elif kind == SENSITIVE_ACCESS:
                self._tally.access(record)
            elif kind == FENCE_REMOVED:
                self._tally.fence_removed(record, cause)

    def _resolve(self, d: DecisionRecord, *, final: bool) -> None:
        """An unjoined decision whose audit event can no longer come: retried, gap or uncovered."""
        if not self._in_window(d.time):
            return
        if not self.from_api_server(d):
            self._tally.unverified(d)  # no audit event recorded it: never the API server's
            return
        self._count(d, d.user)
        paired = self._pair(d)
        if paired is not None and paired.decision_id:
            self._tally.retried(d, paired.audit_id, paired.decision_id, paired.collection)
            return
        # At the end of the audit logs a decision counts only if they run past it by more than
        # the clock skew: after admission a request ends within milliseconds, so an event still
        # missing then is missing (a request slower than that shows as a gap).
        skew = self.options.clock_skew
        start, end = self.audit_start, self.audit_end
        if (start is None or d.time < start - skew) or (
            final and (end is None or d.time + skew >= end)
        ):
            self._tally.count("uncovered")
            return
        self._tally.gap(d, paired.audit_id if paired is not None else "")

    def _count(self, d: DecisionRecord, auth_user: str) -> None:
        """Count a decision as the API server's; probing goes by the authenticated user (the
        joined audit event's), the webhook's user when no event recorded it."""
        self._tally.count("decisions")
        self._tally.decision(d, auth_user or d.user)

    def from_api_server(self, d: DecisionRecord) -> bool:
        """Whether an unjoined decision may be the API server's: an older log without `client`,
        or a verified client that is the API server's (any, when no subject is given)."""
        if not d.client:
            return True
        if d.client == UNAUTHENTICATED:
            return False
        subjects = self.options.client_subjects
        return not subjects or d.client in subjects or any(n in subjects for n in d.common_names)

    def _pair(self, d: DecisionRecord) -> _Seen | None:
        """The recorded request this decision was one more webhook call of, if any.

        Same user, resource, namespace and name (or the collection, for a deletecollection
        item), an operation the request's verb may reach the webhook as, and the decision made
        while the request was in flight; best first: inside the request's own time span rather
        than only within the clock skew of it, and joined rather than failed open. The decision the
        event recorded must not be younger: only the first call's decision-id is kept.

        A CREATE is never one more call: the API server calls webhooks again only for UPDATE and
        DELETE (conflict retries; a denied try on a stale cached object, apiserver
        storage/etcd3/store.go), and a server-side-apply create that lost a race comes back as an
        UPDATE. Two CREATEs of one object are two requests; a missing event is an audit gap. A
        CREATE is still paired with a request the API server failed open for (a late answer).
        Nor is a CONNECT (admitted once per request, apiserver endpoints/handlers/rest.go
        ConnectResource): an exec beside a recorded, longer exec into the same pod is its own.
        """
        never_retried = d.operation in ("CREATE", "CONNECT")
        skew = self.options.clock_skew
        best: tuple[int, _Seen] | None = None
        for name in dict.fromkeys((d.name, "")):
            for seen in self._seen.get((d.user, d.resource, d.subresource, d.namespace, name), ()):
                if d.operation not in seen.operations or (never_retried and seen.decision_id):
                    continue
                if seen.first is not None and seen.first > d.time:
                    continue  # only the first call's decision-id lands: this one came before it
                if not seen.received - skew <= d.time <= seen.stage_time + skew:
                    continue
                inside = seen.received <= d.time <= seen.stage_time
                rank = 2 * inside + bool(seen.decision_id)
                if best is None or rank > best[0]:
                    best = (rank, seen)
        return best[1] if best is not None else None

    def _repeated(self, stage: _StageKey) -> bool:
        stages = self._stages
        if stage in stages:
            return True
        stages.add(stage)
        queue = self._stages_q
        queue.append(stage)
        forget = max(self._audit_clock, stage[2]) - self.options.join_window
        while queue and queue[0][2] < forget:
            stages.discard(queue.popleft())
        return False

    # -- expiry -----------------------------------------------------------------------------------

    def _expire(self) -> None:
        clock = self._audit_clock
        self._last_expiry = clock
        cutoff = clock - self.options.join_window
        queue, pending = self._pending_q, self._pending
        while queue and queue[0].time <= cutoff:
            d = queue.popleft()
            if pending.get(d.decision_id) is d:
                del pending[d.decision_id]
                self._resolve(d, final=False)
        forget = clock - 2 * self.options.join_window - self.options.clock_skew
        seen_q = self._seen_q
        while seen_q and seen_q[0][0] <= forget:
            _, key = seen_q.popleft()
            entries = self._seen.get(key)
            if entries:
                entries[:] = [e for e in entries if e.stage_time > forget]
                if not entries:
                    del self._seen[key]

    def _expire_early(self, cutoff: float) -> None:
        queue = self._early_q
        span = self._decision_span
        skew = self.options.clock_skew
        while queue and queue[0][0] <= cutoff:
            stage_time, decision_id = queue.popleft()
            if self._early.pop(decision_id, None) is None:
                continue
            covered = span and span[0] - skew <= stage_time <= span[1] + self.options.join_window
            if covered and self._in_window(stage_time):
                self._tally.count("audit_without_decision")

    def _in_window(self, t: float) -> bool:
        o = self.options
        return (o.since is None or t >= o.since) and (o.until is None or t <= o.until)
