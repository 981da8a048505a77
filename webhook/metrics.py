"""Prometheus metrics of one webhook process, in a registry of its own (tests and workers apart).

No `*_created` series: they add a line to every counter and histogram child for a value (when the
child was first touched) that rates and resets never need (`disable_created_metrics`, process-wide).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated

CONTENT_TYPE = CONTENT_TYPE_LATEST

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self._children: dict[int, dict[tuple[str, str], Any]] = {}
        r = self.registry
        self.decisions = Counter(
            "kubefence_decisions_total",
            "Admission decisions by verdict and operation.",
            ["decision", "operation"],
            registry=r,
        )
        self.rule_failures = Counter(
            "kubefence_rule_failures_total",
            "Rules that did not pass, by rule id and mode.",
            ["rule", "mode"],
            registry=r,
        )
        self.duration = Histogram(
            "kubefence_admission_duration_seconds",
            "Time from request body read to response, as kubefence measures it.",
            buckets=_BUCKETS,
            registry=r,
        )
        self.handshake_failures = Counter(
            "kubefence_tls_handshake_failures_total",
            "TLS handshakes refused on the webhook port, by kind (no_client_certificate, "
            "untrusted_client_certificate, not_tls, protocol, other): a client the client CA "
            "turns away is counted here, since it never reaches a handler.",
            ["kind"],
            registry=r,
        )
        self.bad_requests = Counter(
            "kubefence_bad_requests_total",
            "Requests answered 400/413 because the body was not a valid AdmissionReview.",
            ["code"],
            registry=r,
        )
        self.policies_refused = Counter(
            "kubefence_policies_refused_total",
            "NetworkPolicies kubefence did not analyse, over a `limits:` bound; each counts as"
            " opening every direction it touches (fail-closed).",
            registry=r,
        )
        self.analyses_busy = Counter(
            "kubefence_analyses_busy_total",
            "NetworkPolicy reviews denied because they waited past their bound for their "
            "namespace's turn to be analysed (a storm of that namespace's own).",
            registry=r,
        )
        self.internal_errors = Counter(
            "kubefence_internal_errors_total",
            "Decisions that failed inside kubefence and were answered with a denial.",
            registry=r,
        )
        self.config_reloads = Counter(
            "kubefence_config_reloads_total",
            "Config and audit policy reloads by result (applied, rejected).",
            ["result"],
            registry=r,
        )
        self.cert_reloads = Counter(
            "kubefence_certificate_reloads_total",
            "Serving certificate reloads by result (applied, rejected).",
            ["result"],
            registry=r,
        )
        self.cert_not_after = Gauge(
            "kubefence_certificate_not_after_timestamp_seconds",
            "Expiry of the serving certificate in use (Unix time).",
            registry=r,
        )
        self.cache_synced = Gauge(
            "kubefence_cache_synced", "1 once the cluster view has synced.", registry=r
        )
        self.cache_staleness = Gauge(
            "kubefence_cache_staleness_seconds",
            "Seconds the cluster view has been out of touch with the API server.",
            registry=r,
        )
        self.live_reads = Counter(
            "kubefence_live_reads_total",
            "Live reads of a namespace before a denial or a fence removal, by result.",
            ["result"],
            registry=r,
        )
        self.fence_transitions = Counter(
            "kubefence_fence_transitions_total",
            "Namespaces that lost or regained a fence as the informer saw it.",
            ["event", "direction"],
            registry=r,
        )
        self.policy_revision = Gauge(
            "kubefence_policy_revision_info",
            "The settings and audit policy revision in force.",
            ["revision"],
            registry=r,
        )
        self.webhook_drift = Gauge(
            "kubefence_webhook_drift",
            "1 while a watched admission object (webhook configuration, policy, binding) drifts.",
            ["object", "name"],
            registry=r,
        )
        self.webhook_drift_events = Counter(
            "kubefence_webhook_drift_events_total",
            "Drift of kubefence's admission objects appearing or changing (drift), or resolved.",
            ["object", "event"],
            registry=r,
        )

        self.leader = Gauge(
            "kubefence_leader",
            "1 while this process holds the notifier Lease (sends fence.lost and webhook.drift"
            " for the cluster), or notifies because the Lease is refused to it (RBAC); 0 on"
            " followers. Always 1 without leader election. Alert on sum(kubefence_leader) != 1.",
            registry=r,
        )

    def count_decision(self, verdict: str, operation: str, failures: list[tuple[str, str]]) -> None:
        """Count one decision; label children are looked up once (`labels()` locks each call)."""
        self._inc(self.decisions, (verdict, operation))
        for rule, mode in failures:
            self._inc(self.rule_failures, (rule, mode))

    def _inc(self, counter: Counter, labels: tuple[str, str]) -> None:
        children = self._children.setdefault(id(counter), {})
        child = children.get(labels)
        if child is None:
            child = children[labels] = counter.labels(*labels)
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
