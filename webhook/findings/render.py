"""The renderings of a `ScanReport`: the text table, the JSON document and the `--fix` manifests.

The table is for a terminal; the JSON keys (`summary`, `unfenced`, `neutralising`, `openSelected`,
`auditScope`, `policyCrds`, `withoutPodSecurity`, `labelTrust`, `externalIPs`, `nodeProxy`,
`hostNetwork`, `unread`, `skipped`) are for pipelines; `fix_manifests`
prints the minimal default-deny NetworkPolicies that fence every unfenced namespace, as YAML for
`kubectl apply -f -`. Pure: a report in, a string (or a JSON-ready dict) out.
"""

from __future__ import annotations

from collections.abc import Sequence

from webhook.findings.exposure import DENY_EXTERNAL_IPS
from webhook.findings.model import (
    ADVISORY,
    WOULD_DENY,
    AuditScopeFinding,
    AuditScopeGroup,
    PolicyFinding,
    ScanReport,
    WouldDeny,
)
from webhook.findings.recreation import unread_workloads
from webhook.remedy import remedy
from webhook.rules.result import DEFAULT_DENY

# How the table labels a finding (the JSON's `enforce`: would-deny | advisory).
LABELS = {WOULD_DENY: "would deny", ADVISORY: "advisory"}


def fix_manifests(report: ScanReport) -> str:
    """YAML for `kubectl apply -f -`: one default-deny NetworkPolicy per unfenced namespace.

    Directions that a neutralising policy opens cannot be fixed by adding a policy; they are
    named in comments. The same remedy as a denial's (`webhook.remedy`): a name not in use yet.
    """
    docs: list[str] = []
    notes: list[str] = []
    for item in report.unfenced:
        taken = report.existing_policies.get(item.namespace, frozenset())
        fix = remedy(item.namespace, item.missing, item.neutralised_by, taken, item.isolated)
        notes.extend(f"# {item.namespace}: {line}" for line in fix.narrowing())
        if fix.manifest:
            docs.append(fix.manifest)
    fixed = sum(1 for u in report.unfenced if u.fixable)
    header = [
        f"# kubefence scan --fix: default-deny NetworkPolicies for {fixed} "
        f"namespace{'' if fixed == 1 else 's'} "
        f"(require {', '.join(report.require)}); apply with kubectl apply -f -,",
        "# then allow the traffic each workload needs with further NetworkPolicies.",
        *notes,
        *(f"# not fixed by --fix, enforce would deny: {line}" for line in unfixed(report)),
    ]
    return "\n".join(header) + "\n" + "".join(f"---\n{d}\n" for d in docs)


def unfixed(report: ScanReport) -> list[str]:
    """The re-creations enforce would deny that the `--fix` policies leave denied: those denied
    by another rule than default-deny, or in a namespace whose fence a new policy cannot make
    (a neutralising policy opens it). One `namespace/object (rules)` each."""
    fixable = {u.namespace for u in report.unfenced if u.fixable == u.missing}
    left: dict[tuple[str, str], dict[str, None]] = {}
    for d in report.would_deny:
        rules = [r for r in d.rules if r != DEFAULT_DENY or d.namespace not in fixable]
        if rules:
            left.setdefault((d.namespace, _folded(d)), {}).update(dict.fromkeys(rules))
    return [f"{ns}/{what} ({', '.join(rules)})" for (ns, what), rules in left.items()]


def _folded(d: WouldDeny) -> str:
    """An owned Pod is shown by its controller's Pods, anything else by itself."""
    return f"Pods of {d.owner}" if d.owner else d.object


