"""Turning kubefence on in a cluster that already runs workloads, lived through by the real
controllers: the smallest honest version of the README's rollout (warn -> scan -> fix -> enforce).

A Deployment in a fenced namespace rolls out with kubefence enforcing. A Deployment that was
running in an unfenced namespace before kubefence was installed loses a Pod: the ReplicaSet
controller's re-creation is denied, `kubectl get events` shows FailedCreate naming the fix, and
once `kubefence scan --fix | kubectl apply -f -` has fenced the namespace the ReplicaSet
controller's own retry completes the rollout. Then a node drain: every evicted Pod is re-created
on another node and Running.

Every step is the real kubectl (~/.cache/kubefence/bin/kubectl). The fix is applied whole, as a
user would: every namespace unfenced at that moment (`default` too) is fenced from then on, for
the rest of the session's tier.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from cluster import DEFAULT_DENY, Cluster, FencedCluster, wait_for

pytestmark = pytest.mark.cluster

FENCED = "turnon-fenced"
UNFENCED = "turnon-legacy"
IMAGE = "registry.example/web:1"


def pods(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.kubectl_json("get", "pods", "-n", namespace)["items"]
    return items


def running_on_fake_nodes(cluster: Cluster, namespace: str) -> list[str]:
    """The nodes of the namespace's Running Pods; every one a fake Node."""
    nodes = [
        p["spec"].get("nodeName", "")
        for p in pods(cluster, namespace)
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]
    assert set(nodes) <= set(cluster.node_names), nodes
    return nodes


def failed_create_messages(cluster: Cluster, namespace: str) -> list[str]:
    out = cluster.kubectl_ok(
        "get", "events", "-n", namespace, "--field-selector", "reason=FailedCreate", "-o", "json"
    )
    return [e["message"] for e in json.loads(out)["items"]]


def scan_fix(cluster: Cluster) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "webhook", "scan", "--kubeconfig", str(cluster.kubeconfig_path),
         "--fix"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode in (0, 1), out.stderr
    return out.stdout


def test_turn_on_then_drain(fenced_cluster: FencedCluster) -> None:
    c = fenced_cluster.cluster
    # Before kubefence: a legacy namespace with a running Deployment and no fence.
    fenced_cluster.unregister()
    try:
        c.kubectl_ok("create", "namespace", UNFENCED)
        c.kubectl_ok(
            "create", "deployment", "web", f"--image={IMAGE}", "--replicas=2", "-n", UNFENCED
        )
        c.kubectl_ok("rollout", "status", "deployment/web", "-n", UNFENCED, "--timeout=120s")
    finally:
        fenced_cluster.register()

    # Enforcing: the fenced namespace's Deployment rolls out, Pods Running on fake Nodes.
    c.kubectl_ok("create", "namespace", FENCED)
    c.kubectl_ok("apply", "-n", FENCED, "-f", "-", stdin=DEFAULT_DENY)
    c.kubectl_ok("create", "deployment", "web", f"--image={IMAGE}", "--replicas=3", "-n", FENCED)
    c.kubectl_ok("rollout", "status", "deployment/web", "-n", FENCED, "--timeout=120s")
    assert len(running_on_fake_nodes(c, FENCED)) == 3

    # The legacy namespace loses a Pod: its re-creation by the ReplicaSet controller is denied,
    # and the event names the fix.
    victim = pods(c, UNFENCED)[0]["metadata"]["name"]
    c.kubectl_ok("delete", "pod", victim, "-n", UNFENCED, "--wait=true")
    messages = wait_for(lambda: failed_create_messages(c, UNFENCED), "FailedCreate event")
    assert any(
        f'namespace "{UNFENCED}" is not fenced' in m
        and "Apply this NetworkPolicy" in m
        and "kind: NetworkPolicy" in m
        for m in messages
    ), messages
    assert len(running_on_fake_nodes(c, UNFENCED)) == 1

    # The fix scan prints, applied as the README says; the ReplicaSet controller retries alone.
    fix = scan_fix(c)
    assert f"namespace: {UNFENCED}" in fix, fix
    assert f"namespace: {FENCED}" not in fix, fix
    c.kubectl_ok("apply", "-f", "-", stdin=fix)
    c.kubectl_ok("rollout", "status", "deployment/web", "-n", UNFENCED, "--timeout=180s")
    assert len(running_on_fake_nodes(c, UNFENCED)) == 2

    # A node drain: evicted Pods are re-created elsewhere, in both namespaces, and Running.
    node = c.node_names[0]
    before = {ns: running_on_fake_nodes(c, ns) for ns in (FENCED, UNFENCED)}
    c.kubectl_ok("drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=120s")
    try:
        for namespace in (FENCED, UNFENCED):
            c.kubectl_ok("rollout", "status", "deployment/web", "-n", namespace, "--timeout=120s")
            after = running_on_fake_nodes(c, namespace)
            assert len(after) == len(before[namespace]), (namespace, after)
            assert node not in after, (namespace, after)
    finally:
        c.kubectl("uncordon", node)
    assert any(node in nodes for nodes in before.values()), "nothing ran on the drained node"
