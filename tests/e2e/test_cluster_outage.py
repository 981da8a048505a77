"""kubefence down in the middle of a rollout, with the controllers that do the rollout.

With the chart's ``failurePolicy: Fail`` the rollout stalls: the new ReplicaSet cannot create its
Pods and its FailedCreate events say the webhook call failed; once kubefence is back the
ReplicaSet controller's retries go through and ``kubectl rollout status`` completes. With
``failurePolicy: Ignore`` (the chart rendered with ``--set webhook.failurePolicy=Ignore``) the
rollout goes on without kubefence, and every Pod that slipped in is listed, cause fail-open, by
``kubefence correlate`` (the API server's audit log and kubefence's decision logs) and alerted live
by ``kubefence monitor``, fed by the API server's audit webhook backend: one bypass per Pod, by
audit ID and user; a Pod the user named by its name, a controller's Pod by none (it is created by
generateName, and a Metadata audit event records the request's objectRef, which has no name).

This module runs its own cluster (not the session's): its API server's audit webhook backend
points at this module's monitor, which is given at start-up (tests/e2e/test_monitor.py wires the
same to a bare API server).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cluster import Cluster, FencedCluster, missing_cluster_binaries, wait_for
from kubefence_process import WEBHOOK_NAME
from monitor_process import Monitor, audit_feed
from test_cluster_namespace_deletion import POLICIES

pytestmark = pytest.mark.cluster

IMAGE = "registry.example/web:1"
WEBHOOK_FAILED = f'failed calling webhook "{WEBHOOK_NAME}"'


@dataclass
class Watched:
    """A cluster whose API server sends its audit events to ``monitor``, kubefence enforcing."""

    fenced: FencedCluster
    monitor: Monitor

    @property
    def cluster(self) -> Cluster:
        return self.fenced.cluster


@pytest.fixture(scope="module")
def watched(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Watched]:
    missing = missing_cluster_binaries()
    if missing:
        message = f"no cluster tier (missing {', '.join(p.name for p in missing)})"
        if os.environ.get("KUBEFENCE_E2E") == "1":
            pytest.fail(message)
        pytest.skip(message)
    work = tmp_path_factory.mktemp("outage")
    feed = audit_feed(work)
    monitor = feed.monitor(["--webhook-name", WEBHOOK_NAME])
    monitor.start()
    c = Cluster(
        nodes=2,
        extra_apiserver_args=feed.apiserver_args(),
    )
    try:
        c.start()
        fenced = FencedCluster.start(c, work / "kubefence")
        try:
            yield Watched(fenced, monitor)
        finally:
            fenced.stop()
    finally:
        c.stop()
        monitor.stop()
        if request.session.testsfailed or os.environ.get("KUBEFENCE_E2E_KEEP") == "1":
            print(f"\noutage cluster logs kept in {c.log_dir}", file=sys.stderr)
        else:
            c.cleanup()


def deployment(name: str, replicas: int) -> str:
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                # One new Pod at a time, no old one removed before it is Ready.
                "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "web", "image": IMAGE}]},
                },
            },
        }
    )


def rolled_out(c: Cluster, namespace: str, replicas: int) -> None:
    """A fenced namespace with Deployment ``web``'s Pods Running."""
    c.kubectl_ok("create", "namespace", namespace)
    c.kubectl_ok("apply", "-n", namespace, "-f", "-", stdin=POLICIES)

    def applied() -> bool:
        out = c.kubectl("apply", "-n", namespace, "-f", "-", stdin=deployment("web", replicas))
        assert out.returncode == 0 or "is not fenced" in out.stderr, out.stderr
        return out.returncode == 0

    wait_for(applied, "Deployment web admitted (kubefence's view of the fence caught up)")
    c.kubectl_ok("rollout", "status", "deployment/web", "-n", namespace, "--timeout=180s")


