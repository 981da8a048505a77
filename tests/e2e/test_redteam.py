"""The fence under attack, through the real API server: races on the guard, other verbs, teardown.

Every attack ends with the same check a defender cares about: the namespace is still fenced.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from controlplane import ControlPlane
from kubefence_process import AUDIT_POLICY, RunningWebhook, denial, kubectl, marker_pod
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from test_webhook import deny_all, new_namespace

FENCES = ("a-first", "b-second", "c-third")  # created in this order; names break same-second ties


def fenced_namespace(kube: client.ApiClient, running_pod: bool = True) -> str:
    namespace = new_namespace(kube, "redteam")
    net = client.NetworkingV1Api(kube)
    for name in FENCES:
        net.create_namespaced_network_policy(namespace, deny_all(namespace, name))
    if running_pod:
        core = client.CoreV1Api(kube)
        core.create_namespaced_pod(namespace, marker_pod("app"))
        pod = core.read_namespaced_pod("app", namespace)
        pod.status.phase = "Running"  # no kubelet here: report the Pod running by hand
        core.replace_namespaced_pod_status("app", namespace, pod)
    return namespace


def remaining(kube: client.ApiClient, namespace: str) -> list[str]:
    items = client.NetworkingV1Api(kube).list_namespaced_network_policy(namespace).items
    return sorted(p.metadata.name for p in items)


def try_delete(kube: client.ApiClient, namespace: str, name: str, out: dict[str, Any]) -> None:
    try:
        client.NetworkingV1Api(kube).delete_namespaced_network_policy(name, namespace)
        out[name] = "deleted"
    except ApiException as exc:
        out[name] = denial(exc)


def delete_concurrently(kube: client.ApiClient, namespace: str) -> dict[str, Any]:
    """Delete every fence at once, one thread each; the outcome per policy."""
    results: dict[str, Any] = {}
    threads = [
        threading.Thread(target=try_delete, args=(kube, namespace, n, results))
        for n in reversed(FENCES)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_deletes_leave_the_oldest_fence(
    kube: client.ApiClient, webhook: RunningWebhook, round_: int
) -> None:
    namespace = fenced_namespace(kube)
    results = delete_concurrently(kube, namespace)
    assert remaining(kube, namespace) == ["a-first"]
    assert results["b-second"] == results["c-third"] == "deleted"
    assert 'deleting NetworkPolicy "a-first" would leave namespace' in results["a-first"]
    assert "it is the oldest policy fencing them" in results["a-first"]


def test_kubectl_delete_all_back_to_back(
    control_plane: ControlPlane, kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    namespace = fenced_namespace(kube)
    result = kubectl(
        control_plane.kubeconfig_path, "delete", "networkpolicy", "--all", "-n", namespace
    )
    assert result.returncode != 0
    assert 'NetworkPolicy "a-first" would leave namespace' in result.stderr
    assert remaining(kube, namespace) == ["a-first"]


def test_a_real_deletecollection_leaves_the_oldest_fence(
    kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    namespace = fenced_namespace(kube)
    with pytest.raises(ApiException) as caught:
        client.NetworkingV1Api(kube).delete_collection_namespaced_network_policy(namespace)
    assert caught.value.status == 403
    # The API server stops a deletecollection at the first refused item; the others may or may not
    # be gone by then. The oldest fence is never one of them.
    assert "a-first" in remaining(kube, namespace)
    decided = [
        d for d in webhook.decisions() if d["namespace"] == namespace and d["operation"] == "DELETE"
    ]
    assert decided, "deletecollection items reach the webhook"
    assert all(d["name"] in FENCES for d in decided)


def test_teardown_without_running_pods_may_remove_every_fence(
    kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    namespace = fenced_namespace(kube, running_pod=False)
    net = client.NetworkingV1Api(kube)
    for name in reversed(FENCES):
        net.delete_namespaced_network_policy(name, namespace)
    assert remaining(kube, namespace) == []


def test_a_patch_that_drops_egress_is_an_update_and_is_denied(
    kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    namespace = fenced_namespace(kube)
    net = client.NetworkingV1Api(kube)
    for name in ("c-third", "b-second"):
        net.delete_namespaced_network_policy(name, namespace)
    with pytest.raises(ApiException) as caught:
        net.patch_namespaced_network_policy(
            "a-first", namespace, {"spec": {"policyTypes": ["Ingress"]}}
        )
    assert "this update of NetworkPolicy" in denial(caught.value)
    assert "unfenced for Egress" in denial(caught.value)


def test_two_halves_of_the_address_space_cannot_open_the_fence(
    kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    namespace = fenced_namespace(kube)
    net = client.NetworkingV1Api(kube)

    def half(name: str, cidr: str) -> dict[str, Any]:
        body = deny_all(namespace, name)
        body["spec"] = {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": cidr}}]}],
        }
        return body

    net.create_namespaced_network_policy(namespace, half("egress-low", "0.0.0.0/1"))
    with pytest.raises(ApiException) as caught:
        net.create_namespaced_network_policy(namespace, half("egress-high", "128.0.0.0/1"))
    assert "would neutralise the default-deny" in denial(caught.value)


def test_two_halves_created_at_the_same_moment_cannot_both_pass(
    kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    namespace = fenced_namespace(kube)
    results: dict[str, Any] = {}

    def create(name: str, cidr: str) -> None:
        body = deny_all(namespace, name)
        body["spec"] = {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"ipBlock": {"cidr": cidr}}]}],
        }
        try:
            client.NetworkingV1Api(kube).create_namespaced_network_policy(namespace, body)
            results[name] = "created"
        except ApiException as exc:
            results[name] = denial(exc)

    threads = [
        threading.Thread(target=create, args=("low", "0.0.0.0/1")),
        threading.Thread(target=create, args=("high", "128.0.0.0/1")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Each half alone is fine; the one decided second is judged with the first just let in.
    assert sorted(v == "created" for v in results.values()) == [False, True], results


def test_a_dry_run_delete_is_no_licence_for_the_real_one(
    kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    # Teardown: no running Pods, so the oldest fence may go; a server-side dry run says so. A Pod
    # created right after must keep the real delete from passing on that remembered read.
    namespace = fenced_namespace(kube, running_pod=False)
    net = client.NetworkingV1Api(kube)
    for name in ("c-third", "b-second"):
        net.delete_namespaced_network_policy(name, namespace)
    net.delete_namespaced_network_policy("a-first", namespace, dry_run="All")
    client.CoreV1Api(kube).create_namespaced_pod(namespace, marker_pod("late"))  # still fenced
    with pytest.raises(ApiException) as caught:
        net.delete_namespaced_network_policy("a-first", namespace)
    assert "would leave namespace" in denial(caught.value)
    assert remaining(kube, namespace) == ["a-first"]


def test_host_network_pod_is_denied_in_a_fenced_namespace(
    kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    namespace = fenced_namespace(kube)
    pod = marker_pod("hostnet")
    pod["spec"]["hostNetwork"] = True
    with pytest.raises(ApiException) as caught:
        client.CoreV1Api(kube).create_namespaced_pod(namespace, pod)
    assert "uses hostNetwork" in denial(caught.value)


def onto_node(host_path: str = "", **fields: Any) -> dict[str, Any]:
    """A Pod whose one container has `fields`, with a hostPath volume at `host_path` if given."""
    pod = marker_pod("onto-node")
    pod["spec"]["containers"][0].update(fields)
    if host_path:
        pod["spec"]["volumes"] = [{"name": "host", "hostPath": {"path": host_path}}]
    return pod


READ_ONLY = [{"name": "host", "mountPath": "/host", "readOnly": True}]


@pytest.mark.parametrize(
    ("pod", "said"),
    [
        pytest.param(
            onto_node(securityContext={"privileged": True}),
            "sets spec.containers[0].securityContext.privileged: a privileged container has the "
            "node's devices",
            id="privileged without hostPID",
        ),
        pytest.param(
            onto_node(
                "/var/run/docker/netns", securityContext={"capabilities": {"add": ["SYS_ADMIN"]}}
            ),
            'spec.volumes[0].hostPath.path "/var/run/docker/netns" (reaches /var/run/docker)',
            id="SYS_ADMIN with the node's namespace files",
        ),
        pytest.param(
            onto_node("/etc/kubernetes/manifests", volumeMounts=READ_ONLY),
            'spec.volumes[0].hostPath.path "/etc/kubernetes/manifests" (reaches /etc/kubernetes)',
            id="static Pod manifests, read-only",
        ),
        pytest.param(
            onto_node("/var/lib/kubelet", volumeMounts=READ_ONLY),
            'spec.volumes[0].hostPath.path "/var/lib/kubelet" (reaches /var/lib/kubelet)',
            id="every Pod's tokens, read-only",
        ),
        pytest.param(
            onto_node("/opt/cni/bin"),
            'spec.volumes[0].hostPath.path "/opt/cni/bin" (reaches /opt/cni/bin)',
            id="the network plugin's binaries",
        ),
        pytest.param(
            onto_node(livenessProbe={"httpGet": {"port": 80, "host": "169.254.169.254"}}),
            'sets spec.containers[0].livenessProbe.httpGet.host "169.254.169.254": the kubelet',
            id="liveness probe host",
        ),
        pytest.param(
            onto_node(readinessProbe={"tcpSocket": {"port": 6443, "host": "10.0.0.1"}}),
            'sets spec.containers[0].readinessProbe.tcpSocket.host "10.0.0.1": the kubelet',
            id="readiness tcpSocket host",
        ),
        pytest.param(
            onto_node(lifecycle={"postStart": {"httpGet": {"port": 80, "host": "10.0.0.1"}}}),
            'sets spec.containers[0].lifecycle.postStart.httpGet.host "10.0.0.1": the kubelet',
            id="postStart host",
        ),
        pytest.param(
            onto_node(securityContext={"capabilities": {"add": ["SYS_MODULE"]}}),
            "spec.containers[0].securityContext.capabilities.add[0] (SYS_MODULE): load a kernel",
            id="SYS_MODULE",
        ),
    ],
)
def test_the_ways_onto_the_node_from_pod_security_baseline_are_denied(
    kube: client.ApiClient, webhook: RunningWebhook, pod: dict[str, Any], said: str
) -> None:
    """Each passed the API server (privileged allowed, no PodSecurity label) and the old webhook."""
    namespace = fenced_namespace(kube, running_pod=False)
    with pytest.raises(ApiException) as caught:
        client.CoreV1Api(kube).create_namespaced_pod(namespace, pod, dry_run="All")
    assert caught.value.status == 403
    assert said in denial(caught.value)


def test_what_stays_in_the_pods_own_namespaces_is_admitted(
    kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    namespace = fenced_namespace(kube, running_pod=False)
    core = client.CoreV1Api(kube)
    mesh = marker_pod("mesh")
    mesh["spec"]["initContainers"] = [
        {
            "name": "init",
            "image": "registry.example/init:1",
            "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}},
        }
    ]
    core.create_namespaced_pod(namespace, mesh, dry_run="All")
    # Another hostPath is warned, not denied (hostNetwork.otherHostPaths).
    logs = marker_pod("logs")
    logs["spec"]["volumes"] = [{"name": "l", "hostPath": {"path": "/var/log"}}]
    core.create_namespaced_pod(namespace, logs, dry_run="All")


def test_server_side_apply_is_decided_like_a_create(
    control_plane: ControlPlane, kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    namespace = new_namespace(kube, "ssa")
    manifest = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {namespace}}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: web, image: registry.example/web:1}}]}}
"""
    result = kubectl(
        control_plane.kubeconfig_path, "apply", "--server-side", "-f", "-", stdin=manifest
    )
    assert result.returncode != 0
    assert "is not fenced" in result.stderr


def test_concurrent_deletes_against_two_workers(
    control_plane: ControlPlane, kube: client.ApiClient, webhook: RunningWebhook, tmp_path: Path
) -> None:
    """Two processes deciding at once (each with its own cache) still leave the oldest fence."""
    workers = RunningWebhook.start(
        tmp_path, control_plane.kubeconfig_path, AUDIT_POLICY, extra_args=("--workers", "2")
    )
    try:
        workers.register(kube)
        for _ in range(3):
            namespace = fenced_namespace(kube)
            results = delete_concurrently(kube, namespace)
            assert remaining(kube, namespace) == ["a-first"], results
        assert workers.decisions(), "the two-worker process decided the deletes"
    finally:
        webhook.register(kube)  # back to the suite's webhook
        workers.stop()
