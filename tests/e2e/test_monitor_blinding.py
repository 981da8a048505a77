"""The live monitor cannot be blinded by a padded `Audit-ID` (issue 23 item 6, "Done when").

A real kube-apiserver with the truncating audit webhook backend the README used to recommend
(`--audit-webhook-truncate-enabled`, events over 100 KB truncated, then dropped) feeds
`kubefence monitor`; `kubefence serve` decides the API server's admission requests (it shows a
client certificate, which serve's --client-ca verifies) and sends its sensitive decisions to the
monitor (`--decisions-to`, with its own client certificate). An exec whose `Audit-ID` header is
padded to ~1 MiB is kept as it came (k8s.io/apiserver pkg/endpoints/filters/audit_init.go), so
its event is dropped by the truncating backend and never reaches the monitor: `evasion.audit_gap`
says so within seconds. An ordinary exec, and one the audit Policy records at None, raise none.
The execs need no kubelet: a CONNECT is admitted before the API server looks for the pod.
"""

from __future__ import annotations

import contextlib
import http.client
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from controlplane import ControlPlane, free_port, missing_binaries
from forgery import AuthenticatedWebhook
from kubefence_process import AUDIT_POLICY, WEBHOOK_NAME, RunningWebhook
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from monitor_process import Monitor, audit_feed, eventually
from test_webhook import fence, new_namespace

APISERVER_CN = "kubefence-e2e-apiserver"  # the certificate the API server shows webhooks
SERVE_CN = "kubefence-serve"
WINDOW = 3  # --audit-gap-window: above the API server's 1 s batch wait
TRUNCATE_AT = 100 * 1024  # the API server's default --audit-webhook-truncate-max-event-size
PADDED = "p" * 1_000_000  # within the API server's 1 MiB header block


@dataclass
class Setup:
    cp: ControlPlane
    kube: client.ApiClient
    monitor: Monitor
    hook: RunningWebhook


@contextlib.contextmanager
def cluster(work: Path, **truncation: int) -> Iterator[Setup]:
    """A control plane whose truncating audit webhook backend feeds a monitor, and serve."""
    if missing_binaries():
        pytest.skip("no local control plane binaries")
    feed = audit_feed(work)
    pki = feed.pki
    cp = ControlPlane(
        work_dir=work / "cp",
        webhook_client_cn=APISERVER_CN,
        extra_apiserver_args=feed.apiserver_args(**truncation),
    )
    cp.start()
    kube = config.new_client_from_config(config_file=str(cp.kubeconfig_path))
    monitor = feed.monitor(
        [
            "--decisions-subject", SERVE_CN,
            "--audit-gap-window", str(WINDOW), "--webhook-client-subject", APISERVER_CN,
            "--webhook-name", WEBHOOK_NAME,
        ],
    )  # fmt: skip
    serve_cert, serve_key = pki.issue_client(SERVE_CN)
    hook: RunningWebhook | None = None
    try:
        monitor.start()
        (work / "serve").mkdir()
        hook = AuthenticatedWebhook.start(
            work / "serve",
            cp.kubeconfig_path,
            AUDIT_POLICY,
            extra_args=(
                "--client-ca", str(cp.ca_path), "--client-subject", APISERVER_CN,
                "--probe-port", str(free_port()),
                "--decisions-to", f"https://127.0.0.1:{feed.port}/decisions",
                "--decisions-ca", str(pki.paths.ca_cert),
                "--decisions-client-cert", str(serve_cert),
                "--decisions-client-key", str(serve_key),
            ),
        )  # fmt: skip
        hook.register(kube)
        yield Setup(cp, kube, monitor, hook)
    finally:
        if hook is not None:
            hook.unregister(kube)
            hook.stop()
        kube.close()
        cp.stop()  # first: a stopping API server flushes its audit buffer to the monitor
        monitor.stop()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """The truncating backend at its defaults: a padded event is dropped."""
    with cluster(tmp_path_factory.mktemp("gaps"), truncate_max_event_size=TRUNCATE_AT) as s:
        yield s


