"""The README's rollout (warn -> scan -> fix -> enforce) on a cluster that already runs workloads,
then a day of controller actions under enforce, all with the real kubectl.

Three namespaces of our own, each with Deployments, a StatefulSet, a DaemonSet over the fake
Nodes and a CronJob, created while kubefence serves the chart's ``mode: warn`` (users see the
warnings):
- FENCED has its default-deny from the start, and one Deployment with a host escape (a hostPath
  on /var/lib/kubelet);
- LEGACY has no fence: ``kubefence scan --fix | kubectl apply -f -`` fences it;
- OPEN has a default-deny neutralised by an allow-all policy, which ``--fix`` cannot fix (no new
  policy takes an old one's rules away), so it stays where scan says enforce would deny.

After the fix, the gate scan (``scan -o json``) lists what enforce would deny; the config is
switched to enforce (kubefence re-reads it: ``config.applied``). Then the day: ``rollout restart``
of every Deployment, ``scale`` up and down, ``drain`` of a Node, ``create job --from=cronjob``, a
StatefulSet Pod and a DaemonSet Pod deleted. Every re-creation completes in FENCED (but the
escape) and LEGACY, and is denied in OPEN and for the escape, with FailedCreate events whose
message names the fix; the admin's own `rollout restart` and `create job --from` of those
workloads are refused with the same message. The workloads enforce stopped (the FailedCreate
events' involved objects, traced by ownerReferences to what a user wrote, and the CronJob whose
manual Job was refused) are exactly those the gate scan listed (``wouldDeny``): the property that
makes ``scan`` exit 0 a safe gate.

The tier is shared: the fix is applied whole, as a user would (every namespace unfenced then stays
fenced), the config is restored and the Node uncordoned in ``finally``, and our namespaces are
deleted at the end.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster import REPO, Cluster, FencedCluster, wait_for

pytestmark = pytest.mark.cluster

FENCED = "rollout-fenced"
LEGACY = "rollout-legacy"
OPEN = "rollout-open"
NAMESPACES = (FENCED, LEGACY, OPEN)
DEPLOYMENTS = ("web", "api", "worker")
ESCAPE = "kubelet-reader"  # FENCED's Deployment with a hostPath on /var/lib/kubelet
STATEFULSET = "db"
DAEMONSET = "agent"
CRONJOB = "nightly"
IMAGE = "registry.example/app:1"
CONTROLLER_USER = "system:serviceaccount:kube-system:"

DEFAULT_DENY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "default-deny"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
}
ALLOW_ALL = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "allow-all"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}],
             "egress": [{}]},
}  # fmt: skip

Workload = tuple[str, str, str]  # namespace, kind, name: the object a user wrote


def pod_template(app: str, host_escape: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": IMAGE}]}
    if host_escape:
        spec["volumes"] = [{"name": "kubelet", "hostPath": {"path": "/var/lib/kubelet"}}]
        spec["containers"][0]["volumeMounts"] = [{"name": "kubelet", "mountPath": "/kubelet"}]
    return {"metadata": {"labels": {"app": app}}, "spec": spec}


def workload_manifests(namespace: str) -> list[dict[str, Any]]:
    """The namespace's workloads, as a team wrote them before kubefence."""
    docs: list[dict[str, Any]] = []
    names = list(DEPLOYMENTS) + ([ESCAPE] if namespace == FENCED else [])
    for name in names:
        docs.append({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                     "template": pod_template(name, host_escape=name == ESCAPE)},
        })  # fmt: skip
    docs.append({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": STATEFULSET},
        "spec": {"replicas": 2, "serviceName": STATEFULSET,
                 "selector": {"matchLabels": {"app": STATEFULSET}},
                 "template": pod_template(STATEFULSET)},
    })  # fmt: skip
    docs.append({
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": DAEMONSET},
        "spec": {"selector": {"matchLabels": {"app": DAEMONSET}},
                 "template": pod_template(DAEMONSET)},
    })  # fmt: skip
    job_template = pod_template(CRONJOB)
    job_template["spec"]["restartPolicy"] = "Never"
    docs.append({
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": CRONJOB},
        # Never due during a test run: its Jobs come from `kubectl create job --from`.
        "spec": {"schedule": "0 3 29 2 *", "jobTemplate": {"spec": {"template": job_template}}},
    })  # fmt: skip
    return docs