def to_json(report: ScanReport) -> dict[str, object]:
    return {
        "summary": {
            "namespaces": report.namespaces,
            "scanned": len(report.scanned),
            "unfenced": len(report.unfenced),
            "neutralising": len(report.neutralising),
            "openSelected": len(report.open_selected),
            "nearlyOpen": len(report.nearly_open),
            "auditScope": len(report.audit_scope),
            "policyCrds": len(report.policy_crds),
            "labelTrust": len(report.label_trust),
            "externalIPs": len(report.exposure.external_ips),
            "nodeProxy": sum(1 for h in report.exposure.node_proxy if not h.builtin),
            "hostNetwork": len(report.host_network),
            "findings": report.findings,
            "wouldDeny": len(report.would_deny),
            "advisory": report.advisory,
        },
        "enforceModes": dict(report.enforce_modes),
        "wouldDeny": [
            {
                "namespace": d.namespace,
                "object": d.object,
                "owner": d.owner,
                "creates": d.creates,
                "resource": d.resource,
                "writer": d.writer,
                "rules": list(d.rules),
                "messages": list(d.messages),
            }
            for d in report.would_deny
        ],
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
                "enforce": report.unfenced_label(u.namespace),
            }
            for u in report.unfenced
        ],
        "neutralising": [
            {**_policy_json(p), "enforce": report.unfenced_label(p.namespace)}
            for p in report.neutralising
        ],
        "openSelected": [_policy_json(p) for p in report.open_selected],
        "nearlyOpen": [
            {
                "namespace": n.namespace,
                "direction": n.direction.value,
                "policies": list(n.policies),
                "leftOut": n.left_out,
            }
            for n in report.nearly_open
        ],
        "auditScope": [
            {
                "resource": a.resource,
                "operation": a.operation,
                "writer": a.writer,
                "namespaces": list(a.namespaces),
                "message": a.message,
                "warning": a.warning,
                "auditRules": [
                    {
                        "index": c.rule,
                        "rule": c.described,
                        "reason": c.reason,
                        "verbs": list(c.verbs),
                    }
                    for c in a.causes
                ],
                "enforce": report.audit_label(a),
            }
            for a in report.audit_scope
        ],
        "policyCrds": [
            {"group": c.group, "kinds": c.kinds, "note": c.note} for c in report.policy_crds
        ],
        "withoutPodSecurity": list(report.without_pod_security),
        "labelTrust": [
            {
                "namespace": t.namespace,
                "policy": t.policy,
                "direction": t.direction,
                "field": t.where,
                "selector": t.selector,
                "labels": list(t.keys),
                "enforce": ADVISORY,
            }
            for t in report.label_trust
        ],
        "externalIPs": [
            {
                "namespace": e.namespace,
                "service": e.service,
                "addresses": list(e.addresses),
                "enforce": ADVISORY,
            }
            for e in report.exposure.external_ips
        ],
        "nodeProxy": [
            {
                "subject": h.subject,
                "clusterRole": h.role,
                "clusterRoleBinding": h.binding,
                "verbs": list(h.verbs),
                "nodes": list(h.nodes),
                "builtin": h.builtin,
                "enforce": ADVISORY,
            }
            for h in report.exposure.node_proxy
        ],
        "hostNetwork": [
            {
                "namespace": h.namespace,
                "object": h.object,
                "check": h.check,
                "field": h.fields[0] if h.fields else "",
                "fields": list(h.fields),
                "message": h.message,
                "mode": h.mode,
                "owner": h.owner,
                "enforceMode": h.enforce_mode,
                "enforce": report.host_label(h),
            }
            for h in report.host_network
        ],
        "unread": list(report.exposure.unread),
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
        f"kubefence scan: {report.namespaces} namespace{'' if report.namespaces == 1 else 's'}, "
        f"{len(report.scanned)} scanned"
        + (f" ({', '.join(skipped)} skipped)" if skipped else "")
        + f"; fenced means a default-deny for {', '.join(report.require)}"
        + (" (definition: strict)" if report.strict else "")
    ]
    lines += _would_deny_section(report)
    lines += _table(
        f"UNFENCED NAMESPACES: {len(report.unfenced)}",
        ("NAMESPACE", "MISSING", "NEUTRALISED BY", "RUNNING PODS", "MODE", "ENFORCE"),
        [
            (
                u.namespace,
                ", ".join(u.missing),
                "; ".join(f"{d}: {', '.join(n)}" for d, n in u.neutralised_by.items()) or "-",
                "-" if u.running_pods is None else str(u.running_pods),
                u.mode,
                LABELS[report.unfenced_label(u.namespace)],
            )
            for u in report.unfenced
        ],
    )
    lines += _table(
        f"POLICIES THAT NEUTRALISE A FENCE (allow-all): {len(report.neutralising)}",
        ("NAMESPACE", "POLICY", "OPENS", "ENFORCE"),
        [
            (
                p.namespace,
                p.policy,
                ", ".join(p.directions),
                LABELS[report.unfenced_label(p.namespace)],
            )
            for p in report.neutralising
        ],
    )
    lines += _host_network_section(report)
    lines += _trust_and_exposure(report)
    if report.audit_policy is None:
        lines += ["", "AUDITED SCOPE: not checked (no auditScope.policyFile in the config)"]
    else:
        lines += _audit_scope_section(report)
    warnings = (
        [
            f"NetworkPolicy {p.namespace}/{p.policy} opens the pods it selects to every peer "
            f"({', '.join(p.directions)}): anyone who can label a pod can use it"
            for p in report.open_selected
        ]
        + [
            f"namespace {n.namespace} is open to nearly every peer for {n.direction} "
            f"(NetworkPolicy {', '.join(n.policies)}): {n.left_out}"
            for n in report.nearly_open
        ]
        + [
            f"the cluster serves {c.group} ({c.kinds}): {c.note}; kubefence does not evaluate them"
            for c in report.policy_crds
        ]
    )
    if report.without_pod_security:
        warnings.append(_pod_security_warning(report.without_pod_security))
    warnings += [
        f"could not list {what}: its findings are not known" for what in report.exposure.unread
    ]
    if warnings:
        lines += ["", f"WARNINGS: {len(warnings)}", *(f"  {w}" for w in warnings)]
    if any(u.fixable for u in report.unfenced):
        lines += ["", "Fence them: kubefence scan --fix ... | kubectl apply -f -"]
    lines += ["", *_gate(report)]
    return "\n".join(lines) + "\n"


