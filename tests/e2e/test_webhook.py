"""kubefence registered with the real kube-apiserver: every request goes through its admission chain.

Denials are read as a user sees them (the API server's error), and each decision is found again in
the API server's real audit log through the annotations kubefence returned.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from controlplane import ControlPlane, free_port
from kubefence_process import (
    WEBHOOK_NAME,
    RunningWebhook,
    denial,
    kubectl,
    marker_pod,
    webhook_configuration,
)
from kubernetes import client
from kubernetes.client.exceptions import ApiException

_names = itertools.count()


def new_namespace(
    kube: client.ApiClient, prefix: str = "e2e", labels: dict[str, str] | None = None
) -> str:
    name = f"{prefix}-{time.time_ns() % 10**8}-{next(_names)}"
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": name, "labels": labels or {}}})
    return name


def deny_all(namespace: str, name: str = "default-deny") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }


def fence(kube: client.ApiClient, namespace: str, name: str = "default-deny") -> None:
    client.NetworkingV1Api(kube).create_namespaced_network_policy(
        namespace, deny_all(namespace, name)
    )


def deployment(name: str = "web") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "registry.example/web:1"}]},
            },
        },
    }


def create_deployment(kube: client.ApiClient, namespace: str, dry_run: str | None = None) -> Any:
    kwargs = {"dry_run": dry_run} if dry_run else {}
    return client.AppsV1Api(kube).create_namespaced_deployment(namespace, deployment(), **kwargs)


@pytest.fixture
def ns(kube: client.ApiClient, webhook: RunningWebhook) -> str:
    return new_namespace(kube)


def test_workloads_are_denied_in_a_namespace_without_default_deny(
    kube: client.ApiClient, ns: str
) -> None:
    with pytest.raises(ApiException) as caught:
        create_deployment(kube, ns)
    assert caught.value.status == 403
    message = denial(caught.value)
    assert f'admission webhook "{WEBHOOK_NAME}" denied the request' in message
    assert f'namespace "{ns}" is not fenced for Ingress and Egress' in message
    assert "podSelector: {}" in message
    with pytest.raises(ApiException) as caught:
        client.CoreV1Api(kube).create_namespaced_pod(ns, marker_pod())
    assert caught.value.status == 403


def test_dry_run_server_is_decided_the_same(kube: client.ApiClient, ns: str) -> None:
    with pytest.raises(ApiException) as caught:
        create_deployment(kube, ns, dry_run="All")
    assert caught.value.status == 403
    fence(kube, ns)
    create_deployment(kube, ns, dry_run="All")


def test_fenced_namespace_accepts_workloads(kube: client.ApiClient, ns: str) -> None:
    fence(kube, ns)
    deadline = time.monotonic() + 5
    while True:  # the read-through makes this immediate; the loop only bounds a slow machine
        try:
            create_deployment(kube, ns)
            break
        except ApiException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_kubectl_apply_of_namespace_policy_and_deployment_in_one_go(
    control_plane: ControlPlane, webhook: RunningWebhook
) -> None:
    name = f"apply-{time.time_ns() % 10**8}"
    manifest = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {name}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: default-deny, namespace: {name}}}
spec: {{podSelector: {{}}, policyTypes: [Ingress, Egress]}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {name}}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: web, image: registry.example/web:1}}]}}
"""
    result = kubectl(control_plane.kubeconfig_path, "apply", "-f", "-", stdin=manifest)
    assert result.returncode == 0, result.stderr
    assert "deployment.apps/web created" in result.stdout


def test_deleting_the_last_default_deny_is_denied(kube: client.ApiClient, ns: str) -> None:
    fence(kube, ns)
    create_deployment(kube, ns)
    _running_pod(kube, ns)
    with pytest.raises(ApiException) as caught:
        client.NetworkingV1Api(kube).delete_namespaced_network_policy("default-deny", ns)
    assert caught.value.status == 403
    assert 'deleting NetworkPolicy "default-deny" would leave namespace' in denial(caught.value)