def as_list(docs: Iterable[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(docs)})


# -- kubefence's config: the chart's `mode: warn`, then its default (enforce) --------------------


def chart_modes(mode: str) -> dict[str, Any]:
    """The modes the chart's ``mode`` renders into kubefence's config (helm template)."""
    sys.path.insert(0, str(REPO / "tests" / "chart"))
    from helmchart import render

    (config_map,) = [d for d in render({"mode": mode}) if d["kind"] == "ConfigMap"]
    rendered = yaml.safe_load(config_map["data"]["config.yaml"])
    return {
        "defaultDeny": rendered["defaultDeny"],
        "hostNetwork": rendered["hostNetwork"],
        "auditScope": {"mode": rendered["auditScope"]["mode"]},
    }


def with_modes(config_text: str, modes: dict[str, Any]) -> str:
    config = yaml.safe_load(config_text)
    for key, value in modes.items():
        config[key] = {**config.get(key, {}), **value}
    return yaml.safe_dump(config)


def apply_config(fenced: FencedCluster, text: str) -> None:
    """Write kubefence's config file; return once kubefence has re-read it (``config.applied``)."""
    applied = len(fenced.hook.events("config.applied"))
    fenced.hook.config_path.write_text(text)
    wait_for(lambda: len(fenced.hook.events("config.applied")) > applied, "config.applied log line")


# -- scan ------------------------------------------------------------------------------------


def scan(cluster: Cluster, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", "scan", "--kubeconfig", str(cluster.kubeconfig_path),
         "--config", str(config), *args],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def scan_json(cluster: Cluster, config: Path) -> dict[str, Any]:
    out = scan(cluster, config, "-o", "json")
    assert out.returncode in (0, 1), out.stderr
    report: dict[str, Any] = json.loads(out.stdout)
    assert (out.returncode == 1) == bool(report["wouldDeny"]), (out.returncode, out.stderr)
    return report