def _would_deny_section(report: ScanReport) -> list[str]:
    """What the cluster re-creates that enforce would deny: one row per workload (the Pods of
    one controller folded into one row), with the requests denied and the rules that deny them."""
    rows: dict[tuple[str, str], tuple[list[str], dict[str, None], dict[str, None]]] = {}
    for d in report.would_deny:
        objects, requests, rules = rows.setdefault((d.namespace, _folded(d)), ([], {}, {}))
        if d.object not in objects:
            objects.append(d.object)
        requests[f"{d.creates} by {d.writer}"] = None
        rules.update(dict.fromkeys(d.rules))
    table = [
        (
            ns,
            objects[0] if len(objects) == 1 else f"{len(objects)} {by}",
            ", ".join(requests),
            ", ".join(rules),
        )
        for (ns, by), (objects, requests, rules) in rows.items()
    ]
    return _table(
        f"ENFORCE WOULD DENY what this cluster re-creates: {len(table)} "
        f"workload{'' if len(table) == 1 else 's'}",
        ("NAMESPACE", "OBJECT", "NEXT REQUEST DENIED", "RULES"),
        table,
        note="each the webhook's own decision of the request its controller sends next, under "
        "mode: enforce (the messages: --format json)",
    )


def _gate(report: ScanReport) -> list[str]:
    """What the exit status says, and the modes the re-creations were judged under."""
    by_mode: dict[str, list[str]] = {}
    for key, mode in report.enforce_modes.items():
        by_mode.setdefault(mode, []).append(key)
    modes = "; ".join(f"{mode}: {', '.join(keys)}" for mode, keys in by_mode.items())
    n, advisory = len(report.would_deny), report.advisory
    unread = unread_workloads(report.exposure.unread)
    if n:
        verdict = f"enforce would deny {n} request{'' if n == 1 else 's'} this cluster re-creates"
        verdict += " (exit 1)"
    elif unread:
        verdict = f"not known: could not list {', '.join(unread)} (exit 1)"
    else:
        verdict = "enforce would deny nothing this cluster re-creates (exit 0)"
    return [
        f"GATE: {verdict}; {advisory} advisory finding{'' if advisory == 1 else 's'} "
        "(exit 1 only with --strict)",
        f"  judged as after helm upgrade --set mode=enforce: {modes} "
        "(namespace overrides as configured)",
    ]


