"""`kubefence scan`, the judgement: what the webhook would object to, before anyone enforces it.

Findings, per namespace that is not exempt, not Terminating and whose rule is not `off`:
- unfenced: a direction of `defaultDeny.require` the namespace is not fenced for, exactly as the
  `default-deny` rule judges it (`rules.default_deny.unfenced_directions`);
- neutralising: the policies whose pooled rules let every peer in (`allow-all`); a new
  default-deny cannot fix those directions, the policies must change;
- outside the audited scope (with an audit policy configured): the `audit-scope` rule itself,
  run for each workload kind, operation and usual writer (`usual_writers`), whatever mode it is
  in;
- ways onto the node: the `host-network` rule's own findings for every running Pod and workload
  template of those namespaces (`webhook.findings.host`), with the mode each is in;
- allow rules keyed on a namespace label other than `kubernetes.io/metadata.name` (in
  namespaces not exempt or Terminating, whatever the modes: the `namespace-labels` rule warns
  only when a label changes), Services with externalIPs outside exempt namespaces, and who holds
  nodes/proxy beyond the API server's own bindings (`webhook.findings.exposure`).
And the gate: every re-creation of those Pods and workloads (a controller's next Pod, a
Deployment's next ReplicaSet, a CronJob's next Job) decided by `decide` under the modes of the
chart's `mode: enforce` (`enforce_modes`, `recreation`): `would_deny`, by which the report labels
each finding above would-deny or advisory.
Warnings, not findings: policies that open the pods they select to every peer, policy CRDs the
cluster serves that can allow traffic beside NetworkPolicies (kubefence does not evaluate them),
and namespaces whose labels do not enforce Pod Security Admission's `baseline` level, which
forbids hostNetwork, hostPID, privileged containers, added capabilities and hostPaths upstream.
Pure: facts, settings and served API groups in, a frozen `model.ScanReport` out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from webhook.admission import AdmissionRequest, GroupVersionKind, GroupVersionResource
from webhook.auditpolicy import describe_rule
from webhook.cluster.view import ClusterView, NamespaceFacts, OverlaidView, namespace_facts
from webhook.findings.enforce_modes import enforce_settings
from webhook.findings.exposure import NOTHING_READ, Exposure
from webhook.findings.host import WORKLOAD_KINDS, host_findings
from webhook.findings.model import (
    POLICY_CRD_GROUPS,
    AuditCause,
    AuditScopeFinding,
    LabelTrust,
    NearlyOpen,
    PolicyCrd,
    PolicyFinding,
    ScanReport,
    Unfenced,
)
from webhook.findings.recreation import would_deny
from webhook.findings.usual_writers import ANY_USER, CONNECTS, POD_UPDATES, USUAL_WRITERS
from webhook.labels import NAMESPACE_NAME_LABEL
from webhook.netpol import DIRECTIONS, opens_selected_to_everyone
from webhook.rules import audit_scope
from webhook.rules.default_deny import unfenced_directions
from webhook.settings import Mode, Settings
from webhook.subject import subject_of


def scan(
    namespaces: Iterable[NamespaceFacts],
    cluster: ClusterView,
    settings: Settings,
    served_groups: Iterable[str] = (),
    exposure: Exposure = NOTHING_READ,
    *,
    workloads: Iterable[Mapping[str, Any]] = (),
) -> ScanReport:
    """Judge every namespace of the view as the webhook would; `exposure` is what was read of
    Services and RBAC, `workloads` the Pods and workload objects read (`host.WORKLOAD_KINDS`),
    whose re-creations are decided under the modes of `mode: enforce` (`would_deny`).

    A namespace that only workloads name (a `--state` folder without its Namespace object) is
    judged as the live cluster's namespace would be: no policies, no labels but its name."""
    workloads = tuple(workloads)
    enforce = enforce_settings(settings)
    facts = sorted(namespaces, key=lambda f: f.name)
    known = {f.name for f in facts}
    named = {_namespace_of(w) for w in workloads if w.get("kind") in WORKLOAD_KINDS} - known
    facts = sorted(
        [*facts, *(namespace_facts(n, labels={NAMESPACE_NAME_LABEL: n}) for n in named)],
        key=lambda f: f.name,
    )
    view = _WithNamespaces(cluster, {f.name: f for f in facts if f.name in named})
    exempt, terminating, off, scanned = [], [], [], []
    unfenced: list[Unfenced] = []
    neutralising: list[PolicyFinding] = []
    open_selected: list[PolicyFinding] = []
    nearly_open: list[NearlyOpen] = []
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
                d: ns.fence(d, settings.strict).openers
                for d in settings.require
                if ns.fence(d, settings.strict).neutralised
            }
            if settings.mode("allowNearlyAll", ns.name) is not Mode.OFF:
                nearly_open.extend(
                    NearlyOpen(ns.name, d, fence.nearly_all_by, fence.nearly_all)
                    for d in settings.require
                    if (fence := ns.fence(d, settings.strict)).nearly_all_by and fence.fenced
                )
            if missing:
                isolated = tuple(d for d in missing if ns.fence(d, settings.strict).fencing)
                unfenced.append(
                    Unfenced(ns.name, missing, by_direction, ns.running_pods, mode.value, isolated)
                )
            named = {p for d in by_direction for p in ns.fence(d, settings.strict).neutralised_by}
            for policy in sorted(named):
                directions = tuple(d for d in DIRECTIONS if policy in by_direction.get(d, ()))
                neutralising.append(PolicyFinding(ns.name, policy, directions))
        if settings.mode("allowAllSelected", ns.name) is not Mode.OFF:
            for p in ns.policies:
                opened = tuple(
                    d
                    for d in DIRECTIONS
                    if not p.opens_all_pods
                    and not p.reach_for(d).is_nothing
                    and opens_selected_to_everyone(p, ns.policies, d, limits=ns.limits)
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
        nearly_open=tuple(nearly_open),
        audit_scope=audit_scope_preflight(audited, view, settings),
        policy_crds=tuple(
            PolicyCrd(g, *POLICY_CRD_GROUPS[g])
            for g in sorted(set(served_groups))
            if g in POLICY_CRD_GROUPS
        ),
        require=settings.require,
        without_pod_security=tuple(
            ns.name for ns in audited if not enforces_pod_security(ns.labels)
        ),
        strict=settings.strict,
        audit_policy=settings.audit_policy_file,
        existing_policies={ns.name: frozenset(p.name for p in ns.policies) for ns in facts},
        audit_min_level=settings.min_level.wire,
        label_trust=tuple(
            LabelTrust(ns.name, p.name, t.direction, t.where, t.describe(), t.keys)
            for ns in audited
            for p in ns.policies
            for t in p.label_trust
        ),
        host_network=host_findings(
            workloads, {*settings.exemptions.namespaces, *terminating}, settings, enforce
        ),
        would_deny=would_deny(workloads, view, enforce),
        enforce_modes={key: enforce.mode(key, "").value for key in enforce.modes},
        exposure=replace(
            exposure,
            external_ips=tuple(
                s
                for s in exposure.external_ips
                if s.namespace not in settings.exemptions.namespaces
            ),
        ),
    )


