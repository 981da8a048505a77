"""The scale benchmark's workload, small (tests/bench/bench_cluster_scale.py runs it at size):
fenced namespaces, Deployments created and then rolled by the controllers with kubefence
enforcing. Correctness only: every rollout completes, and every Pod the ReplicaSet controller
created was admitted by a kubefence decision, one decision a Pod.
"""

from __future__ import annotations

import pytest
from cluster import FencedCluster, wait_for
from kubefence_process import WEBHOOK_NAME
from scale_workload import (
    RS_CONTROLLER,
    Size,
    admissible,
    created_pods,
    deployments_list,
    fences_list,
    namespace_names,
    namespaces_list,
    submit,
    wait_for_rollouts,
)

pytestmark = pytest.mark.cluster

PREFIX = "scale-small"
SIZE = Size(namespaces=4, deployments=10, replicas=2)


def test_rollouts_at_small_scale_complete_each_pod_decided(fenced_cluster: FencedCluster) -> None:
    c = fenced_cluster.cluster
    names = namespace_names(PREFIX, SIZE)
    try:
        submit(c, "create", namespaces_list(PREFIX, SIZE))
        submit(c, "create", fences_list(PREFIX, SIZE))
        wait_for(lambda: all(admissible(c, n) for n in names), "kubefence seeing every fence")

        submit(c, "create", deployments_list(PREFIX, SIZE, revision=1))
        wait_for_rollouts(c, SIZE.deployments, timeout=300)
        submit(c, "replace", deployments_list(PREFIX, SIZE, revision=2))
        wait_for_rollouts(c, SIZE.deployments, timeout=300)

        created = created_pods(c, PREFIX, WEBHOOK_NAME)
        # The first rollout's Pods and the second's, at the least (a Pod re-created counts too).
        assert len(created) >= 2 * SIZE.pods, len(created)
        decided = [
            d
            for d in fenced_cluster.hook.decisions()
            if d.get("namespace") in names
            and d.get("operation") == "CREATE"
            and d.get("resource") == "pods"
            and not d.get("subresource")
            and d.get("user") == RS_CONTROLLER
        ]
        assert all(d["allowed"] for d in decided), [d for d in decided if not d["allowed"]][:3]
        # One decision a Pod, and each Pod's audit event names the decision that admitted it.
        assert len(decided) == len(created)
        assert sorted(map(str, created)) == sorted(d["decision_id"] for d in decided)
    finally:
        for n in names:
            c.kubectl("delete", "namespace", n, "--wait=false", "--ignore-not-found")