def _host_network_section(report: ScanReport) -> list[str]:
    """The ways onto the node in running Pods and templates: one row per finding, the Pods of
    one controller folded into one row when they share it (a DaemonSet's Pods, one a node)."""
    found = report.host_network
    rows: dict[tuple[str, ...], list[str]] = {}
    for h in found:
        # An owned Pod is keyed by its controller, anything else by itself.
        by = f"Pods of {h.owner}" if h.owner else h.object
        label = LABELS[report.host_label(h)]
        key = (h.namespace, by, h.check, h.mode, label, ", ".join(h.fields))
        rows.setdefault(key, []).append(h.object)
    table = [
        (ns, names[0] if len(names) == 1 else f"{len(names)} {by}", check, mode, label, fields)
        for (ns, by, check, mode, label, fields), names in rows.items()
    ]
    return _table(
        f"WAYS ONTO THE NODE (host-network): {len(found)}",
        ("NAMESPACE", "OBJECT", "CHECK", "MODE", "ENFORCE", "FIELDS"),
        table,
        note="each is what the webhook answers on the object's next CREATE (the full messages: "
        "--format json); a Pod is fixed in its template, then re-created",
    )


def _trust_and_exposure(report: ScanReport) -> list[str]:
    """Allow rules keyed on namespace labels, Services with externalIPs, nodes/proxy holders."""
    lines = _table(
        f"ALLOW RULES THAT TRUST NAMESPACE LABELS (advisory): {len(report.label_trust)}",
        ("NAMESPACE", "POLICY", "PEER", "SELECTOR"),
        [(t.namespace, t.policy, t.where, t.selector) for t in report.label_trust],
        note="whoever may label namespaces decides who these admit or reach: key them on "
        "kubernetes.io/metadata.name",
    )
    external = report.exposure.external_ips
    lines += _table(
        f"SERVICES WITH EXTERNAL IPS (CVE-2020-8554; advisory): {len(external)}",
        ("NAMESPACE", "SERVICE", "EXTERNAL IPS"),
        [(e.namespace, e.service, ", ".join(e.addresses)) for e in external],
        note="they capture traffic to those addresses from every pod and node: enable the "
        f"{DENY_EXTERNAL_IPS} admission plugin (kube-apiserver --enable-admission-plugins)",
    )
    holders = report.exposure.node_proxy
    builtin = sum(1 for h in holders if h.builtin)
    lines += _table(
        "WHO HOLDS nodes/proxy (exec on the kubelet, past admission; advisory): "
        f"{len(holders) - builtin}" + (f" (and {builtin} built in)" if builtin else ""),
        ("SUBJECT", "CLUSTERROLE", "BINDING", "VERBS", "NODES"),
        [
            (
                h.subject,
                h.role,
                h.binding + (" (built in)" if h.builtin else ""),
                ",".join(h.verbs),
                h.on,
            )
            for h in holders
        ],
    )
    return lines


