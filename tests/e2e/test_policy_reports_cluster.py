"""`kubefence scan --format policyreport|openreports` against a real kube-apiserver: the Policy WG's
CRDs (tests/fixtures/report-crds) installed, the scan of the live cluster piped to
`kubectl apply --dry-run=server --validate=strict -f -`, as a user would pipe it, accepted whole;
then applied for real and read back unpruned.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from controlplane import ControlPlane, ExternalCluster
from kubefence_process import AUDIT_POLICY
from test_chart_cluster import kubectl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chart"))

CRDS = Path(__file__).resolve().parents[1] / "fixtures" / "report-crds"
OPEN, FENCED = "kf-report-open", "kf-report-fenced"
Cluster = ControlPlane | ExternalCluster


@pytest.fixture(scope="module")
def cluster(control_plane: Cluster) -> Cluster:
    """The local control plane with the report CRDs, one open and one fenced namespace."""
    if not control_plane.local:
        pytest.skip("installs CRDs; runs against the local control plane only")
    kubectl(control_plane, "apply", "-f", str(CRDS))
    kubectl(control_plane, "wait", "--for=condition=established", "--timeout=60s", "-f", str(CRDS))
    for name in (OPEN, FENCED, "unaudited"):
        if kubectl(control_plane, "get", "namespace", name, check=False).returncode != 0:
            kubectl(control_plane, "create", "namespace", name)
    fence = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "default-deny", "namespace": FENCED},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }
    kubectl(control_plane, "apply", "-f", "-", stdin=json.dumps(fence))
    return control_plane


def scan(cluster: Cluster, tmp_path: Path, form: str) -> str:
    config = tmp_path / "kubefence.yaml"
    config.write_text(f"auditScope:\n  policyFile: {AUDIT_POLICY.resolve()}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "webhook", "scan", "--kubeconfig", str(cluster.kubeconfig_path),
         "--config", str(config), "--format", form, "--strict"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # an open namespace: an advisory finding, --strict
    return proc.stdout


@pytest.mark.parametrize(
    ("form", "kind", "cluster_kind"),
    [
        ("policyreport", "policyreport.wgpolicyk8s.io", "clusterpolicyreport.wgpolicyk8s.io"),
        ("openreports", "report.openreports.io", "clusterreport.openreports.io"),
    ],
)
def test_the_reports_are_what_the_crds_accept(
    cluster: Cluster, tmp_path: Path, form: str, kind: str, cluster_kind: str
) -> None:
    text = scan(cluster, tmp_path, form)
    docs = [d for d in yaml.safe_load_all(text) if d]
    namespaces = {d["metadata"].get("namespace") for d in docs}
    assert {None, OPEN, FENCED, "unaudited"} <= namespaces
    dry = kubectl(
        cluster, "apply", "--dry-run=server", "--validate=strict", "-f", "-", stdin=text,
        check=False,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.strip().splitlines()
    assert len(lines) == len(docs)
    assert all(line.endswith("(server dry run)") for line in lines), dry.stdout
    # Applied for real and read back: nothing pruned, the summary as printed.
    kubectl(cluster, "apply", "--validate=strict", "-f", "-", stdin=text)
    try:
        stored = json.loads(
            kubectl(cluster, "-n", OPEN, "get", kind, "kubefence", "-o", "json").stdout
        )
        (printed,) = [d for d in docs if d["metadata"].get("namespace") == OPEN]
        assert stored["results"] == printed["results"]
        assert stored["summary"] == printed["summary"]
        assert {r["policy"]: r["result"] for r in stored["results"]}["default-deny"] == "fail"
        audit = [r for r in stored["results"] if r["policy"] == "audit-scope"]
        assert audit == []  # the e2e audit policy records everything in an ordinary namespace
        unaudited = json.loads(
            kubectl(cluster, "-n", "unaudited", "get", kind, "kubefence", "-o", "json").stdout
        )
        assert [r["rule"] for r in unaudited["results"] if r["policy"] == "audit-scope"] == [
            "rules[1]"
        ]
        assert json.loads(kubectl(cluster, "get", cluster_kind, "kubefence", "-o", "json").stdout)
    finally:
        kubectl(cluster, "delete", "--ignore-not-found", "-f", "-", stdin=text)
