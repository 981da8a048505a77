"""What `kubefence scan` finds: the frozen findings of one scan, and the policy-CRD groups it knows.

A `ScanReport` holds, per namespace that is not exempt, not Terminating and whose rule is not
`off`, the `Unfenced` directions (with the policies that neutralise them), the `PolicyFinding`s
of policies that neutralise a fence or open the pods they select to every peer, the
`AuditScopeFinding`s of the audit-scope preflight (each with the `AuditCause`s, the audit policy
rules that put it out of scope), the `PolicyCrd` groups the cluster serves, the namespaces whose
labels do not enforce Pod Security Admission's baseline level, near-total openings, the
`LabelTrust` allow rules keyed on namespace labels, the `exposure` findings (Services with
externalIPs, who holds nodes/proxy: `webhook.findings.exposure`), and the `HostFinding`s of
running Pods and workload templates on the ways onto the node (`webhook.findings.host`).
`judge.scan` builds it; `render` prints it. Data only: no I/O, no logic beyond derived views.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from webhook.findings.exposure import NOTHING_READ, Exposure
from webhook.netpol import Direction
from webhook.rules.result import AUDIT_SCOPE, DEFAULT_DENY, HOST_NETWORK

# API groups whose policies can allow traffic that a namespace's NetworkPolicies deny.
POLICY_CRD_GROUPS: dict[str, tuple[str, str]] = {
    "policy.networking.k8s.io": (
        "AdminNetworkPolicy, BaselineAdminNetworkPolicy",
        "cluster-wide policies evaluated before NetworkPolicies: an Allow there overrides a "
        "namespace's default-deny",
    ),
    "crd.projectcalico.org": (
        "Calico NetworkPolicy, GlobalNetworkPolicy",
        "ordered policies that can allow traffic before Kubernetes NetworkPolicies are evaluated",
    ),
    "projectcalico.org": (
        "Calico NetworkPolicy, GlobalNetworkPolicy (Calico API server)",
        "ordered policies that can allow traffic before Kubernetes NetworkPolicies are evaluated",
    ),
    "cilium.io": (
        "CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy",
        "allow rules that add to what NetworkPolicies allow: one of them can open a fenced "
        "namespace",
    ),
}


@dataclass(frozen=True, slots=True)
class Unfenced:
    namespace: str
    missing: tuple[Direction, ...]
    neutralised_by: Mapping[Direction, tuple[str, ...]]
    running_pods: int | None
    mode: str
    isolated: tuple[Direction, ...] = ()  # missing directions a policy isolates (but opens too)

    @property
    def fixable(self) -> tuple[Direction, ...]:
        """The directions a new default-deny policy is needed for (no policy isolates them)."""
        return tuple(d for d in self.missing if d not in self.isolated)


@dataclass(frozen=True, slots=True)
class PolicyFinding:
    namespace: str
    policy: str
    directions: tuple[Direction, ...]


@dataclass(frozen=True, slots=True)
class AuditCause:
    """An audit policy rule that puts requests outside the audited scope, and why."""

    rule: int | None  # index into the policy's rules (`rules[N]`, from 0); None: no rule matches
    described: str  # `rules[N] (level ...; ...)`, or that no rule matches
    reason: str  # "level None, below Metadata" | "stage ResponseComplete omitted, ..."
    verbs: tuple[str, ...]  # the audit verbs of the request that it catches

    @property
    def key(self) -> tuple[int | None, str]:
        return (self.rule, self.reason)


@dataclass(frozen=True, slots=True)
class AuditScopeFinding:
    resource: str  # "group/resource" or "resource/subresource"
    operation: str
    writer: str
    namespaces: tuple[str, ...]
    message: str  # the audit-scope rule's own message, for the first namespace
    warning: str
    causes: tuple[AuditCause, ...] = ()  # one per audit rule (and reason) that catches it

    @property
    def cause_key(self) -> tuple[tuple[int | None, str], ...]:
        """What `scan` groups findings by: the audit policy rules that put them out of scope."""
        return tuple(c.key for c in self.causes)


@dataclass(frozen=True, slots=True)
class AuditScopeGroup:
    """The findings one audit policy rule (or pair of rules) puts outside the audited scope."""

    causes: tuple[AuditCause, ...]  # with the verbs of every finding of the group
    findings: tuple[AuditScopeFinding, ...]

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(sorted({ns for f in self.findings for ns in f.namespaces}))

    @property
    def rules(self) -> tuple[int, ...]:
        return tuple(c.rule for c in self.causes if c.rule is not None)


@dataclass(frozen=True, slots=True)
class NearlyOpen:
    """A fenced direction whose all-pods policies let almost every peer in on almost every port."""

    namespace: str
    direction: Direction
    policies: tuple[str, ...]
    left_out: str  # what the near-total opening still leaves out


@dataclass(frozen=True, slots=True)
class LabelTrust:
    """An allow-rule peer whose namespaceSelector keys on a namespace label other than the name:
    whoever may label namespaces decides who it admits (Ingress) or lets the pods reach (Egress)."""

    namespace: str
    policy: str
    direction: str
    where: str  # spec.ingress[0].from[1].namespaceSelector
    selector: str  # as `kubectl get -l` reads it
    keys: tuple[str, ...]  # the trusted label keys


@dataclass(frozen=True, slots=True)
class HostFinding:
    """A way onto the node in a running Pod or a workload template: the `host-network` rule's
    finding, with the mode key (`check`) that governs it and that key's mode in the namespace."""

    namespace: str
    object: str  # `Pod web-0`, `Deployment web`
    check: str  # the mode key: privileged, hostPath, probeHost, ...
    fields: tuple[str, ...]  # the fields it names, the first the one it is about
    message: str  # the rule's own message
    mode: str  # enforce | warn | audit
    owner: str = ""  # a Pod's controller (`DaemonSet agent`), from its ownerReferences
    enforce_mode: str = ""  # the check's mode under `mode: enforce` (`enforce_modes`)