def _pod_security_warning(namespaces: Sequence[str]) -> str:
    shown = ", ".join(namespaces[:8]) + (", ..." if len(namespaces) > 8 else "")
    return (
        f"{len(namespaces)} namespace{'' if len(namespaces) == 1 else 's'} without Pod Security "
        f"Admission baseline enforcement ({shown}): no pod-security.kubernetes.io/enforce label "
        "of baseline or restricted, so unless the API server's PodSecurity default is baseline, "
        "only kubefence's host-network rule refuses hostPID, privileged and hostPath pods there"
    )


def _audit_scope_section(report: ScanReport) -> list[str]:
    """The audit-scope findings grouped by the audit policy rules that put them out of scope.

    One paragraph per rule (or pair of rules, when a request's verbs fall to different ones):
    the rule, the verbs it catches and why, the namespaces, who is caught doing what, the fix.
    """
    groups = report.audit_scope_groups()
    rules = {c.rule for g in groups for c in g.causes}
    n = len(report.audit_scope)
    lines = [
        "",
        f"OUTSIDE THE AUDITED SCOPE: {n} kind{'' if n == 1 else 's'} of request, by "
        f"{len(rules)} audit policy rule{'' if len(rules) == 1 else 's'} ({report.audit_policy})",
    ]
    for group in groups:
        for cause in group.causes:
            lines.append(f"  {cause.described}")
            verbs = ", ".join(v or '"" (OPTIONS)' for v in cause.verbs)
            lines.append(f"    {verbs}: {cause.reason}")
        namespaces = group.namespaces
        shown = ", ".join(namespaces[:8])
        if len(namespaces) > 8:
            shown += f", +{len(namespaces) - 8} more"
        count = f"{len(namespaces)} namespace{'' if len(namespaces) == 1 else 's'}"
        lines.append(f"    in {count}: {shown}")
        lines += [f"    {line}" for line in who_does_what(group.findings)]
        denied = [f for f in group.findings if report.audit_label(f) == WOULD_DENY]
        lines.append(
            "    enforce would deny the cluster's own: "
            + "; ".join(who_does_what(denied, with_operations=False))
            if denied
            else "    advisory: enforce denies these when sent; nothing this cluster re-creates"
        )
        lines.append(f"    fix: {audit_fix(group, report.audit_min_level)}")
    return lines


def who_does_what(
    findings: Sequence[AuditScopeFinding], *, with_operations: bool = True
) -> list[str]:
    """`writer: OPERATIONS of resources; ...`, writers doing the same thing on one line
    (`with_operations=False`: `writer: resources`)."""
    by_writer: dict[str, dict[str, list[str]]] = {}
    for f in findings:
        by_writer.setdefault(f.writer, {}).setdefault(f.resource, []).append(f.operation)
    said: dict[str, list[str]] = {}
    for writer, resources in by_writer.items():
        by_operations: dict[str, list[str]] = {}
        for resource, operations in resources.items():
            by_operations.setdefault(", ".join(operations), []).append(resource)
        what = "; ".join(
            f"{ops} of {', '.join(res)}" if with_operations else ", ".join(res)
            for ops, res in by_operations.items()
        )
        said.setdefault(what, []).append(writer)
    return [f"{', '.join(writers)}: {what}" for what, writers in said.items()]


def audit_fix(group: AuditScopeGroup, minimum: str) -> str:
    """What to change in the audit policy so the group's requests are recorded."""
    wanted = f"records them at {minimum} or above without omitting ResponseComplete"
    named = " and ".join(f"rules[{rule}]" for rule in group.rules)
    if not named:
        return f"add a rule that {wanted}"
    return f"put a rule before {named} that {wanted}, or narrow {named}"


def _table(
    title: str, header: Sequence[str], rows: Sequence[Sequence[str]], *, note: str = ""
) -> list[str]:
    """A titled table, and `note` under it when it has rows."""
    out = ["", title]
    if not rows:
        return out
    table = [tuple(header), *(tuple(r) for r in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    out += [
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table
    ]
    return [*out, f"  {note}"] if note else out
