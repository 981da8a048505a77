"""`kubefence scan --format policyreport|openreports`: the Policy WG's report objects.

Each document is checked against the report CRDs' openAPIV3Schema (tests/fixtures/report-crds,
written for these tests from the published APIs), the way the API server's structural schema
validation would; the e2e suite server-side dry-runs the same output against a real API server
with those CRDs installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from objects import deny_all, netpol, workload

from webhook.cli import main
from webhook.cluster.static import load_state, objects_of
from webhook.config import load_settings
from webhook.findings.host import WORKLOAD_KINDS
from webhook.findings.judge import scan
from webhook.findings.policy_reports import render_reports

CRDS = Path(__file__).resolve().parents[1] / "fixtures" / "report-crds"
POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - level: None
    namespaces: [dark]
  - level: Metadata
"""


def schema(crd_file: str, version: str) -> dict[str, Any]:
    (crd,) = [d for d in yaml.safe_load_all((CRDS / crd_file).read_text()) if d]
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return dict(served["schema"]["openAPIV3Schema"])


def violations(value: Any, spec: dict[str, Any], path: str = "") -> list[str]:
    """What a structural schema would refuse: unknown fields, wrong types, enums, required."""
    kind = spec.get("type")
    found: list[str] = []
    if "enum" in spec and value not in spec["enum"]:
        found.append(f"{path}: {value!r} not in {spec['enum']}")
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{path}: not an object"]
        props = spec.get("properties")
        extra = spec.get("additionalProperties")
        for key in spec.get("required", []):
            if key not in value:
                found.append(f"{path}.{key}: required")
        for key, item in value.items():
            if props is not None and key in props:
                found += violations(item, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += violations(item, extra, f"{path}.{key}")
            elif props is not None and path != ".metadata":
                found.append(f"{path}.{key}: unknown field")
    elif kind == "array":
        if not isinstance(value, list):
            return [f"{path}: not an array"]
        for i, item in enumerate(value):
            found += violations(item, spec.get("items", {}), f"{path}[{i}]")
    elif kind == "string" and not isinstance(value, str):
        found.append(f"{path}: not a string")
    elif kind == "integer" and (not isinstance(value, int) or isinstance(value, bool)):
        found.append(f"{path}: not an integer")
    return found


@pytest.fixture
def report_docs(tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    """Both formats for a cluster with one namespace of each kind of finding."""
    (tmp_path / "audit-policy.yaml").write_text(POLICY)
    config = tmp_path / "kubefence.yaml"
    config.write_text(
        "auditScope: {policyFile: audit-policy.yaml}\n"
        "overrides: [{namespaces: [legacy], defaultDeny: 'off'}]\n"
    )
    state = tmp_path / "state"
    state.mkdir()
    objects = [
        *(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
            for n in ("kube-system", "fenced", "open", "opened", "dark", "legacy")
        ),
        deny_all(namespace="fenced"),
        deny_all(namespace="dark"),
        deny_all(namespace="opened"),
        netpol("everyone", "opened", ingress=[{}], types=["Ingress"]),
        netpol(
            "web-open",
            "fenced",
            selector={"matchLabels": {"app": "web"}},
            ingress=[{}],
            types=["Ingress"],
        ),
        workload(
            "DaemonSet",
            "agent",
            "fenced",
            {
                "containers": [{"name": "c", "image": "x"}],
                "volumes": [{"name": "k", "hostPath": {"path": "/var/lib/kubelet"}}],
            },
        ),
    ]
    (state / "cluster.yaml").write_text(yaml.safe_dump_all(objects))
    view = load_state(state)
    facts = [f for f in (view.namespace(n) for n in view.names()) if f is not None]
    workloads = objects_of(state, WORKLOAD_KINDS)
    found = scan(facts, view, load_settings(config), ["cilium.io"], workloads=workloads)
    return {
        name: [d for d in yaml.safe_load_all(render_reports(found, name)) if d]
        for name in ("policyreport", "openreports")
    }


def test_policy_reports_match_the_policy_wg_crds(report_docs: dict[str, Any]) -> None:
    docs = report_docs["policyreport"]
    kinds = [(d["kind"], d["metadata"].get("namespace")) for d in docs]
    assert kinds == [
        ("ClusterPolicyReport", None),
        *(("PolicyReport", ns) for ns in ("dark", "fenced", "legacy", "open", "opened")),
    ]
    for doc in docs:
        assert doc["apiVersion"] == "wgpolicyk8s.io/v1alpha2"
        crd = "wgpolicyk8s.io_" + doc["kind"].lower() + "s.yaml"
        assert violations(doc, schema(crd, "v1alpha2")) == [], doc["metadata"]
        results = doc["results"]
        assert doc["summary"] == {
            r: sum(1 for x in results if x["result"] == r)
            for r in ("pass", "fail", "warn", "error", "skip")
        }
        assert all(r["source"] == "kubefence" and r["policy"] and r["rule"] for r in results)


def test_each_finding_is_a_result_where_its_owner_looks(report_docs: dict[str, Any]) -> None:
    by_ns = {d["metadata"].get("namespace"): d["results"] for d in report_docs["policyreport"]}

    def outcome(ns: str | None, policy: str, rule: str | None = None) -> list[str]:
        return [
            r["result"]
            for r in by_ns[ns]
            if r["policy"] == policy and (rule is None or r["rule"] == rule)
        ]

    assert outcome("open", "default-deny") == ["fail"]
    (fail,) = [r for r in by_ns["open"] if r["result"] == "fail"]
    assert fail["severity"] == "high"
    assert fail["resources"] == [{"apiVersion": "v1", "kind": "Namespace", "name": "open"}]
    assert fail["properties"]["missing"] == "Ingress,Egress"
    assert "kubefence scan --fix" in fail["message"]
    assert outcome("fenced", "default-deny") == ["pass"]
    assert outcome("legacy", "default-deny") == ["skip"]  # the override turns it off
    assert outcome("opened", "allow-all", "neutralises-fence") == ["fail"]
    (opened,) = [r for r in by_ns["opened"] if r["policy"] == "allow-all"]
    assert opened["resources"][0]["kind"] == "NetworkPolicy"
    assert opened["resources"][0]["name"] == "everyone"
    assert outcome("fenced", "allow-all", "opens-selected-pods") == ["warn"]
    # A way onto the node: failed on the DaemonSet, its rule the mode key.
    (host,) = [r for r in by_ns["fenced"] if r["policy"] == "host-network"]
    assert (host["rule"], host["result"], host["severity"]) == ("hostPath", "fail", "high")
    assert host["resources"] == [
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "namespace": "fenced", "name": "agent"}
    ]
    assert host["properties"] == {
        "fields": "spec.template.spec.volumes[0].hostPath.path",
        "mode": "enforce",
    }
    assert host["message"].startswith('DaemonSet "agent" mounts spec.template.spec.volumes[0]')
    # The audit policy rule that leaves "dark" unaudited: one result, named rules[0].
    (audit,) = [r for r in by_ns["dark"] if r["policy"] == "audit-scope"]
    assert (audit["rule"], audit["result"], audit["category"]) == (
        "rules[0]",
        "fail",
        "audit trail",
    )
    assert "any user: CREATE, UPDATE of pods" in audit["message"]
    assert audit["properties"]["auditRules"] == "0"
    assert outcome("open", "audit-scope") == []
    # Cluster-wide: the policy API kubefence does not evaluate, the exempt namespace skipped.
    assert outcome(None, "network-policy-apis") == ["warn"]
    assert outcome(None, "default-deny") == ["skip"]


def test_openreports_is_the_same_under_its_own_group(report_docs: dict[str, Any]) -> None:
    wg, open_ = report_docs["policyreport"], report_docs["openreports"]
    assert [d["kind"] for d in open_] == ["ClusterReport", *(["Report"] * (len(open_) - 1))]
    for a, b in zip(wg, open_, strict=True):
        assert b["apiVersion"] == "openreports.io/v1alpha1"
        assert b["source"] == "kubefence"
        assert b["results"] == a["results"]
        crd = "openreports.io_" + b["kind"].lower() + "s.yaml"
        assert violations(b, schema(crd, "v1alpha1")) == [], b["metadata"]


def test_the_cli_prints_them_and_exits_as_the_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: open}\n")
    # An unfenced namespace with nothing in it: advisory (enforce denies nothing re-created).
    assert main(["scan", "--state", str(state), "--format", "policyreport", "--strict"]) == 1
    capsys.readouterr()
    assert main(["scan", "--state", str(state), "--format", "policyreport"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# kubefence scan --format policyreport: ")
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert [d["kind"] for d in docs] == ["ClusterPolicyReport", "PolicyReport"]