@dataclass(frozen=True, slots=True)
class WouldDeny:
    """A request this cluster sends on its own that `mode: enforce` would deny: a workload's next
    Pod, a Deployment's next ReplicaSet, a CronJob's next Job (`webhook.findings.recreation`)."""

    namespace: str
    object: str  # the workload it re-creates for: `Deployment web`, `Pod web-0`
    owner: str  # a Pod's controller (`ReplicaSet web-5d4`), from its ownerReferences; else ""
    creates: str  # the kind the request creates: Pod, ReplicaSet, Job
    resource: str  # as the audit-scope findings name it: pods, apps/replicasets, batch/jobs
    writer: str  # who sends it: replicaset-controller, ..., any user (a Pod no controller owns)
    rules: tuple[str, ...]  # the rules that deny it, as in the `rules` annotation
    messages: tuple[str, ...]  # the webhook's denial messages, one per failed enforce result


# How each finding is labelled: whether enforce would deny something the cluster re-creates.
WOULD_DENY = "would-deny"
ADVISORY = "advisory"


@dataclass(frozen=True, slots=True)
class PolicyCrd:
    group: str
    kinds: str
    note: str


@dataclass(frozen=True, slots=True)
class ScanReport:
    namespaces: int
    scanned: tuple[str, ...]
    exempt: tuple[str, ...]
    terminating: tuple[str, ...]
    off: tuple[str, ...]
    unfenced: tuple[Unfenced, ...]
    neutralising: tuple[PolicyFinding, ...]
    open_selected: tuple[PolicyFinding, ...]
    audit_scope: tuple[AuditScopeFinding, ...]
    policy_crds: tuple[PolicyCrd, ...]
    require: tuple[Direction, ...]
    strict: bool
    audit_policy: str | None
    existing_policies: Mapping[str, frozenset[str]]
    # Not exempt, not Terminating, and no `pod-security.kubernetes.io/enforce: baseline` (or
    # restricted): only kubefence's host-network rule refuses hostPID, privileged and hostPath pods.
    without_pod_security: tuple[str, ...] = ()
    nearly_open: tuple[NearlyOpen, ...] = ()  # allowNearlyAll: warned, not a finding
    audit_min_level: str = "Metadata"
    label_trust: tuple[LabelTrust, ...] = ()
    exposure: Exposure = NOTHING_READ
    host_network: tuple[HostFinding, ...] = ()
    # What `mode: enforce` would deny of what the cluster re-creates; the modes judged under.
    would_deny: tuple[WouldDeny, ...] = ()
    enforce_modes: Mapping[str, str] = field(default_factory=dict)

    @property
    def findings(self) -> bool:
        return bool(
            self.would_deny
            or self.unfenced
            or self.host_network
            or self.neutralising
            or self.audit_scope
            or self.label_trust
            or self.exposure.external_ips
            or any(not h.builtin for h in self.exposure.node_proxy)
        )

    @property
    def advisory(self) -> int:
        """How many findings are advisory: enforce denies nothing this cluster re-creates for
        them (it may deny new requests), or never denies (label trust, externalIPs, nodes/proxy)."""
        labelled = [
            *(self.unfenced_label(u.namespace) for u in self.unfenced),
            *(self.unfenced_label(p.namespace) for p in self.neutralising),
            *(self.host_label(h) for h in self.host_network),
            *(self.audit_label(a) for a in self.audit_scope),
        ]
        return (
            labelled.count(ADVISORY)
            + len(self.label_trust)
            + len(self.exposure.external_ips)
            + sum(1 for h in self.exposure.node_proxy if not h.builtin)
        )

    def _denied(self, namespace: str, rule: str) -> list[WouldDeny]:
        return [d for d in self.would_deny if d.namespace == namespace and rule in d.rules]

    def unfenced_label(self, namespace: str) -> str:
        """An unfenced namespace (and a policy neutralising its fence) is `would-deny` when a
        re-creation there is denied by default-deny, else advisory (new workloads would be)."""
        return WOULD_DENY if self._denied(namespace, DEFAULT_DENY) else ADVISORY

    def host_label(self, finding: HostFinding) -> str:
        """`would-deny` when enforce enforces the check and denies the object's re-creation."""
        if finding.enforce_mode != "enforce":
            return ADVISORY
        denied = self._denied(finding.namespace, HOST_NETWORK)
        return WOULD_DENY if any(d.object == finding.object for d in denied) else ADVISORY

    def audit_label(self, finding: AuditScopeFinding) -> str:
        """`would-deny` when one of the cluster's own creates of that kind by that writer, in one
        of the finding's namespaces, is denied by audit-scope."""
        for namespace in finding.namespaces:
            for d in self._denied(namespace, AUDIT_SCOPE):
                if (d.resource, d.writer, "CREATE") == (
                    finding.resource,
                    finding.writer,
                    finding.operation,
                ):
                    return WOULD_DENY
        return ADVISORY

    def audit_scope_groups(self) -> tuple[AuditScopeGroup, ...]:
        """The audit-scope findings grouped by the audit policy rules that catch them, in rule
        order (a request no rule matches last)."""
        grouped: dict[tuple[tuple[int | None, str], ...], list[AuditScopeFinding]] = {}
        for finding in self.audit_scope:
            grouped.setdefault(finding.cause_key, []).append(finding)
        groups = []
        for key, findings in grouped.items():
            verbs: dict[tuple[int | None, str], dict[str, None]] = {k: {} for k in key}
            first: dict[tuple[int | None, str], AuditCause] = {}
            for finding in findings:
                for cause in finding.causes:
                    verbs[cause.key].update(dict.fromkeys(cause.verbs))
                    first.setdefault(cause.key, cause)
            causes = tuple(AuditCause(k[0], first[k].described, k[1], tuple(verbs[k])) for k in key)
            groups.append(AuditScopeGroup(causes, tuple(findings)))
        return tuple(sorted(groups, key=_rule_order))


def _rule_order(group: AuditScopeGroup) -> tuple[float, ...]:
    return tuple(float("inf") if c.rule is None else c.rule for c in group.causes)
