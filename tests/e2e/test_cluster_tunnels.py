"""The tunnels with the real kubectl, through kwok's kubelet API: `kubectl debug`, `exec`,
`port-forward` and `get --raw` through the node, pod and service proxies, in and out of the
audited scope.

kubefence enforces its audit-scope rule with the e2e audit Policy (tests/e2e/audit-policy.yaml),
the file the tier's API server records by: in `tunnels` every tunnel is recorded and works; in
`tunnel-blind` the Policy leaves ephemeral containers and the pod and service proxies unrecorded,
in `unaudited` everything, and the Node `blind-node`'s kubelet API: there kubectl prints
kubefence's denial. The Pods that kubefence would never admit (a hostNetwork Pod, the only one a
pod or service proxy reaches here; any Pod of `unaudited`) are created while it is unregistered.
Without a host address kwok serves no kubelet API and these tests skip (fail under
``KUBEFENCE_E2E=1`` if the host has one after all).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cluster import EXEC_COMMAND, LOG_LINE, Cluster, FencedCluster, find_host_address, wait_for
from controlplane import free_port
from kubefence_process import WEBHOOK_NAME
from test_cluster_namespace_deletion import POLICIES

pytestmark = pytest.mark.cluster

IMAGE = "registry.example/web:1"
DEBUG_IMAGE = "registry.example/debug:1"
DENIED = f'admission webhook "{WEBHOOK_NAME}" denied the request'
OUT_OF_SCOPE = "is outside the audited scope"
AUDITED = "tunnels"
BLIND = "tunnel-blind"  # the Policy: ephemeral containers, pods/proxy, services/proxy at None
UNAUDITED = "unaudited"  # the Policy: everything at None
GREETING = b"kubefence: bytes through the port-forward\n"
HOST_PAGE = b"kubefence: a hostNetwork Pod's page\n"


def require_tunnels(cluster: Cluster) -> None:
    """Skip without kwok's kubelet API; under KUBEFENCE_E2E=1 only if the host has no address."""
    if cluster.tunnels:
        return
    reason = "kwok serves no kubelet API: this host has no non-loopback IPv4 address"
    if os.environ.get("KUBEFENCE_E2E") == "1" and find_host_address() is not None:
        pytest.fail(f"tunnels off although the host has {find_host_address()}")
    pytest.skip(reason)


def fenced_namespace(cluster: Cluster, namespace: str) -> None:
    if cluster.kubectl("get", "namespace", namespace).returncode != 0:
        cluster.kubectl_ok("create", "namespace", namespace)
    cluster.kubectl_ok("apply", "-n", namespace, "-f", "-", stdin=POLICIES)


def running_pod(cluster: Cluster, namespace: str, name: str) -> None:
    """`kubectl run` (retried while kubefence's view catches up with the new fence), Ready."""

    def created() -> bool:
        out = cluster.kubectl("run", name, f"--image={IMAGE}", "-n", namespace)
        if out.returncode != 0:
            assert "is not fenced" in out.stderr or "AlreadyExists" in out.stderr, out.stderr
        return out.returncode == 0 or "AlreadyExists" in out.stderr

    wait_for(created, f"Pod {namespace}/{name} created")
    cluster.kubectl_ok(
        "wait", "--for=condition=Ready", f"pod/{name}", "-n", namespace, "--timeout=120s"
    )


def host_network_pod(name: str, port: int) -> str:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "hostNetwork": True,
            "containers": [{"name": "web", "image": IMAGE, "ports": [{"containerPort": port}]}],
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": port}]},
    }
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": [pod, service]})


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(HOST_PAGE)))
        self.end_headers()
        self.wfile.write(HOST_PAGE)

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Tunnels:
    fenced: FencedCluster
    host_port: int  # where the hostNetwork Pod "listens": a page served by this test

    @property
    def cluster(self) -> Cluster:
        return self.fenced.cluster


