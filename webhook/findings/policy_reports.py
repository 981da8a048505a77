"""`kubefence scan --format policyreport|openreports`: the findings as the Policy WG's reports.

One namespaced report per namespace kubefence judged, with what it found there: the namespace's
fence (`default-deny`: fail, pass, or skip where the rule is off), the NetworkPolicies that open it
(`allow-all`), the audit policy rules that leave it unaudited (`audit-scope`, one result per rule),
its allow rules keyed on namespace labels (`namespace-labels`), Services with externalIPs
(`external-ips`) and the ways onto the node of its running Pods and workload templates
(`host-network`, one result per finding, its rule the mode key); and one cluster report for what
is cluster-wide (policy APIs kubefence does not evaluate, who holds nodes/proxy: `node-proxy`,
lists scan could not read: error) or was not judged (exempt and Terminating namespaces: skip).
`policyreport` writes
`wgpolicyk8s.io/v1alpha2` PolicyReport and ClusterPolicyReport (what Kyverno and Policy Reporter
read); `openreports` writes their successor, `openreports.io/v1alpha1` Report and ClusterReport.

Invariants: every result has `source: kubefence`, a `policy` (kubefence's rule id), a `rule`, a
`result` of pass|fail|warn|skip, a `severity` and the resource it is about; each report's
`summary` counts its results. Findings fail, would-deny and advisory alike, warnings warn. No
timestamps: the same cluster gives the same bytes. Pure: a ScanReport in, YAML text out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from webhook.findings.exposure import DENY_EXTERNAL_IPS
from webhook.findings.host import WORKLOAD_KINDS
from webhook.findings.model import AuditScopeGroup, HostFinding, ScanReport, Unfenced
from webhook.findings.render import audit_fix, who_does_what


@dataclass(frozen=True, slots=True)
class ReportFormat:
    api_version: str
    kind: str
    cluster_kind: str
    source_field: bool  # openreports.io names the tool at the top of each report too


FORMATS: dict[str, ReportFormat] = {
    "policyreport": ReportFormat(
        "wgpolicyk8s.io/v1alpha2", "PolicyReport", "ClusterPolicyReport", False
    ),
    "openreports": ReportFormat("openreports.io/v1alpha1", "Report", "ClusterReport", True),
}
SOURCE = "kubefence"
NAME = "kubefence"
RESULTS = ("pass", "fail", "warn", "error", "skip")
_FENCE = "network fence"
_AUDIT = "audit trail"


def render_reports(report: ScanReport, format_name: str) -> str:
    """Multi-document YAML for `kubectl apply -f -`: the cluster report, then one a namespace."""
    form = FORMATS[format_name]
    per_namespace = _namespace_results(report)
    docs = [_report(form, None, _cluster_results(report))]
    docs += [_report(form, ns, results) for ns, results in sorted(per_namespace.items())]
    head = (
        f"# kubefence scan --format {format_name}: {form.api_version} {form.kind} per namespace "
        f"and one {form.cluster_kind};\n# apply with kubectl apply -f - where the CRDs are "
        "installed (Kyverno, Policy Reporter).\n"
    )
    return head + "".join("---\n" + yaml.safe_dump(d, sort_keys=False, width=1 << 16) for d in docs)


def _report(
    form: ReportFormat, namespace: str | None, results: list[dict[str, Any]]
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": NAME}
    if namespace is not None:
        metadata["namespace"] = namespace
    metadata["labels"] = {"app.kubernetes.io/managed-by": SOURCE}
    doc: dict[str, Any] = {
        "apiVersion": form.api_version,
        "kind": form.kind if namespace is not None else form.cluster_kind,
        "metadata": metadata,
    }
    if form.source_field:
        doc["source"] = SOURCE
    if namespace is not None:
        doc["scope"] = {"apiVersion": "v1", "kind": "Namespace", "name": namespace}
    doc["summary"] = {r: sum(1 for x in results if x["result"] == r) for r in RESULTS}
    doc["results"] = results
    return doc


def _result(
    policy: str,
    rule: str,
    result: str,
    message: str,
    *,
    severity: str,
    category: str = _FENCE,
    resources: Iterable[Mapping[str, str]] = (),
    properties: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "source": SOURCE,
        "policy": policy,
        "rule": rule,
        "result": result,
        "severity": severity,
        "category": category,
        "message": message,
    }
    listed = [dict(r) for r in resources]
    if listed:
        out["resources"] = listed
    if properties:
        out["properties"] = dict(properties)
    return out


def _namespace(name: str) -> dict[str, str]:
    return {"apiVersion": "v1", "kind": "Namespace", "name": name}


def _network_policy(namespace: str, name: str) -> dict[str, str]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "namespace": namespace,
        "name": name,
    }


def _namespace_results(report: ScanReport) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {}
    unfenced = {u.namespace: u for u in report.unfenced}
    required = ", ".join(report.require)
    for ns in report.scanned:
        found = unfenced.get(ns)
        if found is not None:
            results[ns] = [_fence_failed(found)]
            continue
        results[ns] = [
            _result(
                "default-deny",
                "fenced",
                "pass",
                f"namespace {ns} is fenced: a default-deny NetworkPolicy isolates every pod for "
                f"{required}",
                severity="high",
                resources=[_namespace(ns)],
            )
        ]
    for ns in report.off:
        results[ns] = [
            _result(
                "default-deny",
                "fenced",
                "skip",
                f"defaultDeny is off for namespace {ns} (an override in the config)",
                severity="high",
                resources=[_namespace(ns)],
            )
        ]
    neutralising = {p.namespace for p in report.neutralising}
    for p in report.neutralising:
        results.setdefault(p.namespace, []).append(
            _result(
                "allow-all",
                "neutralises-fence",
                "fail",
                f"NetworkPolicy {p.policy} opens namespace {p.namespace} to every peer "
                f"({', '.join(p.directions)}), which undoes its default-deny: narrow or delete it "
                "(a new default-deny does not help)",
                severity="high",
                resources=[_network_policy(p.namespace, p.policy)],
                properties={"directions": ",".join(p.directions)},
            )
        )
    for ns in report.scanned:
        if ns not in neutralising:
            results[ns].append(
                _result(
                    "allow-all",
                    "neutralises-fence",
                    "pass",
                    f"no NetworkPolicy in namespace {ns} opens its fence to every peer",
                    severity="high",
                    resources=[_namespace(ns)],
                )
            )
    for p in report.open_selected:
        results.setdefault(p.namespace, []).append(
            _result(
                "allow-all",
                "opens-selected-pods",
                "warn",
                f"NetworkPolicy {p.policy} opens the pods it selects to every peer "
                f"({', '.join(p.directions)}): anyone who can label a pod can use it",
                severity="medium",
                resources=[_network_policy(p.namespace, p.policy)],
                properties={"directions": ",".join(p.directions)},
            )
        )
    for group in report.audit_scope_groups():
        for ns in group.namespaces:
            results.setdefault(ns, []).append(_audit_failed(group, ns, report))
    for t in report.label_trust:
        results.setdefault(t.namespace, []).append(
            _result(
                "namespace-labels",
                "trusts-namespace-labels",
                "fail",
                f"NetworkPolicy {t.policy} ({t.where}: {t.selector}) "
                + ("admits traffic from" if t.direction == "Ingress" else "lets its pods reach")
                + f" any namespace labelled so: whoever may label namespaces ({', '.join(t.keys)}) "
                "decides who it trusts; key it on kubernetes.io/metadata.name",
                severity="medium",
                resources=[_network_policy(t.namespace, t.policy)],
                properties={"field": t.where, "selector": t.selector, "labels": ",".join(t.keys)},
            )
        )
    for e in report.exposure.external_ips:
        results.setdefault(e.namespace, []).append(
            _result(
                "external-ips",
                "service-external-ips",
                "fail",
                f"Service {e.service} sets externalIPs {', '.join(e.addresses)}: it captures "
                "traffic to those addresses from every pod and node (CVE-2020-8554); enable the "
                f"{DENY_EXTERNAL_IPS} admission plugin",
                severity="high",
                resources=[
                    {
                        "apiVersion": "v1",
                        "kind": "Service",
                        "namespace": e.namespace,
                        "name": e.service,
                    }
                ],
                properties={"externalIPs": ",".join(e.addresses)},
            )
        )
    for h in report.host_network:
        results.setdefault(h.namespace, []).append(_host_failed(h))
    return results


def _host_failed(h: HostFinding) -> dict[str, Any]:
    kind, _, name = h.object.partition(" ")
    group = WORKLOAD_KINDS[kind][0] if kind in WORKLOAD_KINDS else ""
    return _result(
        "host-network",
        h.check,
        "fail",
        f"{h.message} (mode {h.mode})",
        severity="high",
        resources=[
            {
                "apiVersion": f"{group}/v1" if group else "v1",
                "kind": kind,
                "namespace": h.namespace,
                "name": name,
            }
        ],
        properties={"fields": ",".join(h.fields), "mode": h.mode},
    )


def _fence_failed(u: Unfenced) -> dict[str, Any]:
    opened = "; ".join(
        f"{d} is opened to every peer by NetworkPolicy {', '.join(names)}"
        for d, names in u.neutralised_by.items()
    )
    fix = (
        "`kubefence scan --fix` prints the NetworkPolicy that fences it"
        if u.fixable
        else "narrow or delete the policies that open it"
    )
    pods = "" if u.running_pods is None else f"; {u.running_pods} running pods"
    properties = {"missing": ",".join(u.missing), "mode": u.mode}
    if u.running_pods is not None:
        properties["runningPods"] = str(u.running_pods)
    return _result(
        "default-deny",
        "fenced",
        "fail",
        f"namespace {u.namespace} is not fenced for {', '.join(u.missing)}"
        + (f" ({opened})" if opened else "")
        + f"{pods}: new workloads there are denied where default-deny enforces (mode {u.mode}); "
        + fix,
        severity="high",
        resources=[_namespace(u.namespace)],
        properties=properties,
    )


def _audit_failed(group: AuditScopeGroup, namespace: str, report: ScanReport) -> dict[str, Any]:
    here = [f for f in group.findings if namespace in f.namespaces]
    rule = " and ".join(f"rules[{r}]" for r in group.rules) or "no matching rule"
    why = "; ".join(f"{c.described}: {', '.join(c.verbs)}: {c.reason}" for c in group.causes)
    return _result(
        "audit-scope",
        rule,
        "fail",
        f"outside the audited scope in namespace {namespace}, by {why}. "
        + "; ".join(who_does_what(here))
        + f". Fix: {audit_fix(group, report.audit_min_level)}",
        severity="medium",
        category=_AUDIT,
        resources=[_namespace(namespace)],
        properties={
            "auditPolicy": report.audit_policy or "",
            "auditRules": ",".join(str(r) for r in group.rules),
            "verbs": ",".join(dict.fromkeys(v for c in group.causes for v in c.verbs)),
        },
    )


def _cluster_results(report: ScanReport) -> list[dict[str, Any]]:
    results = [
        _result(
            "network-policy-apis",
            c.group,
            "warn",
            f"the cluster serves {c.group} ({c.kinds}): {c.note}; kubefence does not evaluate them",
            severity="medium",
            properties={"group": c.group, "kinds": c.kinds},
        )
        for c in report.policy_crds
    ]
    results += [
        _result(
            "node-proxy",
            "holds-node-proxy",
            "skip" if h.builtin else "fail",
            f"{h.subject} holds nodes/proxy ({','.join(h.verbs)}, on {h.on}) through ClusterRole "
            f"{h.role} (ClusterRoleBinding {h.binding}"
            + (", built in" if h.builtin else "")
            + "): exec into any pod of those nodes on the kubelet's port, past admission",
            severity="high",
            resources=[
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "name": h.binding,
                }
            ],
            properties={"subject": h.subject, "clusterRole": h.role, "verbs": ",".join(h.verbs)},
        )
        for h in report.exposure.node_proxy
    ]
    results += [
        _result(
            "scan",
            "read",
            "error",
            f"could not list {what}: its findings are not known",
            severity="medium",
        )
        for what in report.exposure.unread
    ]
    for names, why in (
        (report.exempt, "exempt (exemptions.namespaces): kubefence does not judge it"),
        (report.terminating, "Terminating: everything in it passes"),
    ):
        results += [
            _result(
                "default-deny",
                "fenced",
                "skip",
                f"namespace {ns} is {why}",
                severity="high",
                resources=[_namespace(ns)],
            )
            for ns in names
        ]
    return results
