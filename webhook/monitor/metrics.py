"""Prometheus metrics of one monitor process, in a registry of its own (tests apart)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from webhook.correlate.detect import ALERT_KINDS, BYPASS_CAUSES
from webhook.tls import HANDSHAKE_FAILURE_KINDS

_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SIZES = (1, 5, 10, 25, 50, 100, 200, 400, 1000, 5000)
_CAUSES = {
    "evasion.bypass": BYPASS_CAUSES,
    "evasion.fence_removed": ("decided", "undecided"),
    "evasion.feed_silent": ("canary-missing",),
    "evasion.unjudged": ("too-costly", "not-json"),
    "evasion.audit_gap": ("no-event",),
}


@dataclass
class MonitorMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.events = Counter(
            "kubefence_monitor_audit_events_total",
            "Audit events received, by stage; an event sent again (same request, stage and"
            " stageTimestamp) counts once.",
            ["stage"],
            registry=r,
        )
        self.duplicates = Counter(
            "kubefence_monitor_duplicate_events_total",
            "Audit events received again (a batch the API server sent once more), not counted"
            " above.",
            registry=r,
        )
        self.malformed = Counter(
            "kubefence_monitor_malformed_events_total",
            "EventList items without an auditID and stage, skipped.",
            registry=r,
        )
        self.unjudged = Counter(
            "kubefence_monitor_unjudged_events_total",
            "EventList items that could not be judged within the per-event caps (each alerted"
            " evasion.unjudged).",
            registry=r,
        )
        self.decisions = Counter(
            "kubefence_monitor_decisions_total",
            "Sensitive decisions POSTed by serve (--decisions-to), by result: held (against the"
            " feed for --audit-gap-window), follower (not the Lease holder: not held),"
            " malformed.",
            ["result"],
            registry=r,
        )
        self.decision_posts = Counter(
            "kubefence_monitor_decision_posts_total",
            "POST /decisions requests by HTTP status.",
            ["code"],
            registry=r,
        )
        self.batches = Counter(
            "kubefence_monitor_batches_total",
            "POST /audit requests by HTTP status.",
            ["code"],
            registry=r,
        )
        self.alerts = Counter(
            "kubefence_monitor_alerts_total",
            "Alerts raised, by kind (the log line's event) and cause.",
            ["kind", "cause"],
            registry=r,
        )
        self.before_registration = Counter(
            "kubefence_monitor_before_registration_total",
            "Requests no kubefence webhook decided, made before its webhook configuration was"
            " first created (the feed shows the create): not bypasses, not alerted.",
            registry=r,
        )
        self.batch_size = Histogram(
            "kubefence_monitor_batch_events",
            "Events per EventList received.",
            buckets=_SIZES,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "kubefence_monitor_batch_processing_seconds",
            "Time from a batch's body read to its answer.",
            buckets=_SECONDS,
            registry=r,
        )
        self.last_event = Gauge(
            "kubefence_monitor_last_event_timestamp_seconds",
            "When the monitor last received a new audit event (Unix time, the monitor's clock,"
            " never an event's own stamp; 0: none yet).",
            registry=r,
        )
        self.canary_seen = Gauge(
            "kubefence_monitor_canary_last_seen_timestamp_seconds",
            "When the monitor's own canary request last came back through the feed (0: never).",
            registry=r,
        )
        self.leader = Gauge(
            "kubefence_monitor_leader",
            "1 while this monitor holds the monitor Lease and takes batches (Ready); 0 on a"
            " follower, which answers 503. Always 1 without leader election.",
            registry=r,
        )
        self.handshake_failures = Counter(
            "kubefence_monitor_tls_handshake_failures_total",
            "TLS handshakes refused on the monitor's port, by kind (no_client_certificate,"
            " untrusted_client_certificate, not_tls, protocol, other): a sender the client CA"
            " turns away never reaches a handler.",
            ["kind"],
            registry=r,
        )
        for result in ("held", "follower", "malformed"):
            self.decisions.labels(result)
        for kind in HANDSHAKE_FAILURE_KINDS:
            self.handshake_failures.labels(kind)
        for kind in ALERT_KINDS:
            for cause in _CAUSES.get(kind, ("",)):
                self.alerts.labels(kind, cause)

    def render(self) -> bytes:
        return generate_latest(self.registry)