def fix_and_apply(cluster: Cluster, config: Path) -> subprocess.CompletedProcess[str]:
    """``kubefence scan --fix | kubectl apply -f -`` under pipefail, as the README says."""
    kubefence = shlex.join(
        [
            sys.executable,
            "-m",
            "webhook",
            "scan",
            "--kubeconfig",
            str(cluster.kubeconfig_path),
            "--config",
            str(config),
            "--fix",
        ]
    )
    kubectl = shlex.join([str(cluster.bin_dir / "kubectl"), "--kubeconfig",
                          str(cluster.kubeconfig_path), "apply", "-f", "-"])  # fmt: skip
    return subprocess.run(
        ["bash", "-c", f"set -o pipefail; {kubefence} | {kubectl}"],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


# -- ownership: every Pod, ReplicaSet and Job back to the workload a user wrote ----------------


class Owners:
    """The controller ownerReferences seen in our namespaces, every one ever read: a Pod scan
    listed may be gone (evicted, rolled) by the time its workload is compared."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.parent: dict[tuple[str, str, str], tuple[str, str, str]] = {}

    def refresh(self) -> None:
        for namespace in NAMESPACES:
            items = self.cluster.kubectl_json("get", "pods,replicasets,jobs", "-n", namespace)[
                "items"
            ]
            for item in items:
                for ref in item["metadata"].get("ownerReferences", []):
                    if ref.get("controller"):
                        key = (namespace, item["kind"], item["metadata"]["name"])
                        self.parent[key] = (namespace, ref["kind"], ref["name"])

    def root(self, namespace: str, kind: str, name: str) -> Workload:
        key = (namespace, kind, name)
        while key in self.parent:
            key = self.parent[key]
        return key


def would_deny(report: dict[str, Any], owners: Owners) -> set[Workload]:
    """The workloads of our namespaces whose re-creations the scan says enforce would deny."""
    out = set()
    for row in report["wouldDeny"]:
        if row["namespace"] in NAMESPACES:
            kind, name = row["object"].split(" ", 1)
            out.add(owners.root(row["namespace"], kind, name))
    return out


def events(cluster: Cluster, namespace: str, reason: str = "FailedCreate") -> list[dict[str, Any]]:
    out = cluster.kubectl_ok(
        "get", "events", "-n", namespace, "--field-selector", f"reason={reason}", "-o", "json"
    )
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def stopped(cluster: Cluster, owners: Owners) -> dict[Workload, list[str]]:
    """The workloads whose controllers' creations were denied (FailedCreate events), with the
    events' messages."""
    out: dict[Workload, list[str]] = {}
    for namespace in NAMESPACES:
        for event in events(cluster, namespace):
            involved = event["involvedObject"]
            workload = owners.root(namespace, involved["kind"], involved["name"])
            out.setdefault(workload, []).append(event["message"])
    return out


# -- what a user checks ------------------------------------------------------------------------


def pods(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.kubectl_json("get", "pods", "-n", namespace)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def running(cluster: Cluster, namespace: str, app: str) -> list[dict[str, Any]]:
    return [
        p
        for p in pods(cluster, namespace)
        if p["metadata"].get("labels", {}).get("app") == app
        and p["status"].get("phase") == "Running"
    ]


def ready(cluster: Cluster, namespace: str, kind: str, name: str, replicas: int) -> bool:
    status = cluster.kubectl_json("get", kind, name, "-n", namespace).get("status", {})
    if kind == "deployment":
        return bool(
            status.get("updatedReplicas") == replicas
            and status.get("availableReplicas") == replicas
            and status.get("replicas") == replicas
        )
    return bool(status.get("readyReplicas") == replicas and status.get("replicas") == replicas)


def wait_ready(cluster: Cluster, namespace: str, kind: str, name: str, replicas: int) -> None:
    wait_for(
        lambda: ready(cluster, namespace, kind, name, replicas),
        f"{kind} {namespace}/{name} with {replicas} replicas ready",
        timeout=300,
    )


def wait_daemonset(cluster: Cluster, namespace: str) -> None:
    wait_for(
        lambda: len(running(cluster, namespace, DAEMONSET)) == len(cluster.node_names),
        f"{namespace}/{DAEMONSET} Running on every Node",
        timeout=300,
    )


def wait_job_pod(cluster: Cluster, namespace: str, job: str) -> None:
    wait_for(
        lambda: any(
            p["metadata"].get("labels", {}).get("job-name") == job for p in pods(cluster, namespace)
        ),
        f"{namespace}: the Pod of Job {job}",
        timeout=300,
    )


def wait_stopped(
    cluster: Cluster, owners: Owners, listed: set[Workload]
) -> dict[Workload, list[str]]:
    """The FailedCreate events, once every workload of ``listed`` has one."""

    def read() -> dict[Workload, list[str]]:
        found = stopped(cluster, owners)
        return found if set(found) >= listed else {}

    found: dict[Workload, list[str]] = wait_for(
        read, f"FailedCreate events for every workload in {sorted(listed)}", timeout=180
    )
    return found


def passing(namespace: str, deployment: str = "") -> bool:
    """Whether enforce lets this workload's re-creations through (what scan must agree with)."""
    return namespace != OPEN and deployment != ESCAPE


def test_rollout_warn_scan_fix_enforce_then_a_day(fenced_cluster: FencedCluster) -> None:
    c = fenced_cluster.cluster
    config_path = fenced_cluster.hook.config_path
    enforce_config = config_path.read_text()
    owners = Owners(c)
    t_test = time.monotonic()
    drained = c.node_names[0]
    try:
        # 1. warn: the chart's `mode: warn`, re-read by the running kubefence.
        apply_config(fenced_cluster, with_modes(enforce_config, chart_modes("warn")))

        # Workloads as they were before kubefence: created with warnings, nothing denied.
        warnings: dict[str, str] = {}
        for namespace in NAMESPACES:
            c.kubectl_ok("create", "namespace", namespace)
            if namespace != LEGACY:
                c.kubectl_ok("apply", "-n", namespace, "-f", "-", stdin=json.dumps(DEFAULT_DENY))
            if namespace == OPEN:
                out = c.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(ALLOW_ALL))
                assert out.returncode == 0, out.stderr
                warnings["allow-all"] = out.stderr
            out = c.kubectl(
                "apply", "-n", namespace, "-f", "-", stdin=as_list(workload_manifests(namespace))
            )
            assert out.returncode == 0, out.stderr
            warnings[namespace] = out.stderr
        assert "Warning:" in warnings["allow-all"], warnings
        assert "Warning:" in warnings[LEGACY], warnings
        assert "has no default-deny NetworkPolicy" in warnings[LEGACY], warnings
        assert "Warning:" in warnings[FENCED], warnings
        assert "/var/lib/kubelet" in warnings[FENCED], warnings
        for namespace in NAMESPACES:
            for name in [*DEPLOYMENTS, *([ESCAPE] if namespace == FENCED else [])]:
                wait_ready(c, namespace, "deployment", name, 2)
            wait_ready(c, namespace, "statefulset", STATEFULSET, 2)
            wait_daemonset(c, namespace)
        assert not any(events(c, ns) for ns in NAMESPACES), "warn denied a creation"

        # 2. scan: the unfenced namespace, the neutralised one, and the host escape.
        owners.refresh()
        first = would_deny(scan_json(c, config_path), owners)
        assert {w[0] for w in first} == set(NAMESPACES), first
        assert (FENCED, "Deployment", ESCAPE) in first, first
        assert {w for w in first if w[0] == FENCED} == {(FENCED, "Deployment", ESCAPE)}, first

        # 3. fix, under pipefail; the neutralising policy has no fix, and says so.
        fixed = fix_and_apply(c, config_path)
        assert fixed.returncode == 0, fixed.stderr
        assert "created" in fixed.stdout, fixed.stdout
        assert "--fix leaves" in fixed.stderr, fixed.stderr

        # The gate, as read just before enforce: what it lists is what enforce must stop.
        owners.refresh()
        gate = would_deny(scan_json(c, config_path), owners)
        expected = {w for w in first if not passing(w[0], w[2])}
        assert gate == expected, (gate, expected)

        # 4. enforce: the config as the fixture serves it (every mode at its default, enforce).
        apply_config(fenced_cluster, enforce_config)
        # kubefence's informer has seen the fix once LEGACY admits a Pod (a dry run).
        wait_for(
            lambda: (
                c.kubectl(
                    "run", "probe", "-n", LEGACY, f"--image={IMAGE}", "--dry-run=server"
                ).returncode
                == 0
            ),
            "the fix seen by kubefence",
        )

        # 5. The day. A rolling update of every Deployment.
        t0 = time.monotonic()
        all_deployments = [
            (ns, d)
            for ns in NAMESPACES
            for d in [*DEPLOYMENTS, *([ESCAPE] if ns == FENCED else [])]
        ]
        restart_refused: dict[tuple[str, str], str] = {}
        for namespace, name in all_deployments:
            out = c.kubectl("rollout", "restart", f"deployment/{name}", "-n", namespace)
            if out.returncode != 0:
                restart_refused[(namespace, name)] = out.stderr
        for namespace, name in all_deployments:
            if passing(namespace, name):
                c.kubectl_ok(
                    "rollout", "status", f"deployment/{name}", "-n", namespace, "--timeout=300s"
                )
        rollout_seconds = time.monotonic() - t0
        rolled = sum(1 for ns, d in all_deployments if passing(ns, d))

        # Scale up and down.
        for namespace, name in all_deployments:
            c.kubectl_ok("scale", f"deployment/{name}", "-n", namespace, "--replicas=3")
        for namespace, name in all_deployments:
            if passing(namespace, name):
                wait_ready(c, namespace, "deployment", name, 3)
        for namespace, name in all_deployments:
            c.kubectl_ok("scale", f"deployment/{name}", "-n", namespace, "--replicas=2")

        # A node drain: the evicted Pods are re-created elsewhere where scan passed.
        for namespace, name in all_deployments:
            if passing(namespace, name):
                wait_ready(c, namespace, "deployment", name, 2)
        evicted = [
            (ns, p["metadata"]["name"])
            for ns in NAMESPACES
            for p in pods(c, ns)
            if p["spec"].get("nodeName") == drained
            and p["metadata"].get("labels", {}).get("app") != DAEMONSET
        ]
        assert evicted, f"none of our Pods ran on {drained}"
        t0 = time.monotonic()
        c.kubectl_ok(
            "drain", drained, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=300s"
        )
        drain_seconds = time.monotonic() - t0
        for namespace in (FENCED, LEGACY):
            for name in DEPLOYMENTS:
                wait_ready(c, namespace, "deployment", name, 2)
                nodes = {p["spec"]["nodeName"] for p in running(c, namespace, name)}
                assert drained not in nodes, (namespace, name, nodes)
            wait_ready(c, namespace, "statefulset", STATEFULSET, 2)
        t_drain_done = time.monotonic()
        c.kubectl_ok("uncordon", drained)

        # A Job from the CronJob, by hand: the admin's own request is judged like the
        # controller's; its Pod is the job controller's.
        jobs_refused: dict[str, str] = {}
        for namespace in NAMESPACES:
            out = c.kubectl("create", "job", f"--from=cronjob/{CRONJOB}", "manual", "-n", namespace)
            if out.returncode != 0:
                jobs_refused[namespace] = out.stderr
        for namespace in (FENCED, LEGACY):
            wait_job_pod(c, namespace, "manual")

        # A StatefulSet Pod and a DaemonSet Pod deleted: re-created where scan passed.
        # (OPEN's StatefulSet may have none left: the drain's eviction was not re-created.)
        for namespace in NAMESPACES:
            victims = [*running(c, namespace, STATEFULSET)[:1], running(c, namespace, DAEMONSET)[0]]
            for pod in victims:
                c.kubectl_ok("delete", "pod", pod["metadata"]["name"], "-n", namespace)
        for namespace in (FENCED, LEGACY):
            wait_ready(c, namespace, "statefulset", STATEFULSET, 2)
            wait_daemonset(c, namespace)

        # What enforce stopped: the controllers' creations denied (FailedCreate events naming
        # the fix), and the CronJob's manual Job (no controller runs a CronJob never due). The
        # admin's own writes were refused only there, with the same fix.
        owners.refresh()
        refused = {(ns, "Deployment", d): m for (ns, d), m in restart_refused.items()}
        refused |= {(ns, "CronJob", CRONJOB): m for ns, m in jobs_refused.items()}
        assert set(refused) <= gate, set(refused) - gate
        cronjobs = {w for w in gate if w[1] == "CronJob"}
        denied = wait_stopped(c, owners, gate - cronjobs)
        for workload, messages in [*denied.items(), *((w, [m]) for w, m in refused.items())]:
            for message in messages:
                assert "denied the request" in message, (workload, message)
                if workload[0] == OPEN:
                    assert "neutralised by NetworkPolicy allow-all" in message, message
                    assert "narrow or delete it" in message, message
                else:
                    assert 'spec.volumes[0].hostPath.path "/var/lib/kubelet"' in message, message
        enforce_stopped = set(denied) | {w for w in refused if w[1] == "CronJob"}
        assert enforce_stopped == gate, enforce_stopped ^ gate

        # The decision log agrees: controllers were denied only in what scan listed.
        controller_denials = {
            (d["namespace"], d["user"].removeprefix(CONTROLLER_USER))
            for d in fenced_cluster.hook.decisions()
            if d["decision"] == "deny"
            and d["namespace"] in NAMESPACES
            and d["user"].startswith(CONTROLLER_USER)
        }
        assert {ns for ns, _ in controller_denials} == {w[0] for w in gate}, controller_denials
        assert not any(ns == LEGACY for ns, _ in controller_denials), controller_denials

        print(
            f"\nrollout: {rolled} Deployments x 2 replicas restarted and rolled out in"
            f" {rollout_seconds:.1f}s; drain of {drained} ({len(evicted)} Pods evicted) {drain_seconds:.1f}s"
            f" (re-created and ready {t_drain_done - t0:.1f}s after it began);"
            f" test {time.monotonic() - t_test:.1f}s",
            file=sys.stderr,
        )
    finally:
        c.kubectl("uncordon", drained)
        if config_path.read_text() != enforce_config:
            apply_config(fenced_cluster, enforce_config)
        # Gone before the next test: none of ours is left Terminating.
        c.kubectl("delete", "namespace", *NAMESPACES, "--timeout=180s", timeout=200)