@pytest.fixture(scope="module")
def keeping(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """The flags the README gives to keep a padded event: a 2 MiB event limit, batches of 30
    (60 MiB at most, under the monitor's 64 MiB)."""
    with cluster(
        tmp_path_factory.mktemp("kept"), truncate_max_event_size=2 << 20, batch_max_size=30
    ) as s:
        yield s


def exec_into(cp: ControlPlane, namespace: str, pod: str, audit_id: str | None = None) -> None:
    """POST .../pods/POD/exec through the API server, as a client may send it: with its own
    `Audit-ID` header. The pod need not exist (admission comes first); the answer echoes the
    header, which http.client may refuse to read at that length: the request was made."""
    context = ssl.create_default_context(cafile=str(cp.ca_path))
    connection = http.client.HTTPSConnection("127.0.0.1", cp.port, context=context, timeout=30)
    headers = {"Authorization": f"Bearer {cp.token}"}
    if audit_id is not None:
        headers["Audit-ID"] = audit_id
    try:
        connection.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/pods/{pod}/exec?command=ls&stdout=true",
            headers=headers,
        )
        with contextlib.suppress(http.client.HTTPException, OSError):
            connection.getresponse().read()
    finally:
        connection.close()


def truncate_errors(cp: ControlPlane) -> float:
    """`apiserver_audit_error_total{plugin="truncate"}`: events the truncating backend dropped."""
    context = ssl.create_default_context(cafile=str(cp.ca_path))
    connection = http.client.HTTPSConnection("127.0.0.1", cp.port, context=context, timeout=30)
    try:
        connection.request("GET", "/metrics", headers={"Authorization": f"Bearer {cp.token}"})
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("apiserver_audit_error_total{") and 'plugin="truncate"' in line
    )


def decision_of(hook: RunningWebhook, namespace: str, pod: str) -> dict[str, Any] | None:
    return next(
        (
            d
            for d in hook.decisions()
            if d["operation"] == "CONNECT" and d["namespace"] == namespace and d["name"] == pod
        ),
        None,
    )


def test_a_padded_exec_the_truncating_backend_drops_is_an_audit_gap_and_others_are_not(
    setup: Setup,
) -> None:
    kube, cp, hook, monitor = setup.kube, setup.cp, setup.hook, setup.monitor
    namespace = new_namespace(kube, "gap")
    with contextlib.suppress(ApiException):  # the audit Policy records nothing in it
        client.CoreV1Api(kube).create_namespace({"metadata": {"name": "unaudited"}})
    exec_into(cp, namespace, "plain")
    exec_into(cp, "unaudited", "padded-unaudited", PADDED)
    sent = time.monotonic()
    exec_into(cp, namespace, "padded", PADDED)
    padded = eventually(
        "serve's decision on the padded exec", lambda: decision_of(hook, namespace, "padded")
    )
    plain = decision_of(hook, namespace, "plain")
    unaudited = decision_of(hook, "unaudited", "padded-unaudited")
    assert plain is not None
    assert unaudited is not None

    def gap() -> dict[str, Any] | None:
        client.CoreV1Api(kube).list_namespace(limit=1)  # audited traffic: the feed moves on
        return next(
            (
                a
                for a in monitor.alerts("evasion.audit_gap")
                if a["decision_id"] == padded["decision_id"]
            ),
            None,
        )

    alert = eventually("an evasion.audit_gap for the padded exec", gap, timeout=30)
    print(f"padded exec alerted {time.monotonic() - sent:.1f}s after it was sent")
    assert (alert["operation"], alert["subresource"], alert["namespace"], alert["name"]) == (
        "CONNECT",
        "exec",
        namespace,
        "padded",
    )
    assert alert["user"] == "kubefence-admin"
    # the file backend kept the Audit-ID as it came; the truncating backend dropped the event
    recorded = [e for e in cp.audit_events() if e.get("objectRef", {}).get("name") == "padded"]
    assert recorded
    assert all(e["auditID"] == PADDED for e in recorded)
    assert truncate_errors(cp) >= len(recorded)
    gaps = {a["decision_id"] for a in monitor.alerts("evasion.audit_gap")}
    assert plain["decision_id"] not in gaps  # its event came: joined
    assert unaudited["decision_id"] not in gaps  # the audit Policy records it at None
    assert monitor.metric("kubefence_monitor_decisions_total") >= 2


