"""`kubefence scan` beyond fences: allow rules keyed on namespace labels, Services with
externalIPs (CVE-2020-8554) and who holds nodes/proxy, in the table, JSON and policy reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from objects import deny_all, netpol
from test_scan import FakeApiServer, fake_cluster, namespace, state  # noqa: F401 - a fixture

from webhook.cli import main
from webhook.findings.exposure import node_proxy_grant, read_exposure


def cluster_role(name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": list(rules),
    }


def binding(
    name: str, role: str, *subjects: dict[str, str], builtin: bool = False
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if builtin:
        meta["labels"] = {"kubernetes.io/bootstrapping": "rbac-defaults"}
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": list(subjects),
    }


def service(name: str, ns: str, external: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"ports": [{"port": 80}]}
    if external is not None:
        spec["externalIPs"] = external
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def rule(
    resources: list[str], verbs: list[str], groups: list[str] | None = None, **kw: Any
) -> dict[str, Any]:
    return {
        "apiGroups": groups if groups is not None else [""],
        "resources": resources,
        "verbs": verbs,
        **kw,
    }


@pytest.mark.parametrize(
    ("granted", "expected"),
    [
        (rule(["nodes/proxy"], ["get"]), (("get",), ())),
        (rule(["*/proxy"], ["create"]), (("create",), ())),
        (rule(["*"], ["*"], ["*"]), (("*",), ())),
        (rule(["nodes/proxy"], ["get"], resourceNames=["n1"]), (("get",), ("n1",))),
        (rule(["nodes/*"], ["get"]), None),  # RBAC knows no `resource/*` pattern
        (rule(["nodes"], ["get"]), None),  # the node object, not its proxy
        (rule(["nodes/proxy"], ["list", "watch"]), None),
        (rule(["nodes/proxy"], ["get"], ["apps"]), None),
    ],
)
def test_nodes_proxy_is_granted_as_upstream_rbac_matches(
    granted: dict[str, Any], expected: tuple[tuple[str, ...], tuple[str, ...]] | None
) -> None:
    assert node_proxy_grant([granted]) == expected


def test_holders_are_the_subjects_of_cluster_role_bindings() -> None:
    exposure = read_exposure(
        [
            cluster_role("cluster-admin", rule(["*"], ["*"], ["*"])),
            cluster_role("kubelet-api", rule(["nodes/proxy"], ["get", "create"])),
            cluster_role("viewer", rule(["pods"], ["get"])),
            binding(
                "cluster-admin",
                "cluster-admin",
                {"kind": "Group", "name": "system:masters"},
                builtin=True,
            ),
            binding(
                "metrics",
                "kubelet-api",
                {"kind": "ServiceAccount", "name": "prom", "namespace": "monitoring"},
                {"kind": "User", "name": "alice"},
            ),
            binding("viewers", "viewer", {"kind": "User", "name": "bob"}),
        ]
    )
    assert [(h.subject, h.role, h.verbs, h.builtin) for h in exposure.node_proxy] == [
        ("ServiceAccount monitoring/prom", "kubelet-api", ("get", "create"), False),
        ("User alice", "kubelet-api", ("get", "create"), False),
        ("Group system:masters", "cluster-admin", ("*",), True),
    ]


def exposed_state(tmp_path: Path) -> Path:
    trusting = netpol(
        "from-monitoring",
        "app",
        ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}]}],
    )
    by_name = netpol(
        "from-ops",
        "app",
        ingress=[
            {
                "from": [
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}
                ]
            }
        ],
    )
    return state(
        tmp_path,
        namespace("app"),
        deny_all(namespace="app"),
        trusting,
        by_name,
        service("web", "app", ["203.0.113.7"]),
        service("plain", "app"),
        service("sys", "kube-system", ["198.51.100.1"]),  # exempt namespace
        cluster_role("kubelet-api", rule(["nodes/proxy"], ["get"])),
        binding("metrics", "kubelet-api", {"kind": "User", "name": "alice"}),
    )


def test_the_table_lists_them_and_they_are_advisory_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Enforce never denies for them: exit 0 (the gate), 1 with --strict."""
    assert main(["scan", "--state", str(exposed_state(tmp_path)), "--strict"]) == 1
    capsys.readouterr()
    assert main(["scan", "--state", str(exposed_state(tmp_path))]) == 0
    text = capsys.readouterr().out
    assert "ALLOW RULES THAT TRUST NAMESPACE LABELS (advisory): 1" in text
    assert (
        "app        from-monitoring  spec.ingress[0].from[0].namespaceSelector  team=monitoring"
        in text
    )
    assert "SERVICES WITH EXTERNAL IPS (CVE-2020-8554; advisory): 1" in text
    assert "app        web      203.0.113.7" in text
    assert "DenyServiceExternalIPs admission plugin" in text
    assert "WHO HOLDS nodes/proxy (exec on the kubelet, past admission; advisory): 1" in text
    assert "User alice  kubelet-api  metrics  get    every node" in text


def test_json_and_policy_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = exposed_state(tmp_path)
    main(["scan", "--state", str(folder), "--format", "json"])
    data = json.loads(capsys.readouterr().out)
    assert data["labelTrust"] == [
        {
            "namespace": "app",
            "policy": "from-monitoring",
            "direction": "Ingress",
            "field": "spec.ingress[0].from[0].namespaceSelector",
            "selector": "team=monitoring",
            "labels": ["team"],
            "enforce": "advisory",
        }
    ]
    assert data["externalIPs"] == [
        {"namespace": "app", "service": "web", "addresses": ["203.0.113.7"], "enforce": "advisory"}
    ]
    assert [h["subject"] for h in data["nodeProxy"]] == ["User alice"]
    main(["scan", "--state", str(folder), "--format", "policyreport"])
    docs = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    cluster_report = next(d for d in docs if d["kind"] == "ClusterPolicyReport")
    app = next(d for d in docs if d["metadata"].get("namespace") == "app")
    policies = {(r["policy"], r["result"]) for r in app["results"]}
    assert ("namespace-labels", "fail") in policies
    assert ("external-ips", "fail") in policies
    assert [(r["policy"], r["result"]) for r in cluster_report["results"]] == [
        ("node-proxy", "fail")
    ]


