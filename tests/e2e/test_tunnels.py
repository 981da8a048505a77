"""The ways around the fence that are not NetworkPolicy shapes, through the real API server.

`kubectl debug` (a PATCH of pods/NAME/ephemeralcontainers), the pod, service and node proxies
(CONNECT, admitted before the API server dials anything: without a kubelet the denial is still
what the client sees) and the pod specs that reach the node's network without hostNetwork. The
audit policy (audit-policy.yaml) leaves the tunnels of `tunnel-blind`, the OPTIONS verb of
`options-blind` and the node `blind-node` unrecorded.
"""

from __future__ import annotations

import contextlib
import ssl
import time
import urllib.error
import urllib.request
from typing import Any

import orjson
import pytest
from controlplane import ControlPlane
from kubefence_process import WEBHOOK_NAME, RunningWebhook, denial, kubectl, marker_pod
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from test_webhook import fence, new_namespace

DENIED = f'admission webhook "{WEBHOOK_NAME}" denied the request'


def fixed_namespace(kube: client.ApiClient, name: str) -> str:
    """A fenced namespace of the audit policy's own name (kept from an earlier run)."""
    with contextlib.suppress(ApiException):  # 409: made by an earlier run
        client.CoreV1Api(kube).create_namespace({"metadata": {"name": name}})
    with contextlib.suppress(ApiException):
        fence(kube, name)
    return name


def pod_in(kube: client.ApiClient, namespace: str, name: str, **spec: Any) -> None:
    """Create a Pod (retrying while the webhook's view catches up with the new fence)."""
    body = marker_pod(name)
    body["spec"].update(spec)
    core = client.CoreV1Api(kube)
    with contextlib.suppress(ApiException):
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    deadline = time.monotonic() + 10
    while True:
        try:
            core.create_namespaced_pod(namespace, body)
            return
        except ApiException as exc:
            # 409: the Pod of an earlier run is still going; "not fenced": the view is catching up
            retry = exc.status == 409 or "is not fenced" in denial(exc)
            if not retry or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def raw(control_plane: ControlPlane, method: str, path: str) -> tuple[int, str]:
    """One request as a client sends it; the status and the Status message (or the body)."""
    context = ssl.create_default_context(cafile=str(control_plane.ca_path))
    request = urllib.request.Request(
        f"{control_plane.server_url}{path}",
        method=method,
        headers={"Authorization": f"Bearer {control_plane.token}"},
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=20) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, str(orjson.loads(body).get("message", ""))
        except (orjson.JSONDecodeError, AttributeError):
            return exc.code, body.decode(errors="replace")


# --- ephemeral containers ---------------------------------------------------------------------


def debug(control_plane: ControlPlane, namespace: str, pod: str, *extra: str) -> Any:
    return kubectl(
        control_plane.kubeconfig_path,
        "debug", pod, "-n", namespace,
        "--image=registry.example/debug:1", "-c", "debugger", "--attach=false", *extra,
    )  # fmt: skip


