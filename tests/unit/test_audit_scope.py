"""Rule `audit-scope`: a workload change the cluster's audit Policy would not record is denied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from objects import parse, review, workload_review

from webhook.cluster.view import StaticView, namespace_facts
from webhook.config import parse_settings
from webhook.decide import decide
from webhook.netpol import analyse_policy
from webhook.registration import DEFAULT_RULES, is_registered
from webhook.settings import Settings

FENCE = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "d", "namespace": "team"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
}
CLUSTER = StaticView(
    [
        namespace_facts("team", [analyse_policy(FENCE)], labels={"audited": "yes"}),
        namespace_facts(
            "other", [analyse_policy({**FENCE, "metadata": {"name": "d", "namespace": "other"}})]
        ),
    ]
)


def settings(tmp_path: Path, rules: str, extra: str = "", omit: str = "") -> Settings:
    (tmp_path / "audit.yaml").write_text(
        f"apiVersion: audit.k8s.io/v1\nkind: Policy\n{omit}rules:\n{rules}"
    )
    text = f"auditScope: {{policyFile: audit.yaml{extra}}}"
    return parse_settings(text, str(tmp_path / "config.yaml"), tmp_path)


def verdict(s: Settings, doc: dict[str, Any]) -> tuple[str, str]:
    decision = decide(parse(doc), CLUSTER, s)
    return decision.verdict, decision.message


def test_everything_at_metadata_is_in_scope(tmp_path: Path) -> None:
    s = settings(tmp_path, "  - level: Metadata\n")
    assert verdict(s, workload_review("Deployment"))[0] == "allow"


def test_a_create_that_kubectl_apply_would_send_as_patch_is_judged_at_patch(tmp_path: Path) -> None:
    rules = "  - level: Metadata\n    verbs: [create, update, delete]\n"
    result, message = verdict(settings(tmp_path, rules), workload_review("Deployment"))
    assert result == "deny"
    assert "would not record patch at Metadata" in message
    assert (
        "patch: level None, below Metadata (no audit policy rule matches (level None))" in message
    )
    assert "`kubectl apply` and `kubectl edit` send patch" in message


def test_the_rule_index_that_puts_it_outside_is_named(tmp_path: Path) -> None:
    rules = "  - level: None\n    namespaces: [team]\n  - level: Metadata\n"
    result, message = verdict(settings(tmp_path, rules), workload_review("Pod"))
    assert result == "deny"
    assert (
        "rules[0] (level None; namespaces team)" in message
    )  # numbered from 0, as kube-apiserver does
    assert (
        verdict(settings(tmp_path, rules), workload_review("Pod", namespace="other"))[0] == "allow"
    )


def test_omitting_response_complete_is_outside_the_scope(tmp_path: Path) -> None:
    rules = "  - level: Metadata\n    omitStages: [ResponseComplete]\n"
    result, message = verdict(settings(tmp_path, rules), workload_review("Job"))
    assert result == "deny"
    assert "stage ResponseComplete omitted" in message
    policy_level = settings(
        tmp_path, "  - level: Metadata\n", omit="omitStages: [ResponseComplete]\n"
    )
    assert verdict(policy_level, workload_review("Job"))[0] == "deny"


def connect(sub: str) -> dict[str, Any]:
    return review(
        "CONNECT",
        ("", "v1", "pods"),
        "PodExecOptions",
        name="web-0",
        sub_resource=sub,
        obj={"kind": "PodExecOptions"},
    )


def test_connect_needs_response_started_or_complete(tmp_path: Path) -> None:
    only_complete_omitted = "  - level: Metadata\n    omitStages: [ResponseComplete]\n"
    assert verdict(settings(tmp_path, only_complete_omitted), connect("exec"))[0] == "allow"
    both = "  - level: Metadata\n    omitStages: [ResponseStarted, ResponseComplete]\n"
    assert verdict(settings(tmp_path, both), connect("exec"))[0] == "deny"


@pytest.mark.parametrize("sub", ["exec", "attach", "portforward"])
def test_connect_to_pods_is_judged_with_create_and_get(tmp_path: Path, sub: str) -> None:
    rules = f"  - level: None\n    verbs: [get]\n    resources: [{{group: '', resources: [pods/{sub}]}}]\n  - level: Metadata\n"
    result, message = verdict(settings(tmp_path, rules), connect(sub))
    assert result == "deny"
    assert "record get at Metadata" in message


def test_resource_names_see_the_url_name_only_where_the_url_has_one(tmp_path: Path) -> None:
    # A POST create carries no name in its URL: a resourceNames rule never matches it (checker.go).
    rules = "  - level: Metadata\n    resources: [{group: apps, resources: [deployments], resourceNames: [app]}]\n"
    result, message = verdict(settings(tmp_path, rules), workload_review("Deployment"))
    assert result == "deny"
    assert "create" in message


def test_request_resource_is_what_the_audit_filter_matched(tmp_path: Path) -> None:
    # The client asked for apps/v1beta2... converted to apps/v1: audit matched the URL's resource.
    doc = workload_review("Deployment")
    doc["request"]["requestResource"] = {
        "group": "extensions",
        "version": "v1beta1",
        "resource": "deployments",
    }
    rules = "  - level: None\n    resources: [{group: extensions}]\n  - level: Metadata\n"
    assert verdict(settings(tmp_path, rules), doc)[0] == "deny"


def test_min_level_request(tmp_path: Path) -> None:
    s = settings(tmp_path, "  - level: Metadata\n", extra=", minLevel: Request")
    result, message = verdict(s, workload_review("Pod"))
    assert result == "deny"
    assert "below Request" in message


def test_namespace_selector_narrows_the_scope(tmp_path: Path) -> None:
    s = settings(
        tmp_path, "  - level: None\n", extra=", namespaceSelector: {matchLabels: {audited: 'yes'}}"
    )
    assert verdict(s, workload_review("Pod"))[0] == "deny"
    assert verdict(s, workload_review("Pod", namespace="other"))[0] == "allow"


def test_updates_without_template_change_are_still_judged_but_subresources_are_not(
    tmp_path: Path,
) -> None:
    s = settings(tmp_path, "  - level: None\n")
    assert verdict(s, workload_review("Deployment", "UPDATE"))[0] == "deny"
    assert verdict(s, workload_review("Deployment", "UPDATE", sub_resource="scale"))[0] == "allow"


def test_warn_mode(tmp_path: Path) -> None:
    s = settings(tmp_path, "  - level: None\n", extra=", mode: warn")
    decision = decide(parse(workload_review("Pod")), CLUSTER, s)
    assert decision.verdict == "warn"
    assert decision.warnings == ('pods create, patch in "team" is outside the audited scope',)


# --- the API server's proxies (CONNECT) ---------------------------------------------------------

# Records every verb a kubectl user sends, and nothing else: an OPTIONS request, recorded with
# verb "", falls through to level None.
NAMED_VERBS = "[get, list, watch, create, update, patch, delete, deletecollection]"


def proxy(resource: str, name: str, namespace: str = "team") -> dict[str, Any]:
    kind = {"pods": "PodProxyOptions", "services": "ServiceProxyOptions"}.get(
        resource, "NodeProxyOptions"
    )
    return review(
        "CONNECT",
        ("", "v1", resource),
        kind,
        namespace=namespace,
        name=name,
        sub_resource="proxy",
        obj={"kind": kind, "apiVersion": "v1", "path": "/metrics"},
    )


def test_the_chart_and_e2e_register_the_three_proxies() -> None:
    for resource in ("pods", "services", "nodes"):
        assert is_registered(DEFAULT_RULES, "CONNECT", "", resource, "proxy"), resource
    nodes = next(r for r in DEFAULT_RULES if "nodes/proxy" in r.resources)
    assert nodes.scope == "Cluster"


@pytest.mark.parametrize(
    ("resource", "name", "namespace"),
    [("pods", "web-0", "team"), ("services", "http:web:8080", "team"), ("nodes", "node-1", "")],
)
def test_a_proxy_is_judged_at_every_verb_including_options(
    tmp_path: Path, resource: str, name: str, namespace: str
) -> None:
    rules = f"  - level: Metadata\n    verbs: {NAMED_VERBS}\n  - level: None\n"
    result, message = verdict(settings(tmp_path, rules), proxy(resource, name, namespace))
    assert result == "deny"
    assert 'would not record "" (OPTIONS) at Metadata' in message  # that verb alone
    # exec is never recorded with verb "": the same policy keeps it in scope.
    assert verdict(settings(tmp_path, rules), connect("exec"))[0] == "allow"


def test_an_audit_rule_listing_the_empty_verb_matches_options_as_upstream(tmp_path: Path) -> None:
    rules = f'  - level: Metadata\n    verbs: {NAMED_VERBS}\n  - level: Metadata\n    verbs: [""]\n  - level: None\n'
    assert verdict(settings(tmp_path, rules), proxy("pods", "web-0"))[0] == "allow"


def test_a_proxy_blind_to_one_verb_is_denied_naming_it(tmp_path: Path) -> None:
    rules = "  - level: None\n    verbs: [delete]\n    resources: [{group: '', resources: [services/proxy]}]\n  - level: Metadata\n"
    result, message = verdict(settings(tmp_path, rules), proxy("services", "web"))
    assert result == "deny"
    assert (
        'CONNECT of services/proxy in namespace "team" by "alice" is outside the audited scope: '
        "the audit policy would not record delete at Metadata"
    ) in message
    assert "kubectl apply" not in message


def test_nodes_proxy_names_the_node_and_ignores_the_namespace_selector(tmp_path: Path) -> None:
    rules = "  - level: None\n    resources: [{group: '', resources: [nodes/proxy]}]\n  - level: Metadata\n"
    scoped = settings(tmp_path, rules, extra=", namespaceSelector: {matchLabels: {audited: 'yes'}}")
    decision = decide(parse(proxy("nodes", "node-1:10250", "")), CLUSTER, scoped)
    assert decision.verdict == "deny"
    assert decision.annotations["rules"] == "audit-scope"
    assert 'CONNECT of nodes/proxy to "node-1:10250" by "alice"' in decision.message


def test_resource_names_see_the_proxy_name_as_the_url_writes_it(tmp_path: Path) -> None:
    # The audit filter's name is the URL segment, [scheme:]name[:port] (requestinfo.go).
    rules = "  - level: Metadata\n    resources: [{group: '', resources: [pods/proxy], resourceNames: [web]}]\n  - level: None\n"
    s = settings(tmp_path, rules)
    assert verdict(s, proxy("pods", "web"))[0] == "allow"
    for name in ("web:8080", "https:web:8443"):
        result, message = verdict(s, proxy("pods", name))
        assert result == "deny", name
        assert f'as the URL writes it, "{name}"' in message


def test_a_services_proxy_meets_only_the_audit_scope_rule(tmp_path: Path) -> None:
    s = settings(tmp_path, "  - level: Metadata\n")
    decision = decide(parse(proxy("services", "web", namespace="other")), CLUSTER, s)
    assert decision.verdict == "allow"
    assert [r.rule for r in decision.results] == ["audit-scope"]