def test_builtin_holders_alone_are_no_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = state(
        tmp_path,
        namespace("app"),
        deny_all(namespace="app"),
        cluster_role("cluster-admin", rule(["*"], ["*"], ["*"])),
        binding(
            "cluster-admin",
            "cluster-admin",
            {"kind": "Group", "name": "system:masters"},
            builtin=True,
        ),
    )
    assert main(["scan", "--state", str(folder)]) == 0
    text = capsys.readouterr().out
    assert (
        "WHO HOLDS nodes/proxy (exec on the kubelet, past admission; advisory): 0 (and 1 built in)"
        in text
    )
    assert "cluster-admin (built in)" in text


def test_a_live_scan_reads_them_and_says_what_it_may_not_read(
    fake_cluster: tuple[Path, type[FakeApiServer]],  # noqa: F811 - the fixture imported above
    capsys: pytest.CaptureFixture[str],
) -> None:
    kubeconfig, handler = fake_cluster
    handler.data["/api/v1/services"] = [
        {k: v for k, v in service("web", "a", ["203.0.113.7"]).items() if k != "kind"}
    ]
    handler.forbidden = frozenset(
        {
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        }
    )
    assert main(["scan", "--kubeconfig", str(kubeconfig), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["externalIPs"] == [
        {"namespace": "a", "service": "web", "addresses": ["203.0.113.7"], "enforce": "advisory"}
    ]
    assert data["unread"] == ["clusterroles (403 Forbidden)", "clusterrolebindings (403 Forbidden)"]
    main(["scan", "--kubeconfig", str(kubeconfig)])
    assert (
        "could not list clusterroles (403 Forbidden): its findings are not known"
        in capsys.readouterr().out
    )


# --- which holders are built in -------------------------------------------------------------------

MASTERS = {"kind": "Group", "name": "system:masters"}


def holders(*objects: dict[str, Any]) -> list[tuple[str, str, bool]]:
    return [(h.subject, h.binding, h.builtin) for h in read_exposure(objects).node_proxy]


def test_a_subject_added_to_a_default_binding_is_a_finding() -> None:
    # Reconciliation adds missing default subjects but never removes extra ones.
    admin = cluster_role("cluster-admin", rule(["*"], ["*"], ["*"]))
    crb = binding(
        "cluster-admin", "cluster-admin", MASTERS, {"kind": "User", "name": "mallory"}, builtin=True
    )
    assert holders(admin, crb) == [
        ("User mallory", "cluster-admin", False),
        ("Group system:masters", "cluster-admin", True),
    ]


def test_the_bootstrap_label_or_a_default_name_makes_no_holder_built_in() -> None:
    own = cluster_role("np", rule(["nodes/proxy"], ["get"]))
    spoofed = binding(
        "system:kube-dns-x",
        "np",
        {"kind": "ServiceAccount", "name": "x", "namespace": "team-a"},
        builtin=True,
    )
    # The default binding's name and subject, but another role: not what upstream bootstraps.
    renamed = binding("cluster-admin", "np", MASTERS, builtin=True)
    assert holders(own, spoofed) == [("ServiceAccount team-a/x", "system:kube-dns-x", False)]
    assert holders(own, renamed) == [("Group system:masters", "cluster-admin", False)]


@pytest.mark.parametrize("controller", ["generic-garbage-collector", "namespace-controller"])
def test_the_controllers_upstream_lets_get_every_resource_are_built_in(controller: str) -> None:
    name = f"system:controller:{controller}"
    role = cluster_role(name, rule(["*"], ["get", "list", "watch", "delete"], ["*"]))
    own = {"kind": "ServiceAccount", "name": controller, "namespace": "kube-system"}
    # The same account name in another namespace is someone else.
    lookalike = {"kind": "ServiceAccount", "name": controller, "namespace": "team-a"}
    assert holders(role, binding(name, name, own, lookalike, builtin=True)) == [
        (f"ServiceAccount team-a/{controller}", name, False),
        (f"ServiceAccount kube-system/{controller}", name, True),
    ]


def test_kubelet_api_admin_is_bound_to_no_one_upstream() -> None:
    role = cluster_role("system:kubelet-api-admin", rule(["nodes/proxy"], ["*"]))
    apiserver = {"kind": "User", "name": "kube-apiserver-kubelet-client"}
    crb = binding("kubelet-api-admin", "system:kubelet-api-admin", apiserver, builtin=True)
    assert holders(role, crb) == [
        ("User kube-apiserver-kubelet-client", "kubelet-api-admin", False)
    ]


def test_malformed_subjects_are_skipped() -> None:
    admin = cluster_role("cluster-admin", rule(["*"], ["*"], ["*"]))
    crb = binding("cluster-admin", "cluster-admin", MASTERS)
    crb["subjects"].extend([{"kind": "User"}, "User eve", {"kind": 1, "name": "x"}])
    assert holders(admin, crb) == [("Group system:masters", "cluster-admin", True)]
    crb["subjects"] = {"kind": "User", "name": "eve"}  # not a list: no subjects
    assert holders(admin, crb) == []