def _running_pod(kube: client.ApiClient, namespace: str) -> None:
    """A Pod the API server reports Running (no kubelet here: set its status by hand)."""
    core = client.CoreV1Api(kube)
    core.create_namespaced_pod(namespace, marker_pod("running"))
    pod = core.read_namespaced_pod("running", namespace)
    pod.status.phase = "Running"
    core.replace_namespaced_pod_status("running", namespace, pod)


def test_a_namespace_outside_the_audited_scope_is_denied(
    kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    for namespace, verb in (("unaudited", "create, patch"), ("patch-blind", "patch")):
        with contextlib.suppress(ApiException):  # 409: made by an earlier run of this test
            client.CoreV1Api(kube).create_namespace({"metadata": {"name": namespace}})
            fence(kube, namespace)
        deadline = time.monotonic() + 5
        while True:
            try:
                create_deployment(kube, namespace, dry_run="All")
            except ApiException as exc:
                message = denial(exc)
                if "audited scope" in message or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
                continue
            pytest.fail(f"a Deployment in {namespace} was allowed")
        assert "is outside the audited scope" in message
        assert f"record {verb} at Metadata" in message


def test_audit_log_and_decision_log_join_on_decision_id(
    control_plane: ControlPlane, kube: client.ApiClient, ns: str, webhook: RunningWebhook
) -> None:
    with pytest.raises(ApiException):
        create_deployment(kube, ns)
    fence(kube, ns)
    time.sleep(0.2)
    create_deployment(kube, ns, dry_run="All")
    decided = {d["decision_id"]: d for d in webhook.decisions() if d["namespace"] == ns}
    assert len(decided) >= 3  # the denial, the policy create, the dry-run create
    events = [
        e for e in control_plane.audit_events()
        if e.get("stage") == "ResponseComplete" and ns in (ref(e).get("namespace"), ref(e).get("name"))
    ]  # fmt: skip
    joined = {}
    for event in events:
        annotations = event.get("annotations") or {}
        decision_id = annotations.get(f"{WEBHOOK_NAME}/decision-id")
        if decision_id:
            joined[decision_id] = event
            assert annotations[f"{WEBHOOK_NAME}/decision"] in ("allow", "deny", "warn", "audit")
            assert f"{WEBHOOK_NAME}/policy-revision" in annotations
    missing = [decided[k] for k in set(decided) - set(joined)]
    assert not missing, f"decisions missing from the audit log: {missing}"
    deny = next(d for d in decided.values() if d["decision"] == "deny")
    event = joined[deny["decision_id"]]
    assert event["responseStatus"]["code"] == 403
    assert event["annotations"][f"{WEBHOOK_NAME}/rules"] == "default-deny"
    assert event["objectRef"]["resource"] == "deployments"


def ref(event: dict[str, Any]) -> dict[str, Any]:
    """The audit event's objectRef (a Namespace create has no namespace there, only its name)."""
    return event.get("objectRef") or {}


class _SilentServer:
    """Accepts TCP connections and never answers: a webhook that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def down_namespace(kube: client.ApiClient, webhook: RunningWebhook) -> Iterator[tuple[str, int]]:
    """A namespace whose webhook (failurePolicy Fail) is down; yields (namespace, silent port)."""
    name = new_namespace(kube, "down", {"kubefence-e2e": "down"})
    fence(kube, name)
    silent = _SilentServer()
    yield name, silent.port
    silent.close()
    with contextlib.suppress(ApiException):
        client.AdmissionregistrationV1Api(kube).delete_validating_webhook_configuration(
            "kubefence-down"
        )


def test_failure_policy_fail_rejects_workloads_while_the_webhook_is_down(
    kube: client.ApiClient,
    webhook: RunningWebhook,
    down_namespace: tuple[str, int],
    record_property: Any,
) -> None:
    namespace, silent_port = down_namespace
    api = client.AdmissionregistrationV1Api(kube)
    selector = {"matchLabels": {"kubefence-e2e": "down"}}
    closed_port = free_port()  # nothing listens there
    timings = {}
    for label, port, timeout in (("refused", closed_port, 10), ("hanging", silent_port, 2)):
        manifest = webhook_configuration(
            "kubefence-down",
            "down.kubefence.io",
            f"https://127.0.0.1:{port}/validate",
            webhook.ca_pem,
            timeout=timeout,
            namespace_selector=selector,
        )
        with contextlib.suppress(ApiException):
            api.delete_validating_webhook_configuration("kubefence-down")
        api.create_validating_webhook_configuration(manifest)
        deadline = time.monotonic() + 30
        while True:
            started = time.monotonic()
            try:
                client.CoreV1Api(kube).create_namespaced_pod(namespace, marker_pod(), dry_run="All")
            except ApiException as exc:
                elapsed = time.monotonic() - started
                if 'failed calling webhook "down.kubefence.io"' in denial(exc):
                    timings[label] = elapsed
                    break
            if time.monotonic() > deadline:
                pytest.fail("the API server never called the down webhook")
            time.sleep(0.1)
    record_property("failure_wait_seconds", timings)
    print(
        f"\nAPI server wait with the webhook down: refused {timings['refused']:.3f}s, hanging (timeoutSeconds 2) {timings['hanging']:.3f}s"
    )
    assert timings["hanging"] >= 1.9  # it waited the configured timeout, then failed closed


def test_api_server_view_of_our_latency(
    control_plane: ControlPlane,
    kube: client.ApiClient,
    webhook: RunningWebhook,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The API server's own apiserver_admission_webhook_admission_duration_seconds for kubefence,
    over 200 allowed Deployment creates (dry run) in a fenced namespace: the steady state."""
    namespace = new_namespace(kube, "latency")
    fence(kube, namespace)
    create_deployment(kube, namespace, dry_run="All")  # past the first, live-confirmed decision
    before = webhook_histogram(control_plane, WEBHOOK_NAME)
    for _ in range(200):
        create_deployment(kube, namespace, dry_run="All")
    after = webhook_histogram(control_plane, WEBHOOK_NAME)
    count = after["count"] - before["count"]
    assert count >= 200
    mean = (after["sum"] - before["sum"]) / count
    buckets = {le: after["buckets"][le] - before["buckets"].get(le, 0.0) for le in after["buckets"]}

    def bound(q: float) -> float:
        return next(le for le, n in sorted(buckets.items()) if n >= q * count)

    with capsys.disabled():
        print(
            f"\nkube-apiserver measured {WEBHOOK_NAME} over {count:.0f} calls: mean "
            f"{mean * 1000:.2f} ms, p50 <= {bound(0.5) * 1000:.1f} ms, p99 <= "
            f"{bound(0.99) * 1000:.1f} ms (bounds of the API server's histogram buckets)"
        )


def webhook_histogram(control_plane: ControlPlane, name: str) -> dict[str, Any]:
    """Buckets, sum and count of the API server's admission histogram for one webhook."""
    import ssl
    import urllib.request

    context = ssl.create_default_context(cafile=str(control_plane.ca_path))
    request = urllib.request.Request(
        f"{control_plane.server_url}/metrics",
        headers={"Authorization": f"Bearer {control_plane.token}"},
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as r:
        text = r.read().decode()
    buckets: dict[float, float] = {}
    total = count = 0.0
    metric = "apiserver_admission_webhook_admission_duration_seconds"
    for line in text.splitlines():
        if not line.startswith(metric) or f'name="{name}"' not in line:
            continue
        value = float(line.rsplit(" ", 1)[1])
        if line.startswith(f"{metric}_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            le = float("inf") if bound == "+Inf" else float(bound)
            buckets[le] = buckets.get(le, 0.0) + value
        elif line.startswith(f"{metric}_sum"):
            total += value
        elif line.startswith(f"{metric}_count"):
            count += value
    return {"buckets": buckets, "sum": total, "count": count}
