"""The monitor's alerts as Alertmanager alerts, pure: what is posted, when again, what waits.

`monitor --alertmanager URL` posts each alert the monitor raises to Alertmanager's v2 API
(`POST /api/v2/alerts`, a JSON list of postable alerts: labels, annotations, startsAt, endsAt).
This module decides everything about it without I/O or a clock of its own (times are passed in);
`webhook.monitor.alertmanager` sends.

- **What.** An alert's labels are its identity in Alertmanager (its fingerprint, what a route
  groups and a silence matches): `alertname` (one per kind, `ALERTNAMES`), `event` (the log
  line's kind), `cause`, `namespace`, `user`, `severity`, and the operator's own labels (a
  cluster's name: one Alertmanager takes every cluster's monitor), the empty ones left out. The
  rest of what the log line says goes into annotations: `summary`, `audit_id`, `remedy` and the
  request's other fields. Two alerts with the same labels are one Alertmanager alert, its
  annotations the newest's.
- **How long.** A detection is an instant, so an alert stays active `lifetime` seconds from its
  last raise (the same labels raised again extend it), then is posted once more as resolved
  (`endsAt` now). `evasion.feed_silent` stays active until the feed returns: a canary seen after
  it was raised resolves it.
- **Again.** Alertmanager keeps alerts in memory only, and ends one at its `endsAt`. Every post
  of an active alert carries `endsAt` = now + `4 * resend` (as Prometheus does, so Alertmanager's
  own `resolve_timeout` never applies), and every active alert is posted again each `resend`
  seconds: a restarted Alertmanager has them back within one period, and one that missed a post
  does not end them.
- **What waits.** Each Alertmanager has an `AlertQueue` of at most `queue_size` alerts: one for
  an alert already waiting replaces it in its place (the newest state is sent, once), a new one
  into a full queue pushes the oldest waiting out (counted dropped: a still-active alert is
  posted again within a period, so a drop delays it at most that long).
- **Retries.** A post that fails (a connection error, a timeout, 5xx, 408, 429) is tried again
  after `retry_delay`, doubling from `backoff` to `max_backoff`, `tries` times in all, then its
  alerts are dropped (counted); another 4xx is not tried again (Alertmanager refused the alerts:
  it will again).

Bounded: at most `max_active` alerts are kept active (the oldest raised is forgotten first:
Alertmanager ends it at its last `endsAt`), and each queue holds at most `queue_size`.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.correlate.detect import (
    AUDIT_GAP,
    BYPASS,
    FEED_SILENT,
    FENCE_REMOVED,
    PROBING,
    SENSITIVE_ACCESS,
    UNJUDGED,
    Alert,
)
from webhook.correlate.timestamps import format_time

API_PATH = "/api/v2/alerts"
RESEND_SECONDS = 60.0  # as Prometheus's resend_delay
LIFETIME_SECONDS = 3600.0
QUEUE_SIZE = 10_000  # alerts waiting per Alertmanager (as Prometheus's notification queue)
BATCH = 64  # alerts per POST (as Prometheus's max batch)
MAX_ACTIVE = 10_000
TRIES = 4  # posts of one batch before its alerts are dropped
BACKOFF = 0.5  # seconds before the first retry, doubled each time
MAX_BACKOFF = 10.0
ENDS_AFTER_RESENDS = 4  # endsAt of an active alert: this many periods from its post

ALERTNAMES = {
    BYPASS: "KubefenceBypass",
    SENSITIVE_ACCESS: "KubefenceSensitiveAccess",
    PROBING: "KubefenceProbing",
    FENCE_REMOVED: "KubefenceFenceRemoved",
    FEED_SILENT: "KubefenceFeedSilent",
    UNJUDGED: "KubefenceUnjudgedEvent",
    AUDIT_GAP: "KubefenceAuditGap",
}
SEVERITIES = {
    BYPASS: "critical",
    FENCE_REMOVED: "critical",
    AUDIT_GAP: "critical",
    FEED_SILENT: "critical",
    SENSITIVE_ACCESS: "warning",
    PROBING: "warning",
    UNJUDGED: "warning",
}
_REMEDIES = {
    (BYPASS, "fail-open"): "The API server could not reach kubefence and admitted the request"
    " (failurePolicy Ignore): bring the webhook back, then review what was written; the"
    " webhook's own decision log has no line for it.",
    (BYPASS, "dodged"): "The request reached no kubefence webhook although the registration"
    " covers it: check the ValidatingWebhookConfiguration (rules, selectors, failurePolicy) for"
    " a change, and review what was written.",
    (BYPASS, "unregistered"): "The request was made while kubefence's webhook configuration"
    " was deleted: find who deleted it (the audit log's delete of the configuration) and review"
    " what was written before it came back.",
    (SENSITIVE_ACCESS, ""): "Someone exec'd, attached, port-forwarded, proxied or added an"
    " ephemeral container: confirm it was expected of this user.",
    (PROBING, ""): "This user was denied many times in a short window: someone is feeling out"
    " the policy; confirm who they are and what they tried.",
    (FENCE_REMOVED, "decided"): "A NetworkPolicy write left the namespace unfenced"
    " (kubefence let it through: a teardown, warn or audit mode, an exempt user): put the"
    " default-deny back unless the namespace is being removed.",
    (FENCE_REMOVED, "undecided"): "A NetworkPolicy was removed without kubefence deciding it:"
    " check the namespace's fence (kubefence scan) and the webhook's registration.",
    (FEED_SILENT, ""): "The monitor's own canary request has not come back through the audit"
    " feed: check the API server's --audit-webhook-config-file and the path to the monitor;"
    " nothing is being watched meanwhile.",
    (UNJUDGED, ""): "An audit event was too costly to judge or not JSON: read the monitor's"
    " evasion.unjudged line; a padded request may be hiding from the feed.",
    (AUDIT_GAP, ""): "kubefence decided a sensitive request that no audit event records: the"
    " event was dropped (the truncating backend, a refused batch); review the decision by its"
    " decision_id in the webhook's log.",
}
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
OWN_LABELS = ("alertname", "event", "cause", "namespace", "user", "severity")
_SKIPPED_FIELDS = frozenset(("cause", "namespace", "user"))  # labels already


@dataclass(frozen=True)
class DeliveryPolicy:
    resend: float = RESEND_SECONDS
    lifetime: float = LIFETIME_SECONDS
    queue_size: int = QUEUE_SIZE
    batch: int = BATCH
    max_active: int = MAX_ACTIVE
    tries: int = TRIES
    backoff: float = BACKOFF
    max_backoff: float = MAX_BACKOFF
    labels: Mapping[str, str] = field(default_factory=dict)  # the operator's (a cluster's name)


def alertname(kind: str) -> str:
    """The `alertname` of a kind: `ALERTNAMES`, else `Kubefence` + its name in CamelCase."""
    known = ALERTNAMES.get(kind)
    if known is not None:
        return known
    words = re.split(r"[^a-zA-Z0-9]+", kind.removeprefix("evasion."))
    return "Kubefence" + "".join(w[:1].upper() + w[1:] for w in words)


def labels_of(alert: Alert, extra: Mapping[str, str] = {}) -> dict[str, str]:
    """An alert's labels (its identity in Alertmanager); empty values left out."""
    labels = {
        **extra,
        "alertname": alertname(alert.event),
        "event": alert.event,
        "cause": alert.cause,
        "namespace": alert.namespace,
        "user": alert.user,
        "severity": SEVERITIES.get(alert.event, "warning"),
    }
    return {name: value for name, value in labels.items() if value}


