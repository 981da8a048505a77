"""The monitor's audit gaps, pure: the webhook's sensitive decisions and the audit feed in,
`evasion.audit_gap` alerts out, judged by correlate's own join (`webhook.correlate.join`).

`serve --decisions-to` sends the monitor each sensitive decision it makes (exec, attach,
portforward, a proxy, an ephemeral container, a NetworkPolicy deletion, a `fence-lost`); an
audit event records the request with our `<webhook name>/decision-id` annotation. A decision that
no event joins within the window is a request the feed never brought: an event the truncating
backend dropped (over `--audit-webhook-truncate-max-event-size`, which a padded `Audit-ID` header
makes it: k8s.io/apiserver@v0.37.2 plugin/pkg/audit/truncate/truncate.go), a batch refused whole.

The rules are the report's (`Correlator._resolve`), so the live alert does not cry wolf where
`kubefence correlate` counts no gap: the join is on the decision-id annotation, never the
auditID (the client's); a decision that was one more webhook call of a recorded request is
retried, not missing (a CONNECT or CREATE never is); a decision from a client that is not a
verified API server (`client` "unauthenticated", or not one of `client_subjects`) is unverified;
a decision from before the feed's coverage (what this Lease holder has taken) is uncovered. A
request the audit Policy may leave without a prompt event (level None, the stage carrying the
annotations omitted) is never sent (`webhook.decisionfeed`).

Invariants:
- No I/O and no clock of its own: the audit clock is the feed's (`reached`), so a stalled feed
  resolves nothing (its silence is the canary's to alert) and a batch delayed within the window
  is no gap.
- Bounded: decisions waiting by `max_pending_decisions`, the rest of the join by its window;
  only events of the kinds serve sends decisions of are joined (`webhook.decisionfeed`).
- An alert holds the decision's metadata only (never object content).
"""

from __future__ import annotations

from dataclasses import replace

from webhook.correlate.detect import AUDIT_GAP, Alert
from webhook.correlate.join import Correlator
from webhook.correlate.model import CorrelateOptions
from webhook.correlate.records import AuditRecord, DecisionRecord
from webhook.correlate.tally import Tally

MAX_PENDING = 10_000  # sensitive decisions waiting for their audit event


class _Sink(Tally):
    """The join's findings as the monitor keeps them: gaps become alerts, the rest is counted
    (the report's lists and aggregates would grow with a feed that never ends)."""

    def __init__(self, options: CorrelateOptions) -> None:
        super().__init__(options)
        self.alerts: list[Alert] = []
        self.counts: dict[str, int] = {}

    def count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def decision(self, d: DecisionRecord, prober: str) -> None:
        return

    def access(self, record: AuditRecord) -> None:
        return

    def fence_removed(self, record: AuditRecord, cause: str) -> None:
        return

    def bypass(self, record: AuditRecord, cause: str) -> None:
        return  # the Detector alerts these

    def retried(
        self, d: DecisionRecord, audit_id: str, recorded_decision_id: str, collection: bool
    ) -> None:
        self.count("retried")

    def unverified(self, d: DecisionRecord) -> None:
        self.count("unverified")

    def gap(self, d: DecisionRecord, failed_open_audit_id: str) -> None:
        self.count("audit_gaps")
        self.alerts.append(gap_alert(d))


def gap_alert(d: DecisionRecord) -> Alert:
    return Alert(
        event=AUDIT_GAP,
        time=d.time_text,
        user=d.user,
        resource=d.resource,
        subresource=d.subresource,
        namespace=d.namespace,
        name=d.name,
        cause="no-event",
        decision_id=d.decision_id,
        operation=d.operation,
        decision=d.decision,
    )


class GapWatch:
    """Decisions held for the window (`options.join_window`, the feed's) against the feed."""

    def __init__(self, options: CorrelateOptions) -> None:
        if not options.max_pending_decisions:
            options = replace(options, max_pending_decisions=MAX_PENDING)
        self.options = options
        self._sink = _Sink(options)
        # Its join judges no bypass (the Detector alerts those): nothing to hold for the
        # registration of kubefence.
        self._join = Correlator(replace(options, webhook_configuration=""), tally=self._sink)

    @property
    def counts(self) -> dict[str, int]:
        """What was resolved otherwise than joined: retried, unverified, uncovered, audit_gaps."""
        return self._sink.counts

    def decision(self, record: DecisionRecord) -> list[Alert]:
        """Hold a sensitive decision for its audit event; one not from a verified API server is
        resolved at once (it can never be a gap, and held it would push a real one out)."""
        if not self._join.from_api_server(record):
            self._sink.unverified(record)
            return []
        self._join.decision(record)
        return self._drain()

    def audit(self, record: AuditRecord) -> list[Alert]:
        """A relevant audit record; joined when it is of a kind serve sends decisions of (the
        others' decision-ids would wait for a decision that never comes, a window's worth)."""
        if not (record.sensitive or record.fence_lost or _network_policy(record)):
            return []
        self._join.audit(record)
        return self._drain()

    def reached(self, t: float) -> list[Alert]:
        """The feed has brought events up to audit time `t`: the first call starts its coverage,
        and decisions older than the window by then are resolved."""
        join = self._join
        if join.audit_start is None:
            join.audit_start = t
        join.audit_reached(t)
        join.expire_early(t - self.options.join_window - self.options.clock_skew)
        return self._drain()

    def _drain(self) -> list[Alert]:
        alerts = self._sink.alerts
        if not alerts:
            return []
        self._sink.alerts = []
        return alerts


def _network_policy(record: AuditRecord) -> bool:
    return record.group == "networking.k8s.io" and record.resource == "networkpolicies"
