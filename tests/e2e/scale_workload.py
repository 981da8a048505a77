"""A workload for the cluster tier at size: M fenced namespaces, D Deployments of R replicas spread
over them, created and then rolled (a template change) by the real controllers, waited for by
reading the Deployments' status, never by a sleep.

Shared by tests/e2e/test_cluster_scale_small.py (correctness at a few Deployments) and
tests/bench/bench_cluster_scale.py (the same steps at size, with and without kubefence). Objects
go in as one `kubectl create -f -` / `kubectl replace -f -` of a List: one request an object, the
controllers (Pods by the ReplicaSet controller, at its own client rate) doing the rest.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from cluster import Cluster, wait_for

APP_LABEL = "kubefence-scale"
REVISION_ANNOTATION = "scale.kubefence.io/revision"
IMAGE = "registry.example/web:1"
RS_CONTROLLER = "system:serviceaccount:kube-system:replicaset-controller"


@dataclass(frozen=True)
class Size:
    namespaces: int
    deployments: int
    replicas: int

    @property
    def pods(self) -> int:
        return self.deployments * self.replicas


def namespace_names(prefix: str, size: Size) -> list[str]:
    return [f"{prefix}-{i}" for i in range(size.namespaces)]


def namespaces_list(prefix: str, size: Size) -> dict[str, Any]:
    items = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in
             namespace_names(prefix, size)]  # fmt: skip
    return {"apiVersion": "v1", "kind": "List", "items": items}


def fences_list(prefix: str, size: Size) -> dict[str, Any]:
    """One default-deny NetworkPolicy a namespace: what makes its Pods admissible under enforce."""
    items = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny", "namespace": n},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        }
        for n in namespace_names(prefix, size)
    ]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def deployments_list(prefix: str, size: Size, revision: int) -> dict[str, Any]:
    """The Deployments, round-robin over the namespaces; `revision` in the Pod template, so a new
    revision is a rollout of every one."""
    names = namespace_names(prefix, size)
    items = []
    for i in range(size.deployments):
        labels = {"app": APP_LABEL, "deployment": f"web-{i}"}
        items.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": f"web-{i}", "namespace": names[i % len(names)],
                             "labels": {"app": APP_LABEL}},
                "spec": {
                    "replicas": size.replicas,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {
                            "labels": labels,
                            "annotations": {REVISION_ANNOTATION: str(revision)},
                        },
                        "spec": {"containers": [{"name": "web", "image": IMAGE}]},
                    },
                },
            }
        )  # fmt: skip
    return {"apiVersion": "v1", "kind": "List", "items": items}


def submit(cluster: Cluster, verb: str, manifest: dict[str, Any]) -> None:
    """`kubectl VERB -f -` of a List; an AssertionError naming kubectl's stderr if it fails."""
    out = cluster.kubectl(verb, "-f", "-", stdin=json.dumps(manifest), timeout=3600)
    assert out.returncode == 0, f"kubectl {verb}: {out.stderr[-2000:]}"


def complete(deployment: dict[str, Any]) -> bool:
    """What `kubectl rollout status` waits for: the controller saw this generation, every replica
    is updated and available, and no old one is left."""
    spec, status = deployment["spec"], deployment.get("status", {})
    want = spec["replicas"]
    return (
        status.get("observedGeneration", 0) >= deployment["metadata"]["generation"]
        and status.get("updatedReplicas", 0) == want
        and status.get("availableReplicas", 0) == want
        and status.get("replicas", 0) == want
    )


def pending_rollouts(cluster: Cluster) -> int:
    """How many of the workload's Deployments have not completed their rollout."""
    items = cluster.kubectl_json("get", "deployments", "-A", "-l", f"app={APP_LABEL}")["items"]
    return sum(1 for d in items if not complete(d))


def wait_for_rollouts(cluster: Cluster, expected: int, timeout: float) -> float:
    """Seconds until all `expected` Deployments have completed (polled every second)."""
    t0 = time.monotonic()

    def done() -> bool:
        items = cluster.kubectl_json("get", "deployments", "-A", "-l", f"app={APP_LABEL}")["items"]
        return len(items) == expected and all(complete(d) for d in items)

    wait_for(done, f"all {expected} rollouts complete", timeout=timeout)
    return time.monotonic() - t0


def admissible(cluster: Cluster, namespace: str) -> bool:
    """Whether a Deployment may be created in `namespace` now (a dry run): under enforce, once
    kubefence's informer has seen the namespace's fence."""
    out = cluster.kubectl(
        "create", "deployment", "probe", f"--image={IMAGE}", "-n", namespace, "--dry-run=server"
    )
    return out.returncode == 0


def service_accounts_ready(cluster: Cluster, prefix: str, size: Size) -> bool:
    """Whether the controller manager has given every workload namespace its `default`
    ServiceAccount (before it, a Pod create is refused and the ReplicaSet controller backs off)."""
    items = cluster.kubectl_json(
        "get", "serviceaccounts", "-A", "--field-selector", "metadata.name=default"
    )["items"]
    ready = {sa["metadata"]["namespace"] for sa in items}
    return set(namespace_names(prefix, size)) <= ready


def created_pods(cluster: Cluster, prefix: str, webhook: str) -> list[str | None]:
    """For every Pod the ReplicaSet controller created in the workload's namespaces (the API
    server's audit log, response 201), the decision id `webhook` put in its audit annotations
    (None: no decision of that webhook admitted it)."""
    out = []
    for e in cluster.audit_events():
        ref = e.get("objectRef") or {}
        if (
            e.get("verb") == "create"
            and ref.get("resource") == "pods"
            and not ref.get("subresource")
            and str(ref.get("namespace", "")).startswith(f"{prefix}-")
            and (e.get("user") or {}).get("username") == RS_CONTROLLER
            and (e.get("responseStatus") or {}).get("code") == 201
        ):
            out.append((e.get("annotations") or {}).get(f"{webhook}/decision-id"))
    return out