def remedy(alert: Alert) -> str:
    return (
        _REMEDIES.get((alert.event, alert.cause))
        or _REMEDIES.get((alert.event, ""))
        or "Read the monitor's log line of this alert (README, Live monitor)."
    )


def summary(alert: Alert) -> str:
    what = alert.cause and f" ({alert.cause})"
    if alert.event == FEED_SILENT:
        return f"kubefence monitor: the audit feed is silent{what}"
    if alert.event == PROBING:
        return f"kubefence monitor: {alert.user or 'a user'} denied {alert.denials} times"
    target = "/".join(p for p in (alert.resource, alert.subresource) if p)
    if alert.name:
        target = f"{target} {alert.name}" if target else alert.name
    where = alert.namespace and f" in {alert.namespace}"
    verb = alert.verb or alert.operation.lower()
    act = " ".join(p for p in (alert.user, verb, target) if p)
    return f"kubefence monitor: {alert.event}{what}: {act}{where}"


def annotations_of(alert: Alert) -> dict[str, str]:
    """`summary`, `audit_id`, `remedy` and the log line's other fields, as strings; empty ones
    left out."""
    notes = {"summary": summary(alert), "audit_id": alert.audit_id, "remedy": remedy(alert)}
    for name, value in alert.fields().items():
        if name in _SKIPPED_FIELDS or name in notes:
            continue
        if value is None:
            continue
        notes[name] = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return {name: value for name, value in notes.items() if value not in ("", "0")}


def posting(
    labels: Mapping[str, str], annotations: Mapping[str, str], starts: float, ends: float
) -> dict[str, Any]:
    """One postable alert of the v2 API."""
    return {
        "labels": dict(labels),
        "annotations": dict(annotations),
        "startsAt": format_time(starts),
        "endsAt": format_time(ends),
    }


Key = tuple[tuple[str, str], ...]


def key_of(labels: Mapping[str, str]) -> Key:
    return tuple(sorted(labels.items()))