def _namespace_of(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    namespace = meta.get("namespace") if isinstance(meta, Mapping) else None
    return namespace if isinstance(namespace, str) and namespace else "default"


class _WithNamespaces(OverlaidView):
    """A cluster view with the namespaces only workloads named added (as a live cluster has
    them); they hold no policies, so nothing else of the view changes."""

    def __init__(self, base: ClusterView, added: Mapping[str, NamespaceFacts]) -> None:
        super().__init__(base)
        self._added = added

    def namespace(self, name: str) -> NamespaceFacts | None:
        return self._base.namespace(name) or self._added.get(name)


POD_SECURITY_ENFORCE = "pod-security.kubernetes.io/enforce"


def enforces_pod_security(labels: Mapping[str, str]) -> bool:
    """Whether a namespace's labels enforce PSA `baseline` or `restricted`.

    As `api.PolicyToEvaluate` reads them: an invalid level is enforced as `restricted`; without
    the label the API server's PodSecurity configuration default applies, which scan cannot see
    (`privileged` unless configured), so it counts as not enforcing.
    """
    level = labels.get(POD_SECURITY_ENFORCE)
    return level is not None and level != "privileged"


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
    causes: dict[tuple[str, str, str, str], tuple[AuditCause, ...]] = {}
    for ns in namespaces:
        override = settings.overrides.get(ns.name, {})
        if override.get("auditScope") is Mode.OFF:
            continue
        for request, resource, writer in _requests(ns.name, settings):
            for result in audit_scope.check(subject_of(request, settings.limits), cluster, forced):
                if result.passed:
                    continue
                shape = result.message.replace(f'namespace "{ns.name}"', "namespace *")
                key = (resource, request.operation, writer, shape)
                if key not in groups:
                    causes[key] = _causes(request, settings)
                groups.setdefault(key, []).append((ns.name, result.message, result.warning))
    return tuple(
        AuditScopeFinding(
            resource,
            operation,
            writer,
            tuple(n for n, _, _ in hits),
            hits[0][1],
            hits[0][2],
            causes[(resource, operation, writer, shape)],
        )
        for (resource, operation, writer, shape), hits in groups.items()
    )


def _causes(request: AdmissionRequest, settings: Settings) -> tuple[AuditCause, ...]:
    """The audit policy rules (with the reason) that put the request's verbs out of scope."""
    policy = settings.audit_policy
    assert policy is not None  # the preflight runs only with a policy
    merged: dict[tuple[int | None, str], list[str]] = {}
    for verb, evaluation, reason in audit_scope.out_of_scope_verbs(
        request, policy, settings.min_level
    ):
        merged.setdefault((evaluation.rule, reason), []).append(verb)
    return tuple(
        AuditCause(
            rule,
            describe_rule(policy, rule) if rule is not None else "no audit policy rule matches",
            reason,
            tuple(verbs),
        )
        for (rule, reason), verbs in merged.items()
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
    subresources = [(resource, sub, kind, "CONNECT") for resource, sub, kind in CONNECTS]
    subresources += [("pods", sub, "Pod", "UPDATE") for sub in POD_UPDATES]
    for resource, sub, kind, operation in subresources:
        yield (
            AdmissionRequest(
                uid="kubefence-scan",
                kind=GroupVersionKind("", "v1", kind),
                resource=GroupVersionResource("", "v1", resource),
                operation=operation,
                user=ANY_USER.user,
                namespace=namespace,
                name="example",
                sub_resource=sub,
            ),
            f"{resource}/{sub}",
            ANY_USER.label,
        )
