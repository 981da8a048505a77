"""The report model: the options of one run and the frozen findings and counts it reports.

Listed findings (bypasses, gaps, retries, sensitive access, fence removals) stop at
`max_items`; the `Summary` counts stay exact. The renderings of a `Report` are `render_json`,
`render_text` and `render_html` (with `render_svg` for its timeline).
"""

from __future__ import annotations

from dataclasses import dataclass

from webhook.correlate.records import SourceStats
from webhook.correlate.registration_windows import DEFAULT_GRACE
from webhook.registration import DEFAULT_RULES, WebhookRule


@dataclass(frozen=True, slots=True)
class CorrelateOptions:
    webhook_names: tuple[str, ...]
    exempt_namespaces: frozenset[str] = frozenset()
    rules: tuple[WebhookRule, ...] = DEFAULT_RULES
    since: float | None = None
    until: float | None = None
    join_window: float = 120.0  # how long after a decision its audit event may be written
    clock_skew: float = 1.0  # between the webhook's clock and the API server's
    probe_threshold: int = 10
    probe_window: float = 600.0
    max_items: int = 1000  # per listed finding; counts stay exact
    max_open_requests: int = 100_000  # ResponseStarted events waiting for ResponseComplete
    # The API server's client-certificate subjects (commonName or whole subject); empty: any
    # verified certificate. Decisions from other clients count only when an audit event joins.
    client_subjects: frozenset[str] = frozenset()
    # Decisions waiting for their audit event at most (0: no cap, the report's way); a live
    # monitor whose feed stopped forgets the oldest, counted uncovered.
    max_pending_decisions: int = 0
    # kubefence's ValidatingWebhookConfiguration (the config's `drift.webhookConfiguration`):
    # its writes in the audit log tell requests made before kubefence was registered (not
    # bypasses) and while it was deleted (`unregistered`); "": unknown, nothing is assumed.
    webhook_configuration: str = ""
    registration_grace: float = DEFAULT_GRACE  # after a create, for the API server's informer
    # Whether the audit Policy given (`--audit-policy`) records that configuration's writes;
    # None: no policy given (the log's own events tell); False: nothing is assumed.
    configuration_recorded: bool | None = None
    # A live detector that does not know yet whether kubefence was registered holds a dodged
    # bypass this long (audit time) for the log to tell, then alerts it as dodged.
    registration_hold: float = 60.0

    @property
    def registration_known(self) -> bool:
        """Whether the registration of kubefence can be read from the audit log at all."""
        return bool(self.webhook_configuration) and self.configuration_recorded is not False


@dataclass(frozen=True, slots=True)
class Bypass:
    time: str
    audit_id: str
    # "fail-open" (the webhook was down or slow) | "dodged" (no trace of it) | "unregistered"
    # (no trace of it, made while its webhook configuration was deleted)
    cause: str
    user: str
    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str
    code: int | None
    dry_run: bool
    webhook: str  # the webhook that failed open ("" when dodged)
    auth_user: str = ""  # the authenticated user, when `user` is the one it impersonated


@dataclass(frozen=True, slots=True)
class AuditGap:
    time: str
    decision_id: str
    decision: str
    operation: str
    resource: str
    subresource: str
    namespace: str
    name: str
    user: str
    dry_run: bool
    failed_open_audit_id: str = ""  # the API server failed open for it: answered too late


@dataclass(frozen=True, slots=True)
class Retried:
    time: str
    decision_id: str
    operation: str
    resource: str
    namespace: str
    name: str
    user: str
    audit_id: str  # the audit event that recorded the request
    recorded_decision_id: str  # the decision-id that event carries (the first call's)
    collection: bool  # one item of a deletecollection rather than a conflict retry


@dataclass(frozen=True, slots=True)
class Prober:
    user: str
    denials: int  # denials within the densest --probe-window
    window_start: str
    window_end: str


@dataclass(frozen=True, slots=True)
class Access:
    time: str
    audit_id: str
    user: str
    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str
    code: int | None
    decision_id: str
    auth_user: str = ""  # the authenticated user, when `user` is the one it impersonated


@dataclass(frozen=True, slots=True)
class FenceRemoval:
    """A NetworkPolicy write (delete, update, create) that left a namespace unfenced or
    neutralised (`detect.findings`)."""

    time: str
    audit_id: str
    cause: str  # "decided": our webhook said so (fence-lost); "undecided": it bypassed us too
    user: str
    verb: str
    namespace: str
    name: str
    code: int | None
    unfenced: tuple[str, ...]  # the directions the fence-lost annotation names; () undecided
    auth_user: str = ""  # the authenticated user, when `user` is the one it impersonated


@dataclass(frozen=True, slots=True)
class Unverified:
    """A decision made for a client other than the API server, that no audit event recorded."""

    time: str
    decision_id: str
    client: str  # the verified certificate subject, or "unauthenticated"
    peer: str
    decision: str
    operation: str
    resource: str
    subresource: str
    namespace: str
    name: str
    user: str


@dataclass(frozen=True, slots=True)
class Bucket:
    start: float
    seconds: float
    allowed: int
    denied: int
    fail_open: int  # bypasses because the API server gave up on the webhook
    dodged: int  # bypasses without any trace of the webhook
    gaps: int
    unregistered: int = 0  # bypasses while the webhook configuration was deleted

    @property
    def bypasses(self) -> int:
        return self.fail_open + self.dodged + self.unregistered


@dataclass(frozen=True, slots=True)
class Summary:
    audit_events: int
    decisions: int
    joined: int
    retried: int
    bypasses: int
    fail_open: int
    dodged: int
    audit_gaps: int
    uncovered: int  # decisions outside the audit logs' time span: neither joined nor gaps
    audit_without_decision: int  # joined audit events whose decision no given log holds
    denials: int
    probers: int
    sensitive_access: int
    malformed_lines: int
    logs_overlap: bool = True  # False: the audit and decision logs lie apart in time
    unverified: int = 0  # decisions for other clients than the API server, never recorded
    fence_removals: int = 0  # NetworkPolicy writes that left a namespace unfenced or neutralised
    unregistered: int = 0  # bypasses while kubefence's webhook configuration was deleted
    before_registration: int = 0  # would-be dodged bypasses before it was first registered


@dataclass(frozen=True, slots=True)
class Report:
    summary: Summary
    bypasses: tuple[Bypass, ...]
    audit_gaps: tuple[AuditGap, ...]
    retried: tuple[Retried, ...]
    probers: tuple[Prober, ...]
    sensitive_access: tuple[Access, ...]
    sensitive_by_user: dict[str, int]
    denials_by_rule: dict[str, int]
    denials_by_namespace: dict[str, int]
    denials_by_user: dict[str, int]
    timeline: tuple[Bucket, ...]
    options: CorrelateOptions
    audit_span: tuple[float | None, float | None]
    decision_span: tuple[float | None, float | None]
    audit_sources: tuple[SourceStats, ...] = ()
    decision_sources: tuple[SourceStats, ...] = ()
    unverified: tuple[Unverified, ...] = ()
    fence_removals: tuple[FenceRemoval, ...] = ()
    # What the report cannot tell, one line each (no record of the webhook configuration, no
    # config given): said once, in every rendering.
    notices: tuple[str, ...] = ()
    first_registered: float | None = None  # the configuration's first create, when the log has it