@dataclass(slots=True)
class Active:
    labels: dict[str, str]
    annotations: dict[str, str]
    starts: float  # first raised
    raised: float  # last raised
    until: float  # active until (inf: until resolved)
    posted: float  # last posted


@dataclass(frozen=True, slots=True)
class Posting:
    """An alert to post, by its identity (`key`); `raised`: when the monitor raised it, for a
    first post (None: a re-post, a resolution), which the delivery latency is measured from."""

    key: Key
    alert: dict[str, Any]
    raised: float | None = None


class AlertBook:
    """The alerts active in Alertmanager, as this monitor has posted them."""

    def __init__(self, policy: DeliveryPolicy) -> None:
        self.policy = policy
        self._active: OrderedDict[Key, Active] = OrderedDict()

    def __len__(self) -> int:
        return len(self._active)

    def raised(self, alert: Alert, now: float) -> Posting:
        """An alert the monitor raised: active from now (its first raise, if it is active
        already: Alertmanager keeps the first startsAt), posted at once."""
        p = self.policy
        labels = labels_of(alert, p.labels)
        key = key_of(labels)
        until = math.inf if alert.event == FEED_SILENT else now + p.lifetime
        known = self._active.pop(key, None)
        starts = known.starts if known is not None else now
        entry = Active(labels, annotations_of(alert), starts, now, until, now)
        self._active[key] = entry
        if len(self._active) > p.max_active:
            self._active.popitem(last=False)  # Alertmanager ends it at its last endsAt
        return Posting(key, self._post(entry, now), raised=now)

    def feed_returned(self, seen: float, now: float) -> list[Posting]:
        """The canary came back at `seen`: every `evasion.feed_silent` raised before it ends."""
        ended = [
            key
            for key, a in self._active.items()
            if a.labels.get("event") == FEED_SILENT and a.raised < seen
        ]
        return [self._resolve(key, now) for key in ended]

    def due(self, now: float) -> list[Posting]:
        """What to post at `now`: active alerts whose last post is `resend` old (again, their
        endsAt moved on), and those whose lifetime is over (resolved)."""
        out = []
        for key, a in list(self._active.items()):
            if now >= a.until:
                out.append(self._resolve(key, now))
            elif now - a.posted >= self.policy.resend:
                a.posted = now
                out.append(Posting(key, self._post(a, now)))
        return out

    def _post(self, a: Active, now: float) -> dict[str, Any]:
        ends = now + ENDS_AFTER_RESENDS * self.policy.resend
        return posting(a.labels, a.annotations, a.starts, min(ends, a.until))

    def _resolve(self, key: Key, now: float) -> Posting:
        a = self._active.pop(key)
        return Posting(key, posting(a.labels, a.annotations, a.starts, now))


class AlertQueue:
    """The alerts waiting for one Alertmanager, oldest first, at most `size`; one alert (by its
    labels) waits once, in its first place, with its newest state."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._waiting: OrderedDict[Key, Posting] = OrderedDict()

    def __len__(self) -> int:
        return len(self._waiting)

    def put(self, item: Posting) -> Posting | None:
        """Queue `item`; the one pushed out of a full queue to make room (dropped), else None."""
        waiting = self._waiting.get(item.key)
        if waiting is not None:  # newest state, first place; the earliest raise waiting
            raised = waiting.raised if waiting.raised is not None else item.raised
            self._waiting[item.key] = Posting(item.key, item.alert, raised)
            return None
        dropped = None
        if len(self._waiting) >= self.size:
            _, dropped = self._waiting.popitem(last=False)
        self._waiting[item.key] = item
        return dropped

    def take(self, n: int) -> list[Posting]:
        """The `n` oldest waiting, taken out."""
        return [self._waiting.popitem(last=False)[1] for _ in range(min(n, len(self._waiting)))]


def retry_delay(attempt: int, policy: DeliveryPolicy) -> float:
    """Seconds before try `attempt` (1: the first retry) of a batch."""
    return float(min(policy.max_backoff, policy.backoff * 2 ** (attempt - 1)))


def retryable(status: int) -> bool:
    """Whether a post answered `status` is tried again (Alertmanager may take it later)."""
    return status >= 500 or status in (408, 429)


def parse_label(text: str) -> tuple[str, str]:
    """`NAME=VALUE` of `--alertmanager-label`; ValueError with the reason."""
    name, sep, value = text.partition("=")
    if not sep or not LABEL_NAME.fullmatch(name):
        raise ValueError("give NAME=VALUE, NAME a Prometheus label name")
    if name in OWN_LABELS:
        raise ValueError(f"{name} is one of the alert's own labels ({', '.join(OWN_LABELS)})")
    if not value:
        raise ValueError("an empty value is no label")
    return name, value
