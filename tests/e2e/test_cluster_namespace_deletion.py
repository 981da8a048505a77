"""`kubectl delete namespace` beside kubefence, with the controllers that do the work: the
namespace controller empties the namespace (Pods, the fence, other policies: each deletion a
request kubefence judges, the fence's by the teardown rule), garbage collection removes the
ReplicaSets' Pods, and the finalize call ends it.

With kubefence up, the deletion finishes and no namespace is left Terminating. With kubefence
down and the chart's failurePolicy Fail, the namespace controller's deletions of the policies
are refused: the namespace waits, Terminating (the controller manager's log says why); once
kubefence is back it finishes.
"""

from __future__ import annotations

from typing import Any

import pytest
from cluster import DEFAULT_DENY, Cluster, FencedCluster, wait_for

pytestmark = pytest.mark.cluster

IMAGE = "registry.example/web:1"
POLICIES = (
    DEFAULT_DENY
    + """\
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-dns
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
    - ports:
        - {protocol: UDP, port: 53}
"""
)


def populated(cluster: Cluster, namespace: str) -> None:
    """A fenced namespace with two policies and a Deployment's Pods Running."""
    cluster.kubectl_ok("create", "namespace", namespace)
    cluster.kubectl_ok("apply", "-n", namespace, "-f", "-", stdin=POLICIES)
    cluster.kubectl_ok(
        "create", "deployment", "web", f"--image={IMAGE}", "--replicas=2", "-n", namespace
    )
    cluster.kubectl_ok("rollout", "status", "deployment/web", "-n", namespace, "--timeout=120s")


def terminating(cluster: Cluster) -> list[str]:
    items: list[dict[str, Any]] = cluster.kubectl_json("get", "namespaces")["items"]
    return [n["metadata"]["name"] for n in items if n["status"].get("phase") == "Terminating"]


def gone(cluster: Cluster, namespace: str) -> bool:
    out = cluster.kubectl("get", "namespace", namespace)
    return out.returncode != 0 and "NotFound" in out.stderr


def test_namespace_deletion_finishes_with_kubefence_up(fenced_cluster: FencedCluster) -> None:
    c = fenced_cluster.cluster
    populated(c, "nsdel-up")
    # kubectl waits for the deletion to finish (--wait is its default); the bound is its timeout.
    c.kubectl_ok("delete", "namespace", "nsdel-up", "--timeout=90s")
    assert gone(c, "nsdel-up")
    assert terminating(c) == []
    # Each of the namespace's deletions reached kubefence and was allowed, the fence's too.
    fence = [
        d
        for d in fenced_cluster.hook.decisions()
        if d.get("namespace") == "nsdel-up"
        and d.get("operation") == "DELETE"
        and d.get("name") in ("default-deny", "")
    ]
    assert fence, "kubefence never judged the fence's deletion"
    assert all(d["allowed"] for d in fence), fence


def test_namespace_deletion_waits_for_kubefence_and_then_finishes(
    fenced_cluster: FencedCluster,
) -> None:
    c = fenced_cluster.cluster
    populated(c, "nsdel-down")
    fenced_cluster.hook.stop()
    try:
        c.kubectl_ok("delete", "namespace", "nsdel-down", "--wait=false")

        # What the admin sees: the namespace stays Terminating, and the controller manager's log
        # says why. (Not the namespace's own conditions: the namespace controller's status
        # update, namespaces/status UPDATE, is in the chart's rules too and fails the same way.)
        def refusals() -> list[str]:
            log = c.log_dir / "kube-controller-manager.log"
            return [
                line
                for line in log.read_text(errors="replace").splitlines()
                if "Deletion of namespace failed" in line
                and 'namespace="nsdel-down"' in line
                and "validate.kubefence.io" in line
            ]

        wait_for(refusals, "refused deletion in the controller manager's log")
        assert terminating(c) == ["nsdel-down"]
    finally:
        fenced_cluster.restart()
    wait_for(lambda: gone(c, "nsdel-down"), "end of the namespace's deletion", timeout=180)
    assert terminating(c) == []