def test_kubectl_debug_outside_the_audited_scope_is_denied(
    control_plane: ControlPlane, kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    namespace = fixed_namespace(kube, "tunnel-blind")
    pod_in(kube, namespace, "app")  # its Pods are recorded: the create is in scope
    result = debug(control_plane, namespace, "app")
    assert result.returncode != 0
    assert DENIED in result.stderr
    assert (
        f'UPDATE of pods/ephemeralcontainers in namespace "{namespace}" by "kubefence-admin" '
        "is outside the audited scope"
    ) in result.stderr
    assert "`kubectl debug` sends patch" in result.stderr
    pod = client.CoreV1Api(kube).read_namespaced_pod("app", namespace)
    assert not pod.spec.ephemeral_containers


def test_kubectl_debug_in_a_fenced_audited_namespace_is_admitted_without_a_kubelet(
    control_plane: ControlPlane, kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    namespace = new_namespace(kube, "debug")
    fence(kube, namespace)
    pod_in(kube, namespace, "app")
    result = debug(control_plane, namespace, "app")
    assert result.returncode == 0, result.stderr
    pod = client.CoreV1Api(kube).read_namespaced_pod("app", namespace)
    assert [c.name for c in pod.spec.ephemeral_containers] == ["debugger"]
    decided = [
        d
        for d in webhook.decisions()
        if d["namespace"] == namespace and d["subresource"] == "ephemeralcontainers"
    ]
    assert [d["decision"] for d in decided] == ["allow"]
    assert decided[0]["operation"] == "UPDATE"


def test_a_privileged_debug_container_in_a_host_pid_pod_is_denied(
    control_plane: ControlPlane, kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    namespace = new_namespace(kube, "debug-pid")
    fence(kube, namespace)
    pod_in(kube, namespace, "app", hostPID=True)  # hostPID alone does not reach the network
    result = debug(control_plane, namespace, "app", "--profile=sysadmin")
    assert result.returncode != 0
    assert (
        "sets spec.hostPID with spec.ephemeralContainers[0].securityContext.privileged"
        in result.stderr
    )


# --- the node's network without hostNetwork ---------------------------------------------------


def test_a_privileged_host_pid_pod_is_denied_naming_the_fields(
    kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    namespace = new_namespace(kube, "hostpid")
    fence(kube, namespace)
    body = marker_pod("nsenter")
    body["spec"]["hostPID"] = True
    body["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    with pytest.raises(ApiException) as caught:
        client.CoreV1Api(kube).create_namespaced_pod(namespace, body)
    assert caught.value.status == 403
    message = denial(caught.value)
    assert DENIED in message
    assert "sets spec.hostPID with spec.containers[0].securityContext.privileged" in message
    assert "nsenter -t 1 -n" in message


def host_path_pod(path: str) -> dict[str, Any]:
    body = marker_pod("hostpath")
    body["spec"]["volumes"] = [{"name": "host", "hostPath": {"path": path}}]
    return body


def test_host_paths_that_reach_the_node_are_denied(
    kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    namespace = new_namespace(kube, "hostpath")
    fence(kube, namespace)
    core = client.CoreV1Api(kube)
    # The API server's own validation refuses "..", before any validating webhook is called.
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_pod(namespace, host_path_pod("/var/run/netns/../netns"))
    assert caught.value.status == 422
    assert "must not contain '..'" in denial(caught.value)
    for path, reaches in (
        ("//var/run//netns/", "/var/run/netns"),
        ("/var/run/./netns", "/var/run/netns"),
        ("/var", "/var/run/netns"),
        ("/proc/1/ns", "/proc"),
        ("/run/containerd/containerd.sock", "/run/containerd"),
        ("/etc/kubernetes/manifests", "/etc/kubernetes"),
        ("/var/lib/kubelet", "/var/lib/kubelet"),
    ):
        with pytest.raises(ApiException) as caught:
            core.create_namespaced_pod(namespace, host_path_pod(path), dry_run="All")
        assert caught.value.status == 403, path
        assert f'spec.volumes[0].hostPath.path "{path}" (reaches {reaches})' in denial(caught.value)
    core.create_namespaced_pod(namespace, host_path_pod("/var/log"), dry_run="All")


# --- the API server's proxies -------------------------------------------------------------------


def test_a_pod_proxy_outside_the_audited_scope_is_denied_before_anything_is_dialled(
    control_plane: ControlPlane, kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    blind = fixed_namespace(kube, "tunnel-blind")
    pod_in(kube, blind, "web")
    status, message = raw(control_plane, "GET", f"/api/v1/namespaces/{blind}/pods/web/proxy/")
    assert status == 403, message
    assert DENIED in message
    assert f'CONNECT of pods/proxy in namespace "{blind}"' in message
    assert "is outside the audited scope" in message
    status, message = raw(
        control_plane, "GET", f"/api/v1/namespaces/{blind}/services/http:web:80/proxy/metrics"
    )
    assert status == 403, message
    assert "CONNECT of services/proxy" in message
    assert 'as the URL writes it, "http:web:80"' in message
    # In an audited namespace kubefence allows it, and the API server then finds no Pod IP to
    # dial: its own error, after admission.
    audited = new_namespace(kube, "proxy")
    fence(kube, audited)
    pod_in(kube, audited, "web")
    status, message = raw(control_plane, "GET", f"/api/v1/namespaces/{audited}/pods/web/proxy/")
    assert (status, message) == (400, "address not allowed")


def test_an_options_proxy_is_recorded_with_the_empty_verb_and_judged_so(
    control_plane: ControlPlane, kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    # options-blind records every named verb, and not "": the verb of an OPTIONS request. The
    # review of a CONNECT does not carry the HTTP method, so every proxy there is denied.
    namespace = fixed_namespace(kube, "options-blind")
    pod_in(kube, namespace, "web")
    for method in ("OPTIONS", "GET"):
        status, message = raw(
            control_plane, method, f"/api/v1/namespaces/{namespace}/pods/web/proxy/"
        )
        assert status == 403, (method, message)
        assert 'would not record "" (OPTIONS) at Metadata' in message
    # Where it is recorded, the API server's audit event of an OPTIONS proxy has verb "".
    audited = new_namespace(kube, "options")
    fence(kube, audited)
    pod_in(kube, audited, "web")
    path = f"/api/v1/namespaces/{audited}/pods/web/proxy/"
    status, message = raw(control_plane, "OPTIONS", path)
    assert (status, message) == (400, "address not allowed")  # admitted, then no Pod IP
    events = [
        e
        for e in control_plane.audit_events()
        if e.get("requestURI") == path and e.get("stage") == "ResponseComplete"
    ]
    assert [e.get("verb") for e in events] == [""]
    assert events[0]["annotations"][f"{WEBHOOK_NAME}/decision"] == "allow"


def test_a_nodes_proxy_outside_the_audited_scope_is_denied(
    control_plane: ControlPlane, kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    status, message = raw(control_plane, "GET", "/api/v1/nodes/blind-node/proxy/pods")
    assert status == 403, message
    assert 'CONNECT of nodes/proxy to "blind-node" by "kubefence-admin"' in message
    # The audit policy's resourceNames sees the URL segment: with a port it is another name,
    # recorded by the catch-all rule, and kubefence lets it on to the API server (no such node).
    status, message = raw(control_plane, "GET", "/api/v1/nodes/blind-node:10250/proxy/pods")
    assert (status, message) == (404, 'nodes "blind-node" not found')