def replica_sets(c: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    items = c.kubectl_json("get", "replicasets", "-n", namespace, "-l", "app=web")["items"]
    return {rs["metadata"]["name"]: rs for rs in items}


def pods_of(c: Cluster, namespace: str, replica_set: str) -> list[str]:
    items = c.kubectl_json("get", "pods", "-n", namespace, "-l", "app=web")["items"]
    return sorted(
        p["metadata"]["name"]
        for p in items
        if any(o["name"] == replica_set for o in p["metadata"].get("ownerReferences", []))
    )


def failed_creates(c: Cluster, namespace: str, replica_set: str) -> list[str]:
    events = c.kubectl_json(
        "get", "events", "-n", namespace, "--field-selector",
        f"reason=FailedCreate,involvedObject.name={replica_set}",
    )["items"]  # fmt: skip
    return [e["message"] for e in events]


def test_with_fail_a_rollout_stalls_while_kubefence_is_down_and_resumes_when_it_is_back(
    watched: Watched,
) -> None:
    fenced, c, ns = watched.fenced, watched.cluster, "outage-fail"
    rolled_out(c, ns, replicas=2)
    old = set(replica_sets(c, ns))
    # Hold the new ReplicaSet's first Pod back with a quota (not something kubefence judges),
    # so that kubefence goes down after the new ReplicaSet exists and before any of its Pods.
    c.kubectl_ok("create", "quota", "hold", "--hard=pods=2", "-n", ns)
    c.kubectl_ok("rollout", "restart", "deployment/web", "-n", ns)
    (new,) = wait_for(lambda: set(replica_sets(c, ns)) - old, "the rollout's new ReplicaSet")
    fenced.hook.stop()
    try:
        c.kubectl_ok("delete", "quota", "hold", "-n", ns)
        # What the user sees: FailedCreate on the new ReplicaSet, naming the webhook call.
        messages = wait_for(
            lambda: [m for m in failed_creates(c, ns, new) if WEBHOOK_FAILED in m],
            "a FailedCreate event naming kubefence's webhook",
            timeout=180,  # the ReplicaSet controller retries with a growing backoff
        )
        assert "Error creating" in messages[0], messages
        rs = replica_sets(c, ns)[new]
        assert rs["spec"]["replicas"] >= 1
        assert pods_of(c, ns, new) == []
        status = c.kubectl_json("get", "deployment", "web", "-n", ns)["status"]
        assert status.get("updatedReplicas", 0) == 0
    finally:
        fenced.restart()
    # kubefence back: the controller's retries go through, and the rollout completes by itself.
    c.kubectl_ok("rollout", "status", "deployment/web", "-n", ns, "--timeout=300s")
    assert len(pods_of(c, ns, new)) == 2
    assert all(not pods_of(c, ns, rs) for rs in old)


def correlate(watched: Watched, decision_logs: list[Path]) -> dict[str, Any]:
    args = [
        sys.executable, "-m", "webhook", "correlate",
        "--config", str(watched.fenced.hook.config_path),
        "--audit-log", str(watched.cluster.audit_log_path),
        *(f"--decision-log={log}" for log in decision_logs),
        "-o", "json",
    ]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    assert out.returncode in (0, 1), out.stderr  # 1: there are bypasses
    report: dict[str, Any] = json.loads(out.stdout)
    return report


def test_with_ignore_every_pod_that_slipped_in_is_listed_by_correlate_and_alerted_by_monitor(
    watched: Watched,
) -> None:
    fenced, c, ns = watched.fenced, watched.cluster, "outage-open"
    rolled_out(c, ns, replicas=2)
    old = set(replica_sets(c, ns))
    fenced.reconfigure({"webhook": {"failurePolicy": "Ignore"}})
    down = fenced.hook
    try:
        down.stop()
        # The API server fails open: the rollout goes on without kubefence, and so does a Pod
        # of a user's own.
        c.kubectl_ok("rollout", "restart", "deployment/web", "-n", ns)
        c.kubectl_ok("run", "slipped", f"--image={IMAGE}", "-n", ns)
        c.kubectl_ok("rollout", "status", "deployment/web", "-n", ns, "--timeout=300s")
    finally:
        fenced.restart()  # kubefence back, the chart's defaults (failurePolicy Fail) registered
    assert fenced.configuration["webhooks"][0]["failurePolicy"] == "Fail"
    (new,) = set(replica_sets(c, ns)) - old
    from_rollout = pods_of(c, ns, new)
    assert len(from_rollout) == 2

    def pod_creates(alerts: list[dict[str, Any]], time: str) -> list[tuple[str, str, str]]:
        """The fail-open Pod creates of the namespace: (name, user, audit ID). A controller's
        Pod has no name there: it is created by generateName, and the audit event (Metadata)
        records the request's objectRef, which has none."""
        return sorted(
            (a["name"], a["user"], a[time])
            for a in alerts
            if a.get("namespace") == ns
            and a.get("cause") == "fail-open"
            and a.get("resource") == "pods"
            and a.get("verb") == "create"
        )

    controller = "system:serviceaccount:kube-system:replicaset-controller"
    expected = [("", controller)] * len(from_rollout) + [("slipped", "kubefence-admin")]

    def alerted() -> list[tuple[str, str, str]]:
        return pod_creates(watched.monitor.alerts("evasion.bypass"), "audit_id")

    # Live: the monitor, fed by the API server's audit webhook backend; one alert per Pod.
    wait_for(lambda: len(alerted()) >= len(expected), "a fail-open alert for every Pod")
    live = alerted()
    assert sorted((name, user) for name, user, _ in live) == sorted(expected)
    assert len({audit_id for _, _, audit_id in live}) == len(expected)
    # After the fact: correlate over the audit log and both kubefence processes' decision logs
    # lists the same requests, by the same audit IDs.
    report = correlate(watched, [down.decision_log, fenced.hook.decision_log])
    listed = pod_creates(report["bypasses"], "auditID")
    assert listed == live
