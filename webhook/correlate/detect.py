"""The live detections: audit records in, alert records out; shared by correlate and the monitor.

`findings` is the one judgement of a request's audit event (bypass, fail-open or dodged; sensitive
access; fence removal) that `join.Correlator` applies to each request's last stage and `Detector`
to each request's first judged stage, so `kubefence correlate`, `correlate --follow` and
`kubefence monitor` classify the same events the same way. `Detector` adds what a live feed needs:
probing by the *authenticated* user in a sliding window (the feed's heartbeat, `CanaryWatch`, is
the monitor's: `webhook.monitor.canary`).

Invariants:
- Pure: records and clock readings in, `Alert`s out; no I/O, no clock of its own.
- Bounded: requests already judged (to ignore later stages and batches sent again) and users
  with recent denials are each capped; the oldest is forgotten first. A
  request is remembered by a 16-byte digest of its request key (`request_digest`), never by its
  auditID or URI, which a client chooses and may make as long as it likes.
- An `Alert` holds request metadata only, never object contents (the audit event's
  `requestObject`/`responseObject` are never read).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from hashlib import blake2b
from typing import Any

import orjson

from webhook.controllers import NAMESPACE_CLEANERS
from webhook.correlate.model import CorrelateOptions
from webhook.correlate.records import AuditRecord
from webhook.correlate.registration_windows import RegistrationWindows, Standing, bypass_cause
from webhook.correlate.timestamps import format_time

BYPASS = "evasion.bypass"
SENSITIVE_ACCESS = "evasion.sensitive_access"
PROBING = "evasion.probing"
FENCE_REMOVED = "evasion.fence_removed"
FEED_SILENT = "evasion.feed_silent"
UNJUDGED = "evasion.unjudged"  # the monitor: an event it could not parse within its caps
AUDIT_GAP = "evasion.audit_gap"  # the monitor: a decision of ours that no audit event recorded
ALERT_KINDS = (BYPASS, SENSITIVE_ACCESS, PROBING, FENCE_REMOVED, FEED_SILENT, UNJUDGED, AUDIT_GAP)
# Not an alert: a request that would be a dodged bypass, made before kubefence was registered.
BEFORE_REGISTRATION = "before_registration"
BYPASS_CAUSES = ("fail-open", "dodged", "unregistered")
# The audit verbs that may take a NetworkPolicy away or weaken it (DELETE and UPDATE in admission).
POLICY_REMOVALS = frozenset({"delete", "deletecollection", "update", "patch"})
# ... and those our `fence-lost` annotation may mark: a created allow-all neutralises a fence too.
POLICY_CHANGES = POLICY_REMOVALS | {"create"}

MAX_JUDGED = 100_000  # requests remembered as judged (a batch sent again, a later stage)
MAX_PROBE_USERS = 10_000  # users with recent denials remembered for probing
MAX_HELD = 10_000  # dodged bypasses held while it is not known whether kubefence was registered


def request_digest(*parts: object) -> bytes:
    """A fixed-size key for a request (its request key, and a stage when that is what is kept).

    The parts are JSON-encoded as one list, so no two different tuples of parts share an
    encoding; a 128-bit blake2b digest of it is as good as the parts for telling requests apart.
    What JSON cannot encode (an integer past 64 bits, never from orjson's parser, which makes it
    a float) is told apart by its repr, which no JSON list encoding starts like.
    """
    try:
        encoded = orjson.dumps(parts)
    except TypeError:
        encoded = repr(parts).encode("utf-8", "backslashreplace")
    return blake2b(encoded, digest_size=16).digest()


def findings(
    record: AuditRecord,
    exempt_namespaces: frozenset[str],
    standing: Standing = Standing.UNKNOWN,
) -> Iterator[tuple[str, str]]:
    """(alert kind, cause) of one request's judged audit event: bypass, sensitive, fence removed.

    A bypass is a registered write admitted (code below 400) outside the exempt namespaces that
    no kubefence webhook decided: `fail-open` when the API server's `failed-open` annotation names
    one of ours, `dodged` without any trace (not the namespace controller's deletecollection),
    `unregistered` for a dodged one made while kubefence's webhook configuration was deleted.
    One made before the configuration first existed (`standing` BEFORE, see
    `registration_windows`) is no bypass: `BEFORE_REGISTRATION` is yielded instead (counted).
    `standing` UNKNOWN (the default) assumes nothing: a plain `dodged`.

    A fence removal is a NetworkPolicy write that went through: `decided` when our webhook's
    `fence-lost` annotation says letting it through left the namespace unfenced or neutralised
    (a teardown, warn or audit mode, an exempt user; a create or update that opens it to all; a
    deletecollection carries the first of its items' that did); `undecided` when a delete,
    deletecollection, update or patch is a bypass too (no decision of ours: it may have taken any
    fence away). A decided one without the annotation left every required direction fenced and
    is no alert.
    Whether it was a dry run is never read from the URI here: the webhook writes `fence-lost`
    only for a request that is not one, from the request's true `dryRun`, while a DELETE's body
    overrides its URI's (`?dryRun=All` with a body really deletes, and `kubectl delete
    --dry-run=server` shows no `dryRun` in its URI). An undecided delete or deletecollection is
    taken as real for the same reason (a false alarm is the safe way to be wrong); an undecided
    update or patch reads `dryRun` from its query only, so its URI is believed.
    """
    ok = record.code is None or record.code < 400
    if record.namespace in exempt_namespaces:
        return
    bypass = ""
    if record.registered and ok and not record.decision_ids:
        if record.failed_open:
            bypass = "fail-open"
        # The namespace cleaners' deletecollection of an empty collection calls no webhook.
        elif not (record.verb == "deletecollection" and record.auth_user in NAMESPACE_CLEANERS):
            bypass = "dodged"
    if bypass:
        bypass = bypass_cause(bypass, standing)
        yield (BYPASS, bypass) if bypass else (BEFORE_REGISTRATION, "")
    if record.sensitive and record.code is not None and record.code < 400:
        yield SENSITIVE_ACCESS, ""
    if (
        record.group == "networking.k8s.io"
        and record.resource == "networkpolicies"
        and record.verb in POLICY_CHANGES
        and ok
    ):
        if record.fence_lost:
            yield FENCE_REMOVED, "decided"
        elif bypass and record.verb in POLICY_REMOVALS and not record.dry_run:
            yield FENCE_REMOVED, "undecided"


def hinges_on_registration(kind: str, cause: str) -> bool:
    """Whether a finding depends on the standing of its request (what a caller that does not
    know it yet holds back): a dodged bypass and the undecided fence removal it makes."""
    return kind in (BYPASS, BEFORE_REGISTRATION) or (kind == FENCE_REMOVED and cause == "undecided")


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert line; `fields()` is what the log line carries besides `event`."""

    event: str
    time: str
    audit_id: str = ""
    user: str = ""  # the authenticated user
    impersonated_user: str = ""
    groups: tuple[str, ...] = ()
    verb: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    code: int | None = None
    cause: str = ""
    source_ips: tuple[str, ...] = ()
    user_agent: str = ""
    denials: int = 0  # probing: denials within the window
    window_start: str = ""  # probing: the first of them; feed_silent: the canary sent then
    decision_id: str = ""  # audit_gap: the decision no audit event recorded
    operation: str = ""  # audit_gap: its admission operation (no audit verb was seen)
    decision: str = ""  # audit_gap: allow, deny, warn, ...

    def fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "time": self.time,
            "audit_id": self.audit_id,
            "user": self.user,
            "impersonated_user": self.impersonated_user,
            "groups": list(self.groups),
            "verb": self.verb,
            "resource": self.resource,
            "subresource": self.subresource,
            "namespace": self.namespace,
            "name": self.name,
            "code": self.code,
            "cause": self.cause,
            "source_ips": list(self.source_ips),
            "user_agent": self.user_agent,
        }
        if self.event == PROBING:
            fields["denials"], fields["window_start"] = self.denials, self.window_start
        elif self.event == FEED_SILENT:
            fields["canary_sent"] = self.window_start
        elif self.event == AUDIT_GAP:
            fields["decision_id"], fields["operation"] = self.decision_id, self.operation
            fields["decision"] = self.decision
        return fields


def alert_of(record: AuditRecord, kind: str, cause: str) -> Alert:
    return Alert(
        event=kind,
        time=record.received_text,
        audit_id=record.audit_id,
        user=record.auth_user,
        impersonated_user=record.impersonated_user,
        groups=record.groups,
        verb=record.verb,
        resource=record.resource_key,
        subresource=record.subresource,
        namespace=record.namespace,
        name=record.name,
        code=record.code,
        cause=cause,
        source_ips=record.source_ips,
        user_agent=record.user_agent,
    )


class Detector:
    """Alerts from audit records as they arrive, in (roughly) time order, any stage but the first.

    Each request is judged once, at the first of its stages seen (admission is over by then: its
    annotations and code are there), so a long-running exec alerts when it starts, not when it
    ends. A user denied by kubefence `probe_threshold` times within `probe_window` (audit time) is
    probing, alerted once per window.

    Whether kubefence was registered comes from the feed itself (`registration_windows`): a
    dodged bypass made before anything told (the feed's first minutes: a fresh API server's own
    requests, a monitor just started) is held until something does, at most `registration_hold`
    of audit time (then alerted `dodged`, as nothing is assumed) and `MAX_HELD` requests: made
    before the configuration's first create it is counted in `before_registration`, made while
    it was deleted it is alerted `unregistered`. Its other findings (sensitive access) are alerted
    at once.
    """

    def __init__(self, options: CorrelateOptions, *, max_judged: int = MAX_JUDGED) -> None:
        self.options = options
        self._max_judged = max_judged
        self._judged: OrderedDict[bytes, None] = OrderedDict()  # request_digest of request keys
        self._denials: OrderedDict[str, deque[float]] = OrderedDict()
        self._alerted: dict[str, float] = {}  # user -> when probing was last alerted
        self.registration = RegistrationWindows(
            options.webhook_configuration, options.registration_grace
        )
        # held dodged bypasses, by request digest: the record and the audit time to give up at
        self._held: OrderedDict[bytes, tuple[AuditRecord, float]] = OrderedDict()
        self.before_registration = 0  # requests that were not bypasses: made before it

    def feed(self, record: AuditRecord) -> list[Alert]:
        """The alerts of one record (none for a request already judged)."""
        alerts = self._registration_news(record)
        if record.configuration and not record.registered:
            return alerts + self.reached(record.stage_time)
        key = request_digest(*record.request_key)
        if key in self._judged:
            return alerts
        self._judged[key] = None
        if len(self._judged) > self._max_judged:
            self._judged.popitem(last=False)
        if record.received < (self.options.since or float("-inf")) or record.received > (
            self.options.until or float("inf")
        ):
            return alerts
        standing = self._standing(record.received)
        found = list(findings(record, self.options.exempt_namespaces, standing))
        if self._holds(standing, found):
            self._held[key] = (record, record.stage_time + self.options.registration_hold)
            if len(self._held) > MAX_HELD:
                _, (oldest, _) = self._held.popitem(last=False)
                alerts += self._settle(oldest, Standing.UNKNOWN)
            found = [f for f in found if not hinges_on_registration(*f)]
        alerts += self._alerts(record, found)
        if record.denied:
            probing = self._denied(record)
            if probing is not None:
                alerts.append(probing)
        return alerts + self.reached(record.stage_time)

    def reached(self, t: float) -> list[Alert]:
        """The feed has reached audit time `t`: held bypasses whose hold is over are alerted
        as they are (`dodged`: nothing told whether kubefence was registered)."""
        alerts: list[Alert] = []
        while self._held:
            key, (record, until) = next(iter(self._held.items()))
            if until > t:
                break
            del self._held[key]
            alerts += self._settle(record, Standing.UNKNOWN)
        return alerts

    def _holds(self, standing: Standing, found: list[tuple[str, str]]) -> bool:
        return (
            standing is Standing.UNKNOWN
            and self.options.registration_known
            and (BYPASS, "dodged") in found
        )

    def _standing(self, t: float) -> Standing:
        if not self.options.registration_known:
            return Standing.UNKNOWN
        return self.registration.standing(t)

    def _registration_news(self, record: AuditRecord) -> list[Alert]:
        """Feed the registration windows; once they tell, the held bypasses are judged."""
        windows = self.registration
        if record.configuration:
            windows.observe(record)
        if record.decision_ids or record.failed_open:
            windows.traced(record.received)
        if not (self._held and windows.settled):
            return []
        alerts: list[Alert] = []
        for held, _ in self._held.values():
            alerts += self._settle(held, windows.standing(held.received))
        self._held.clear()
        return alerts

    def _settle(self, record: AuditRecord, standing: Standing) -> list[Alert]:
        found = findings(record, self.options.exempt_namespaces, standing)
        return self._alerts(record, [f for f in found if hinges_on_registration(*f)])

    def _alerts(self, record: AuditRecord, found: list[tuple[str, str]]) -> list[Alert]:
        alerts = []
        for kind, cause in found:
            if kind == BEFORE_REGISTRATION:
                self.before_registration += 1
            else:
                alerts.append(alert_of(record, kind, cause))
        return alerts

    def _denied(self, record: AuditRecord) -> Alert | None:
        o = self.options
        user, t = record.auth_user, record.stage_time
        recent = self._denials.get(user)
        if recent is None:
            recent = self._denials[user] = deque(maxlen=o.probe_threshold)
            if len(self._denials) > MAX_PROBE_USERS:
                gone, _ = self._denials.popitem(last=False)
                self._alerted.pop(gone, None)
        else:
            self._denials.move_to_end(user)
        recent.append(t)
        if len(recent) < o.probe_threshold or recent[-1] - recent[0] > o.probe_window:
            return None
        last = self._alerted.get(user)
        if last is not None and t - last <= o.probe_window:
            return None
        self._alerted[user] = t
        return replace(
            alert_of(record, PROBING, ""), denials=len(recent), window_start=format_time(recent[0])
        )