def padded_delete(cp: ControlPlane, namespace: str, name: str) -> int | None:
    """DELETE a NetworkPolicy through the API server with a padded `Audit-ID` header."""
    context = ssl.create_default_context(cafile=str(cp.ca_path))
    connection = http.client.HTTPSConnection("127.0.0.1", cp.port, context=context, timeout=30)
    try:
        connection.request(
            "DELETE",
            f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{name}",
            headers={"Authorization": f"Bearer {cp.token}", "Audit-ID": PADDED},
        )
        try:
            return connection.getresponse().status
        except (http.client.HTTPException, OSError):
            return None  # the answer echoes the header
    finally:
        connection.close()


def fence_removals(monitor: Monitor, namespace: str) -> list[dict[str, Any]]:
    return [a for a in monitor.alerts("evasion.fence_removed") if a["namespace"] == namespace]


def test_a_padded_fence_teardown_the_truncating_backend_drops_is_an_audit_gap(setup: Setup) -> None:
    kube, cp, hook, monitor = setup.kube, setup.cp, setup.hook, setup.monitor
    namespace = new_namespace(kube, "gap-fence")  # one fence, no Pod: its delete is a teardown
    fence(kube, namespace)
    padded_delete(cp, namespace, "default-deny")
    eventually(
        "the fence gone",
        lambda: not client.NetworkingV1Api(kube).list_namespaced_network_policy(namespace).items,
    )
    decision = eventually(
        "serve's decision on the delete",
        lambda: next(
            (
                d
                for d in hook.decisions()
                if d["operation"] == "DELETE" and d["namespace"] == namespace
            ),
            None,
        ),
    )
    assert decision["audit_annotations"]["fence-lost"] == "Ingress,Egress"

    def gap() -> dict[str, Any] | None:
        client.CoreV1Api(kube).list_namespace(limit=1)
        return next(
            (
                a
                for a in monitor.alerts("evasion.audit_gap")
                if a["decision_id"] == decision["decision_id"]
            ),
            None,
        )

    alert = eventually("an evasion.audit_gap for the padded fence deletion", gap, timeout=30)
    assert (alert["operation"], alert["resource"], alert["name"]) == (
        "DELETE",
        "networking.k8s.io/networkpolicies",
        "default-deny",
    )
    assert fence_removals(monitor, namespace) == []  # its event never came


def test_with_the_readme_flags_a_padded_fence_teardown_is_kept_and_judged(keeping: Setup) -> None:
    kube, cp, monitor = keeping.kube, keeping.cp, keeping.monitor
    namespace = new_namespace(kube, "kept-fence")
    fence(kube, namespace)
    padded_delete(cp, namespace, "default-deny")

    def removal() -> dict[str, Any] | None:
        client.CoreV1Api(kube).list_namespace(limit=1)
        found = fence_removals(monitor, namespace)
        return found[0] if found else None

    alert = eventually("an evasion.fence_removed for the padded teardown", removal, timeout=30)
    assert (alert["cause"], alert["verb"], alert["name"]) == ("decided", "delete", "default-deny")
    assert alert["audit_id"].startswith("p" * 128)
    assert f"[{len(PADDED)} characters" in alert["audit_id"]
    assert len(alert["audit_id"]) < 300  # the alert line does not carry the padding
    assert not any(a["namespace"] == namespace for a in monitor.alerts("evasion.audit_gap"))
    assert not [line for line in monitor.lines() if line.get("event") == "monitor.batch_rejected"]