@pytest.fixture(scope="module")
def tunnels(fenced_cluster: FencedCluster) -> Iterator[Tunnels]:
    c = fenced_cluster.cluster
    require_tunnels(c)
    assert c.node_ip is not None
    for namespace in (AUDITED, BLIND, UNAUDITED):
        fenced_namespace(c, namespace)
    running_pod(c, AUDITED, "web")
    running_pod(c, BLIND, "web")
    host_port = free_port()
    # What kubefence would never admit (a hostNetwork Pod; any Pod where nothing is recorded),
    # made while it is unregistered, as the tier's convention allows.
    fenced_cluster.unregister()
    try:
        c.kubectl_ok("run", "web", f"--image={IMAGE}", "-n", UNAUDITED)
        c.kubectl_ok("apply", "-n", AUDITED, "-f", "-", stdin=host_network_pod("host", host_port))
    finally:
        fenced_cluster.register()
    for namespace, name in ((UNAUDITED, "web"), (AUDITED, "host")):
        c.kubectl_ok(
            "wait", "--for=condition=Ready", f"pod/{name}", "-n", namespace, "--timeout=120s"
        )
    server = http.server.ThreadingHTTPServer((c.node_ip, host_port), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Tunnels(fenced_cluster, host_port)
    finally:
        server.shutdown()
        server.server_close()
        # Bare Pods would stop a later `kubectl drain` (no controller re-creates them); the
        # fenced namespaces stay, empty.
        for namespace in (AUDITED, BLIND, UNAUDITED):
            c.kubectl("delete", "pods", "--all", "-n", namespace, "--timeout=120s")


def denied_out_of_scope(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode != 0, out.stdout
    assert DENIED in out.stderr, out.stderr
    assert OUT_OF_SCOPE in out.stderr, out.stderr
    return out.stderr


def test_kubectl_debug_starts_an_ephemeral_container_where_it_is_recorded(
    tunnels: Tunnels,
) -> None:
    c = tunnels.cluster
    c.kubectl_ok("debug", "web", "-n", AUDITED, f"--image={DEBUG_IMAGE}", "-c", "dbg")

    def running() -> bool:
        pod = c.kubectl_json("get", "pod", "web", "-n", AUDITED)
        statuses = pod["status"].get("ephemeralContainerStatuses", [])
        return any(s["name"] == "dbg" and "running" in s["state"] for s in statuses)

    wait_for(running, "ephemeral container dbg running")
    # Where the Policy does not record ephemeral containers, kubectl prints kubefence's denial.
    out = c.kubectl("debug", "web", "-n", BLIND, f"--image={DEBUG_IMAGE}", "-c", "dbg")
    message = denied_out_of_scope(out)
    assert "ephemeralcontainers" in message
    pod = c.kubectl_json("get", "pod", "web", "-n", BLIND)
    assert not pod["spec"].get("ephemeralContainers")


def test_kubectl_exec_runs_where_it_is_recorded_and_is_denied_where_not(
    tunnels: Tunnels,
) -> None:
    c = tunnels.cluster
    out = c.kubectl("exec", "web", "-n", AUDITED, "--", EXEC_COMMAND, "hi")
    assert (out.returncode, out.stdout) == (0, "hi\n"), out.stderr
    # tunnel-blind records pods/exec: only the proxies and ephemeral containers are blind there.
    out = c.kubectl("exec", "web", "-n", BLIND, "--", EXEC_COMMAND, "hi")
    assert (out.returncode, out.stdout) == (0, "hi\n"), out.stderr
    denied_out_of_scope(c.kubectl("exec", "web", "-n", UNAUDITED, "--", EXEC_COMMAND, "hi"))
    # kubefence decided each; the audit log records the allowed exec under its decision-id.
    execs = {
        d["namespace"]: d
        for d in tunnels.fenced.hook.decisions()
        if d.get("operation") == "CONNECT" and d.get("subresource") == "exec"
    }
    assert execs[AUDITED]["allowed"]
    assert not execs[UNAUDITED]["allowed"]
    recorded = {
        e["annotations"].get(f"{WEBHOOK_NAME}/decision-id")
        for e in c.audit_events()
        if e.get("objectRef", {}).get("namespace") == AUDITED
        and e["objectRef"].get("subresource") == "exec"
        and "annotations" in e
    }
    assert execs[AUDITED]["decision_id"] in recorded


def port_forward(c: Cluster, namespace: str) -> tuple[int, subprocess.Popen[str]]:
    """`kubectl port-forward pod/web LOCAL:80`, started; its local port and process."""
    local = free_port()
    process = subprocess.Popen(
        [
            str(c.bin_dir / "kubectl"), "--kubeconfig", str(c.kubeconfig_path),
            "port-forward", "-n", namespace, "pod/web", f"{local}:80", "--address=127.0.0.1",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    return local, process


def test_kubectl_port_forward_carries_bytes_where_it_is_recorded(tunnels: Tunnels) -> None:
    c = tunnels.cluster
    # kwok forwards every port-forward to 127.0.0.1:port_forward_port: the "container".
    listener = socket.create_server(("127.0.0.1", c.port_forward_port))
    listener.settimeout(60)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.sendall(GREETING)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    local, process = port_forward(c, AUDITED)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert f"Forwarding from 127.0.0.1:{local}" in first, process.stderr
        with socket.create_connection(("127.0.0.1", local), timeout=30) as conn:
            received = b""
            while not received.endswith(b"\n"):
                chunk = conn.recv(1024)
                if not chunk:
                    break
                received += chunk
        assert received == GREETING
    finally:
        process.terminate()
        process.communicate(timeout=30)
        listener.close()
        thread.join(5)
    # Where nothing is recorded, kubectl's upgrade to the stream is refused: it prints
    # kubefence's denial and exits (should it listen first, a connection brings the refusal).
    local, process = port_forward(c, UNAUDITED)
    with process:
        assert process.stdout is not None
        if process.stdout.readline():
            with socket.create_connection(("127.0.0.1", local), timeout=30) as conn:
                conn.settimeout(30)
                with contextlib.suppress(OSError):
                    conn.recv(1024)
            process.terminate()
        _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert DENIED in stderr, stderr
    assert OUT_OF_SCOPE in stderr, stderr


def test_get_raw_through_the_node_proxy_reaches_kwok_and_a_blind_node_is_denied(
    tunnels: Tunnels,
) -> None:
    c = tunnels.cluster
    # The kubelet API of the Node the Pod runs on: its health, and the container's log as
    # `kubectl logs` reads it (the CRI line kwok serves).
    node = c.kubectl_json("get", "pod", "web", "-n", AUDITED)["spec"]["nodeName"]
    assert c.kubectl_ok("get", "--raw", f"/api/v1/nodes/{node}/proxy/healthz") == "ok"
    log = c.kubectl_ok(
        "get", "--raw", f"/api/v1/nodes/{node}/proxy/containerLogs/{AUDITED}/web/web"
    )
    assert LOG_LINE in log
    out = c.kubectl("get", "--raw", "/api/v1/nodes/blind-node/proxy/pods")
    assert out.returncode != 0
    assert DENIED in out.stderr, out.stderr
    assert 'CONNECT of nodes/proxy to "blind-node"' in out.stderr


def test_get_raw_through_pod_and_service_proxies_reaches_a_host_network_pod(
    tunnels: Tunnels,
) -> None:
    c = tunnels.cluster
    port = tunnels.host_port
    page = c.kubectl_ok("get", "--raw", f"/api/v1/namespaces/{AUDITED}/pods/host:{port}/proxy/")
    assert page.encode() == HOST_PAGE

    def endpoint() -> bool:
        out = c.kubectl("get", "endpointslices", "-n", AUDITED, "-l",
                        "kubernetes.io/service-name=host", "-o", "json")  # fmt: skip
        return out.returncode == 0 and any(
            e.get("addresses")
            for s in json.loads(out.stdout)["items"]
            for e in s["endpoints"] or []
        )

    wait_for(endpoint, "an endpoint of Service host")
    page = c.kubectl_ok("get", "--raw", f"/api/v1/namespaces/{AUDITED}/services/host:80/proxy/")
    assert page.encode() == HOST_PAGE
    # Where the Policy does not record the proxies, kubefence denies before anything is dialled.
    denied_out_of_scope(
        c.kubectl("get", "--raw", f"/api/v1/namespaces/{BLIND}/pods/web:{port}/proxy/")
    )
    denied_out_of_scope(
        c.kubectl("get", "--raw", f"/api/v1/namespaces/{BLIND}/services/web:80/proxy/")
    )
