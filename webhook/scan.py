"""`kubefence scan`, the pure part: what the webhook would object to, before anyone enforces it.

Findings, per namespace that is not exempt, not Terminating and whose rule is not `off`:
- unfenced: a direction of `defaultDeny.require` the namespace is not fenced for, exactly as the
  `default-deny` rule judges it (`rules.default_deny.unfenced_directions`);
- neutralising: the policies whose pooled rules let every peer in (`allow-all`); a new
  default-deny cannot fix those directions, the policies must change;
- outside the audited scope (with an audit policy configured): the `audit-scope` rule itself,
  run for each workload kind, operation and usual writer, whatever mode it is in.
Warnings, not findings: policies that open the pods they select to every peer, and policy CRDs the
cluster serves that can allow traffic beside NetworkPolicies (kubefence does not evaluate them).
Pure: facts, settings and served API groups in, a frozen ScanReport out; `fix_manifests` renders
the minimal default-deny policies that fence every unfenced namespace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from webhook.admission import AdmissionRequest, GroupVersionKind, GroupVersionResource, UserInfo
from webhook.cluster.view import ClusterView, NamespaceFacts
from webhook.netpol import DIRECTIONS, Direction
from webhook.rules import audit_scope
from webhook.rules.default_deny import fix_manifest, unfenced_directions
from webhook.settings import Mode, Settings
from webhook.subject import subject_of

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
        "allow rules that add to NetworkPolicies': a rule there can open a fenced namespace",
    ),
}


@dataclass(frozen=True, slots=True)
class Writer:
    label: str
    user: UserInfo


def _controller(name: str) -> Writer:
    username = f"system:serviceaccount:kube-system:{name}"
    groups = ("system:serviceaccounts", "system:serviceaccounts:kube-system")
    return Writer(name, UserInfo(username, (*groups, "system:authenticated")))


ANY_USER = Writer("any user", UserInfo("kubefence:any-user", ("system:authenticated",)))

# (group, version, resource, kind) -> who usually writes it, with which operations. The built-in
# controllers act under their own service accounts (kube-controller-manager's
# --use-service-account-credentials, the kubeadm default).
_CREATE_UPDATE = ("CREATE", "UPDATE")
USUAL_WRITERS: tuple[
    tuple[tuple[str, str, str, str], tuple[tuple[Writer, tuple[str, ...]], ...]], ...
] = (
    (
        ("", "v1", "pods", "Pod"),
        (
            (ANY_USER, _CREATE_UPDATE),
            (_controller("replicaset-controller"), ("CREATE",)),
            (_controller("daemon-set-controller"), ("CREATE",)),
            (_controller("statefulset-controller"), ("CREATE",)),
            (_controller("job-controller"), ("CREATE",)),
        ),
    ),
    (("apps", "v1", "deployments", "Deployment"), ((ANY_USER, _CREATE_UPDATE),)),
    (
        ("apps", "v1", "replicasets", "ReplicaSet"),
        ((ANY_USER, _CREATE_UPDATE), (_controller("deployment-controller"), _CREATE_UPDATE)),
    ),
    (("apps", "v1", "statefulsets", "StatefulSet"), ((ANY_USER, _CREATE_UPDATE),)),
    (("apps", "v1", "daemonsets", "DaemonSet"), ((ANY_USER, _CREATE_UPDATE),)),
    (
        ("batch", "v1", "jobs", "Job"),
        ((ANY_USER, _CREATE_UPDATE), (_controller("cronjob-controller"), ("CREATE",))),
    ),
    (("batch", "v1", "cronjobs", "CronJob"), ((ANY_USER, _CREATE_UPDATE),)),
    (("", "v1", "replicationcontrollers", "ReplicationController"), ((ANY_USER, _CREATE_UPDATE),)),
)
CONNECTS = (
    ("exec", "PodExecOptions"),
    ("attach", "PodAttachOptions"),
    ("portforward", "PodPortForwardOptions"),
)


@dataclass(frozen=True, slots=True)
class Unfenced:
    namespace: str
    missing: tuple[Direction, ...]
    neutralised_by: Mapping[Direction, tuple[str, ...]]
    running_pods: int | None
    mode: str

    @property
    def fixable(self) -> tuple[Direction, ...]:
        """The directions a new default-deny policy fences (the others need a policy changed)."""
        return tuple(d for d in self.missing if d not in self.neutralised_by)


@dataclass(frozen=True, slots=True)
class PolicyFinding:
    namespace: str
    policy: str
    directions: tuple[Direction, ...]


@dataclass(frozen=True, slots=True)
class AuditScopeFinding:
    resource: str  # "group/resource" or "resource/subresource"
    operation: str
    writer: str
    namespaces: tuple[str, ...]
    message: str  # the audit-scope rule's own message, for the first namespace
    warning: str


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

    @property
    def findings(self) -> bool:
        return bool(self.unfenced or self.neutralising or self.audit_scope)


def scan(
    namespaces: Iterable[NamespaceFacts],
    cluster: ClusterView,
    settings: Settings,
    served_groups: Iterable[str] = (),
) -> ScanReport:
    """Judge every namespace of the view as the webhook would."""
    facts = sorted(namespaces, key=lambda f: f.name)
    exempt, terminating, off, scanned = [], [], [], []
    unfenced: list[Unfenced] = []
    neutralising: list[PolicyFinding] = []
    open_selected: list[PolicyFinding] = []
    for ns in facts:
        if ns.name in settings.exemptions.namespaces:
            exempt.append(ns.name)
            continue
        if ns.terminating:
            terminating.append(ns.name)
            continue
        mode = settings.mode("defaultDeny", ns.name)
        if mode is Mode.OFF:
            off.append(ns.name)
        else:
            scanned.append(ns.name)
            missing, _ = unfenced_directions(ns, settings)
            by_direction = {
                d: ns.fence(d, settings.strict).neutralised_by
                for d in settings.require
                if ns.fence(d, settings.strict).neutralised
            }
            if missing:
                unfenced.append(
                    Unfenced(ns.name, missing, by_direction, ns.running_pods, mode.value)
                )
            for policy in sorted({p for names in by_direction.values() for p in names}):
                directions = tuple(d for d in DIRECTIONS if policy in by_direction.get(d, ()))
                neutralising.append(PolicyFinding(ns.name, policy, directions))
        if settings.mode("allowAllSelected", ns.name) is not Mode.OFF:
            for p in ns.policies:
                opened = tuple(
                    d for d in DIRECTIONS if not p.selects_all and p.opens_to_everyone(d)
                )
                if opened:
                    open_selected.append(PolicyFinding(ns.name, p.name, opened))
    audited = [ns for ns in facts if ns.name not in exempt and ns.name not in terminating]
    return ScanReport(
        namespaces=len(facts),
        scanned=tuple(scanned),
        exempt=tuple(exempt),
        terminating=tuple(terminating),
        off=tuple(off),
        unfenced=tuple(unfenced),
        neutralising=tuple(neutralising),
        open_selected=tuple(open_selected),
        audit_scope=audit_scope_preflight(audited, cluster, settings),
        policy_crds=tuple(
            PolicyCrd(g, *POLICY_CRD_GROUPS[g])
            for g in sorted(set(served_groups))
            if g in POLICY_CRD_GROUPS
        ),
        require=settings.require,
        strict=settings.strict,
        audit_policy=settings.audit_policy_file,
        existing_policies={ns.name: frozenset(p.name for p in ns.policies) for ns in facts},
    )


def audit_scope_preflight(
    namespaces: Sequence[NamespaceFacts], cluster: ClusterView, settings: Settings
) -> tuple[AuditScopeFinding, ...]:
    """The audit-scope rule for every workload kind, operation and usual writer, grouped.

    Run in whatever mode the rule is configured, so it can be checked before enforcement; a
    namespace whose own override turns the rule off, and exempt writers, are left out.
    """
    if settings.audit_policy is None:
        return ()
    modes = dict(settings.modes)
    modes["auditScope"] = Mode.ENFORCE
    forced = replace(settings, modes=modes, overrides={})
    groups: dict[tuple[str, str, str, str], list[tuple[str, str, str]]] = {}
    for ns in namespaces:
        override = settings.overrides.get(ns.name, {})
        if override.get("auditScope") is Mode.OFF:
            continue
        for request, resource, writer in _requests(ns.name, settings):
            for result in audit_scope.check(subject_of(request), cluster, forced):
                if result.passed:
                    continue
                shape = result.message.replace(f'namespace "{ns.name}"', "namespace *")
                key = (resource, request.operation, writer, shape)
                groups.setdefault(key, []).append((ns.name, result.message, result.warning))
    return tuple(
        AuditScopeFinding(
            resource, operation, writer, tuple(n for n, _, _ in hits), hits[0][1], hits[0][2]
        )
        for (resource, operation, writer, _), hits in groups.items()
    )


def _requests(namespace: str, settings: Settings) -> Iterable[tuple[AdmissionRequest, str, str]]:
    exempt_users = settings.exemptions.users
    exempt_groups = settings.exemptions.groups
    for (group, version, resource, kind), writers in USUAL_WRITERS:
        shown = f"{group}/{resource}" if group else resource
        for writer, operations in writers:
            if writer.user.username in exempt_users or exempt_groups & set(writer.user.groups):
                continue
            for operation in operations:
                yield (
                    AdmissionRequest(
                        uid="kubefence-scan",
                        kind=GroupVersionKind(group, version, kind),
                        resource=GroupVersionResource(group, version, resource),
                        operation=operation,
                        user=writer.user,
                        namespace=namespace,
                        name="" if operation == "CREATE" else "example",
                    ),
                    shown,
                    writer.label,
                )
    if ANY_USER.user.username in exempt_users or exempt_groups & set(ANY_USER.user.groups):
        return
    for sub, kind in CONNECTS:
        yield (
            AdmissionRequest(
                uid="kubefence-scan",
                kind=GroupVersionKind("", "v1", kind),
                resource=GroupVersionResource("", "v1", "pods"),
                operation="CONNECT",
                user=ANY_USER.user,
                namespace=namespace,
                name="example",
                sub_resource=sub,
            ),
            f"pods/{sub}",
            ANY_USER.label,
        )


def fix_manifests(report: ScanReport) -> str:
    """YAML for `kubectl apply -f -`: one default-deny NetworkPolicy per unfenced namespace.

    Directions that a neutralising policy opens cannot be fixed by adding a policy; they are
    named in comments. The policy is called `default-deny` unless that name is taken.
    """
    docs: list[str] = []
    notes: list[str] = []
    for item in report.unfenced:
        for direction, names in item.neutralised_by.items():
            notes.append(
                f"# {item.namespace}: {direction} is opened to every peer by NetworkPolicy "
                f"{', '.join(names)}; narrow or delete it (a new default-deny does not help)"
            )
        if not item.fixable:
            continue
        manifest = fix_manifest(item.namespace, item.fixable)
        taken = report.existing_policies.get(item.namespace, frozenset())
        name = _free_name(taken)
        if name != "default-deny":
            manifest = manifest.replace("  name: default-deny\n", f"  name: {name}\n", 1)
        docs.append(manifest)
    fixed = sum(1 for u in report.unfenced if u.fixable)
    header = [
        f"# kubefence scan --fix: default-deny NetworkPolicies for {fixed} "
        f"namespace{'' if fixed == 1 else 's'} "
        f"(require {', '.join(report.require)}); apply with kubectl apply -f -,",
        "# then allow the traffic each workload needs with further NetworkPolicies.",
        *notes,
    ]
    return "\n".join(header) + "\n" + "".join(f"---\n{d}\n" for d in docs)


def _free_name(taken: frozenset[str]) -> str:
    for name in ("default-deny", "kubefence-default-deny"):
        if name not in taken:
            return name
    n = 2
    while f"kubefence-default-deny-{n}" in taken:
        n += 1
    return f"kubefence-default-deny-{n}"


# --- renderings ---------------------------------------------------------------------------------


def to_json(report: ScanReport) -> dict[str, object]:
    return {
        "summary": {
            "namespaces": report.namespaces,
            "scanned": len(report.scanned),
            "unfenced": len(report.unfenced),
            "neutralising": len(report.neutralising),
            "openSelected": len(report.open_selected),
            "auditScope": len(report.audit_scope),
            "policyCrds": len(report.policy_crds),
            "findings": report.findings,
        },
        "require": list(report.require),
        "definition": "strict" if report.strict else "isolating",
        "auditPolicy": report.audit_policy,
        "unfenced": [
            {
                "namespace": u.namespace,
                "missing": list(u.missing),
                "neutralisedBy": {str(d): list(n) for d, n in u.neutralised_by.items()},
                "fixable": list(u.fixable),
                "runningPods": u.running_pods,
                "mode": u.mode,
            }
            for u in report.unfenced
        ],
        "neutralising": [_policy_json(p) for p in report.neutralising],
        "openSelected": [_policy_json(p) for p in report.open_selected],
        "auditScope": [
            {
                "resource": a.resource,
                "operation": a.operation,
                "writer": a.writer,
                "namespaces": list(a.namespaces),
                "message": a.message,
                "warning": a.warning,
            }
            for a in report.audit_scope
        ],
        "policyCrds": [
            {"group": c.group, "kinds": c.kinds, "note": c.note} for c in report.policy_crds
        ],
        "skipped": {
            "exempt": list(report.exempt),
            "terminating": list(report.terminating),
            "off": list(report.off),
        },
    }


def _policy_json(p: PolicyFinding) -> dict[str, object]:
    return {"namespace": p.namespace, "policy": p.policy, "directions": list(p.directions)}


def render_table(report: ScanReport) -> str:
    skipped = [
        f"{len(names)} {label}"
        for label, names in (
            ("exempt", report.exempt),
            ("terminating", report.terminating),
            ("with defaultDeny off", report.off),
        )
        if names
    ]
    lines = [
        f"kubefence scan: {report.namespaces} namespaces, {len(report.scanned)} scanned"
        + (f" ({', '.join(skipped)} skipped)" if skipped else "")
        + f"; fenced means a default-deny for {', '.join(report.require)}"
        + (" (definition: strict)" if report.strict else "")
    ]
    lines += _table(
        f"UNFENCED NAMESPACES: {len(report.unfenced)}",
        ("NAMESPACE", "MISSING", "NEUTRALISED BY", "RUNNING PODS", "MODE"),
        [
            (
                u.namespace,
                ", ".join(u.missing),
                "; ".join(f"{d}: {', '.join(n)}" for d, n in u.neutralised_by.items()) or "-",
                "-" if u.running_pods is None else str(u.running_pods),
                u.mode,
            )
            for u in report.unfenced
        ],
    )
    lines += _table(
        f"POLICIES THAT NEUTRALISE A FENCE (allow-all): {len(report.neutralising)}",
        ("NAMESPACE", "POLICY", "OPENS"),
        [(p.namespace, p.policy, ", ".join(p.directions)) for p in report.neutralising],
    )
    if report.audit_policy is None:
        lines += ["", "AUDITED SCOPE: not checked (no auditScope.policyFile in the config)"]
    else:
        lines += [
            "",
            f"OUTSIDE THE AUDITED SCOPE: {len(report.audit_scope)} ({report.audit_policy})",
        ]
        for a in report.audit_scope:
            shown = ", ".join(a.namespaces[:4]) + (", ..." if len(a.namespaces) > 4 else "")
            lines.append(
                f"  {a.operation} {a.resource} by {a.writer}, in {len(a.namespaces)} "
                f"namespace{'s' if len(a.namespaces) != 1 else ''} ({shown}):"
            )
            lines.append(f"    {a.message}")
    warnings = [
        f"NetworkPolicy {p.namespace}/{p.policy} opens the pods it selects to every peer "
        f"({', '.join(p.directions)}): anyone who can label a pod can use it"
        for p in report.open_selected
    ] + [
        f"the cluster serves {c.group} ({c.kinds}): {c.note}; kubefence does not evaluate them"
        for c in report.policy_crds
    ]
    if warnings:
        lines += ["", f"WARNINGS: {len(warnings)}", *(f"  {w}" for w in warnings)]
    if any(u.fixable for u in report.unfenced):
        lines += ["", "Fence them: kubefence scan --fix ... | kubectl apply -f -"]
    return "\n".join(lines) + "\n"


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["", title]
    if not rows:
        return out
    table = [tuple(header), *(tuple(r) for r in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    out += [
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table
    ]
    return out
