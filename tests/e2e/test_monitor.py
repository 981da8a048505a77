"""`kubefence monitor` fed by a real kube-apiserver's audit webhook backend (issue 18, "Done when").

This module starts its own control plane: the API server gets `--audit-webhook-config-file` (a
kubeconfig naming the monitor, with a client certificate the monitor's `--client-ca` signed) and
`--audit-webhook-batch-max-wait=1s`, beside the file backend every e2e control plane writes. Every
wait polls for a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from controlplane import ControlPlane, missing_binaries, read_audit_log
from kubefence_process import (
    AUDIT_POLICY,
    CONFIGURATION,
    WEBHOOK_NAME,
    RunningWebhook,
)
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from monitor_process import Monitor, audit_feed, eventually
from test_trail import await_configuration, eventually_created, failing_open, reconfigure
from test_webhook import create_deployment, fence, new_namespace

from webhook.correlate.model import CorrelateOptions
from webhook.monitor.follow import follow_alerts


@dataclass
class Setup:
    cp: ControlPlane
    kube: client.ApiClient
    monitor: Monitor
    server_ca: Path
    client_pair: tuple[Path, Path]
    work: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    if missing_binaries():
        pytest.skip("no local control plane binaries")
    work = tmp_path_factory.mktemp("monitor")
    feed = audit_feed(work)
    pki = feed.pki
    cp = ControlPlane(work_dir=work / "cp", extra_apiserver_args=feed.apiserver_args())
    cp.start()
    kube = config.new_client_from_config(config_file=str(cp.kubeconfig_path))
    monitor = feed.monitor(["--webhook-name", WEBHOOK_NAME, "--probe-threshold", "10"])
    try:
        monitor.start()
        yield Setup(cp, kube, monitor, pki.paths.ca_cert, (pki.client_cert, pki.client_key), work)
    finally:
        monitor.stop()
        kube.close()
        cp.stop()


def post(s: Setup, body: bytes, *, with_cert: bool) -> int:
    context = ssl.create_default_context(cafile=str(s.server_ca))
    if with_cert:
        context.load_cert_chain(*s.client_pair)
    request = urllib.request.Request(
        f"https://127.0.0.1:{s.monitor.port}/audit", data=body, method="POST"
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_a_fail_open_create_is_alerted_within_seconds(setup: Setup) -> None:
    kube, audit_log = setup.kube, setup.cp.audit_log_path
    open_ns = new_namespace(kube, "mon-open")
    manifest = failing_open(setup.server_ca.read_bytes())
    client.AdmissionregistrationV1Api(kube).create_validating_webhook_configuration(manifest)
    try:
        await_configuration(kube, audit_log, open_ns, failing_open=True)
        eventually_created(kube, open_ns)  # kubefence is down: the API server fails open
        created = time.monotonic()
        alert = eventually(
            "an evasion.bypass fail-open alert for the Deployment",
            lambda: next(
                (
                    a
                    for a in setup.monitor.alerts("evasion.bypass")
                    if a["namespace"] == open_ns
                    and a["resource"] == "apps/deployments"
                    and a["verb"] == "create"
                    and "dryRun" not in str(a)
                ),
                None,
            ),
            timeout=30,
        )
        print(f"fail-open alerted {time.monotonic() - created:.1f}s after the create")
    finally:
        with contextlib.suppress(ApiException):
            client.AdmissionregistrationV1Api(kube).delete_validating_webhook_configuration(
                CONFIGURATION
            )
    assert alert["cause"] == "fail-open"
    assert alert["user"] == "kubefence-admin"
    assert alert["source_ips"]
    assert "requestObject" not in alert


def test_a_user_denied_a_dozen_times_is_probing(setup: Setup) -> None:
    kube = setup.kube
    hook = RunningWebhook.start(setup.work / "serve", setup.cp.kubeconfig_path, AUDIT_POLICY)
    try:
        hook.register(kube)
        ns = new_namespace(kube, "mon-probe")  # unfenced: every Deployment is denied
        for _ in range(12):
            with pytest.raises(ApiException):
                create_deployment(kube, ns)
        alert = eventually(
            "an evasion.probing alert",
            lambda: next(iter(setup.monitor.alerts("evasion.probing")), None),
            timeout=30,
        )
    finally:
        reconfigure(kube, hook, None)
        hook.stop()
    assert alert["user"] == "kubefence-admin"
    assert alert["denials"] == 10


def all_received(s: Setup) -> bool:
    """Whether every event of the file backend has reached the monitor (none counted twice)."""
    m = s.monitor
    stopped = [line for r in range(1, m.runs) for line in m.lines(r)]
    earlier = sum(line["events"] for line in stopped if line.get("event") == "monitor.stopped")
    received = earlier + int(m.metric("kubefence_monitor_audit_events_total"))
    return received == len(
        {(e["auditID"], e["stage"]) for e in read_audit_log(s.cp.audit_log_path)}
    )


def test_a_teardown_delete_is_a_fence_removal_and_a_covered_delete_is_not(setup: Setup) -> None:
    kube, audit_log = setup.kube, setup.cp.audit_log_path
    hook = RunningWebhook.start(setup.work / "serve-fence", setup.cp.kubeconfig_path, AUDIT_POLICY)
    api = client.NetworkingV1Api(kube)
    try:
        hook.register(kube)
        covered = new_namespace(kube, "mon-covered")  # two fences; no Pod runs (no kubelet)
        fence(kube, covered, "a-older")
        fence(kube, covered, "b-newer")  # same second or later: the name breaks the tie
        torn_down = new_namespace(kube, "mon-teardown")  # one fence, no Pod: a teardown
        fence(kube, torn_down)
        # Whatever the webhook's cache holds yet, it decides a removal on a live read.
        api.delete_namespaced_network_policy("b-newer", covered)
        api.delete_namespaced_network_policy("default-deny", torn_down)
        alert = eventually(
            "an evasion.fence_removed alert for the teardown",
            lambda: next(
                (
                    a
                    for a in setup.monitor.alerts("evasion.fence_removed")
                    if a["namespace"] == torn_down
                ),
                None,
            ),
            timeout=30,
        )
        eventually("every event of the file backend at the monitor", lambda: all_received(setup))
    finally:
        reconfigure(kube, hook, None)
        hook.stop()
    assert (alert["cause"], alert["verb"], alert["name"]) == ("decided", "delete", "default-deny")
    assert alert["user"] == "kubefence-admin"
    # The covered delete's event was judged too: kubefence said nothing was lost.
    ours = {covered, torn_down}
    removals = [a for a in setup.monitor.alerts("evasion.fence_removed") if a["namespace"] in ours]
    assert [a["namespace"] for a in removals] == [torn_down]
    # At the source: the annotation the API server stored, and nothing on the covered delete.
    deletes = {
        e["objectRef"]["namespace"]: e.get("annotations", {})
        for e in read_audit_log(audit_log)
        if e["verb"] == "delete" and e["stage"] == "ResponseComplete"
        and e["objectRef"].get("namespace") in ours
    }  # fmt: skip
    assert deletes[torn_down][f"{WEBHOOK_NAME}/fence-lost"] == "Ingress,Egress"
    assert f"{WEBHOOK_NAME}/decision-id" in deletes[covered]
    assert f"{WEBHOOK_NAME}/fence-lost" not in deletes[covered]
    # `correlate --follow` over the file backend alerts the same.
    with audit_log.open("rb") as lines:
        followed = [
            (a.event, a.namespace, a.cause)
            for a in follow_alerts(iter(lines), CorrelateOptions(webhook_names=(WEBHOOK_NAME,)))
            if a.namespace in ours
        ]
    assert followed == [("evasion.fence_removed", torn_down, "decided")]


def test_a_sender_without_the_client_certificate_is_refused(setup: Setup) -> None:
    body = b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[]}'
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
        post(setup, body, with_cert=False)
    assert post(setup, body, with_cert=True) == 200


def test_a_malformed_batch_gets_400_and_the_monitor_goes_on(setup: Setup) -> None:
    before = setup.monitor.metric("kubefence_monitor_audit_events_total")
    assert post(setup, b'{"kind":"Event"}', with_cert=True) == 400
    new_namespace(setup.kube, "mon-after-400")
    eventually(
        "events after the 400",
        lambda: setup.monitor.metric("kubefence_monitor_audit_events_total") > before,
    )


def test_every_file_event_is_received_once_across_a_restart(setup: Setup) -> None:
    m = setup.monitor
    new_namespace(setup.kube, "mon-before-restart")
    m.stop()
    first = m.runs
    for _ in range(3):  # while the monitor is down: the API server retries these later
        new_namespace(setup.kube, "mon-while-down")
    m.start()
    new_namespace(setup.kube, "mon-after-restart")

    def counts() -> tuple[int, int] | None:
        stopped = [line for r in range(1, first + 1) for line in m.lines(r)]
        earlier = sum(line["events"] for line in stopped if line.get("event") == "monitor.stopped")
        received = earlier + int(m.metric("kubefence_monitor_audit_events_total"))
        in_file = len({(e["auditID"], e["stage"]) for e in read_audit_log(setup.cp.audit_log_path)})
        return (received, in_file) if received == in_file else None

    received, in_file = eventually("the monitor's count equals the file's", counts, timeout=90)
    assert received == in_file
    assert m.metric("kubefence_monitor_duplicate_events_total") == 0


def test_a_uri_dry_run_hides_no_real_delete_and_a_body_dry_run_raises_nothing(
    setup: Setup,
) -> None:
    # A DELETE with a body takes its options from the body and ignores the query
    # (k8s.io/apiserver pkg/endpoints/handlers/delete.go): `?dryRun=All` with a body `{}`
    # really deletes, and `kubectl delete --dry-run=server` sends dryRun in the body only.
    kube, audit_log = setup.kube, setup.cp.audit_log_path
    hook = RunningWebhook.start(setup.work / "serve-dry", setup.cp.kubeconfig_path, AUDIT_POLICY)
    api = client.NetworkingV1Api(kube)
    try:
        hook.register(kube)
        hidden = new_namespace(kube, "mon-hidden")  # one fence, no Pod: a teardown
        rehearsed = new_namespace(kube, "mon-rehearsed")
        fence(kube, hidden)
        fence(kube, rehearsed)
        api.delete_namespaced_network_policy(
            "default-deny", hidden, dry_run="All", body=client.V1DeleteOptions()
        )
        api.delete_namespaced_network_policy(
            "default-deny", rehearsed, body=client.V1DeleteOptions(dry_run=["All"])
        )
        alert = eventually(
            "an evasion.fence_removed alert for the delete behind ?dryRun=All",
            lambda: next(
                (
                    a
                    for a in setup.monitor.alerts("evasion.fence_removed")
                    if a["namespace"] == hidden
                ),
                None,
            ),
            timeout=30,
        )
        eventually("every event of the file backend at the monitor", lambda: all_received(setup))
    finally:
        reconfigure(kube, hook, None)
        hook.stop()
    assert (alert["cause"], alert["name"]) == ("decided", "default-deny")
    # The fence really went in one namespace, and stayed in the other.
    with pytest.raises(ApiException) as gone:
        api.read_namespaced_network_policy("default-deny", hidden)
    assert gone.value.status == 404
    api.read_namespaced_network_policy("default-deny", rehearsed)
    ours = {hidden, rehearsed}
    removals = [a for a in setup.monitor.alerts("evasion.fence_removed") if a["namespace"] in ours]
    assert [a["namespace"] for a in removals] == [hidden]
    deletes = {
        e["objectRef"]["namespace"]: e
        for e in read_audit_log(audit_log)
        if e["verb"] == "delete" and e["stage"] == "ResponseComplete"
        and e["objectRef"].get("namespace") in ours
    }  # fmt: skip
    assert "dryRun=All" in deletes[hidden]["requestURI"]
    assert deletes[hidden]["annotations"][f"{WEBHOOK_NAME}/fence-lost"] == "Ingress,Egress"
    assert "dryRun" not in deletes[rehearsed]["requestURI"]
    assert f"{WEBHOOK_NAME}/decision-id" in deletes[rehearsed]["annotations"]
    assert f"{WEBHOOK_NAME}/fence-lost" not in deletes[rehearsed]["annotations"]
    # `correlate --follow` over the file backend alerts the same.
    with audit_log.open("rb") as lines:
        followed = [
            (a.event, a.namespace, a.cause)
            for a in follow_alerts(iter(lines), CorrelateOptions(webhook_names=(WEBHOOK_NAME,)))
            if a.namespace in ours
        ]
    assert followed == [("evasion.fence_removed", hidden, "decided")]
