"""`monitor --alertmanager` into a real Alertmanager v0.35.0 (issue 28 item 3, "Done when").

The API server's audit webhook backend feeds the monitor (as in tests/e2e/test_monitor.py); a
ValidatingWebhookConfiguration for kubefence points at a dead address with failurePolicy Ignore,
so each Deployment create fails open and the monitor raises `evasion.bypass`, which it posts to
Alertmanager. Alertmanager's route groups by `alertname` and `cluster` (tests/e2e/
alertmanager_process.py). With KUBEFENCE_E2E=1 a missing alertmanager binary is a failure.
Every wait polls for a condition with a deadline.
"""

from __future__ import annotations

import base64
import contextlib
import ssl
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
from alertmanager_process import Alertmanager, bypass_event, event_list, require_binary
from controlplane import ControlPlane, free_port, missing_binaries
from kubefence_process import CONFIGURATION, WEBHOOK_NAME
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from monitor_process import Monitor, audit_feed, eventually
from prerequisites import unavailable
from test_trail import await_configuration, eventually_created, failing_open
from test_webhook import new_namespace

from webhook import certs

RESEND = 2.0  # seconds: --alertmanager-resend, short so a restart is over soon
CLUSTER = "e2e-cluster"


@dataclass
class Stack:
    cp: ControlPlane
    kube: client.ApiClient
    monitor: Monitor
    am: Alertmanager
    configured: bool = False

    def bypass(self, prefix: str) -> str:
        """A namespace where a Deployment create failed open (kubefence unreachable)."""
        ns = new_namespace(self.kube, prefix)
        if not self.configured:
            await_configuration(self.kube, self.cp.audit_log_path, ns, failing_open=True)
            self.configured = True
        eventually_created(self.kube, ns)
        return ns

    def alert_in(self, namespace: str, **filters: str) -> dict[str, Any] | None:
        found = [a for a in self.am.alerts(**filters) if a["labels"].get("namespace") == namespace]
        return found[0] if found else None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_binary()
    missing = missing_binaries()
    if missing:
        unavailable(f"no local control plane (missing {', '.join(p.name for p in missing)})")
    work = tmp_path_factory.mktemp("alertmanager")
    am = Alertmanager(work / "am")
    am.start()
    feed = audit_feed(work)
    cp = ControlPlane(work_dir=work / "cp", extra_apiserver_args=feed.apiserver_args())
    cp.start()
    kube = config.new_client_from_config(config_file=str(cp.kubeconfig_path))
    monitor = feed.monitor(
        [
            "--webhook-name", WEBHOOK_NAME,
            "--alertmanager", am.url, "--alertmanager-resend", str(RESEND),
            "--alertmanager-label", f"cluster={CLUSTER}",
        ],
    )  # fmt: skip
    manifest = failing_open(feed.pki.paths.ca_cert.read_bytes())
    try:
        monitor.start()
        client.AdmissionregistrationV1Api(kube).create_validating_webhook_configuration(manifest)
        yield Stack(cp, kube, monitor, am)
    finally:
        monitor.stop()
        am.stop()
        with contextlib.suppress(ApiException):
            client.AdmissionregistrationV1Api(kube).delete_validating_webhook_configuration(
                CONFIGURATION
            )
        kube.close()
        cp.stop()


@pytest.fixture(scope="module")
def two(stack: Stack) -> tuple[str, str]:
    """Two namespaces with a bypass each, both in Alertmanager."""
    first, second = stack.bypass("am-a"), stack.bypass("am-b")
    for ns in (first, second):
        eventually(f"the bypass in {ns} in Alertmanager", lambda ns=ns: stack.alert_in(ns))
    return first, second


def test_an_alert_arrives_with_its_labels_and_annotations(
    stack: Stack, two: tuple[str, str]
) -> None:
    ns = two[0]
    alert = stack.alert_in(ns)
    assert alert is not None
    assert alert["labels"] == {
        "alertname": "KubefenceBypass",
        "event": "evasion.bypass",
        "cause": "fail-open",
        "namespace": ns,
        "user": "kubefence-admin",
        "severity": "critical",
        "cluster": CLUSTER,
    }
    logged = {a["audit_id"] for a in stack.monitor.alerts("evasion.bypass") if a["namespace"] == ns}
    assert alert["annotations"]["audit_id"] in logged
    assert "failurePolicy Ignore" in alert["annotations"]["remedy"]
    assert ns in alert["annotations"]["summary"]
    assert alert["status"]["state"] == "active"
    # delivered within a second or two of the monitor raising it (the monitor's histogram)
    count = stack.monitor.metric("kubefence_monitor_alertmanager_delivery_seconds_count")
    total = stack.monitor.metric("kubefence_monitor_alertmanager_delivery_seconds_sum")
    print(f"alert delivery: {count:.0f} first posts, mean {1000 * total / count:.1f} ms")


def test_alerts_are_grouped_by_the_route(stack: Stack, two: tuple[str, str]) -> None:
    def group() -> dict[str, Any] | None:
        for g in stack.am.get("/api/v2/alerts/groups"):
            if g["labels"] == {"alertname": "KubefenceBypass", "cluster": CLUSTER}:
                namespaces = {a["labels"]["namespace"] for a in g["alerts"]}
                if set(two) <= namespaces:
                    return dict(g)
        return None

    found = eventually("one group holding both namespaces' bypasses", group, timeout=30)
    assert found["receiver"]["name"] == "blackhole"


def test_a_silence_holds_them_and_an_alertmanager_restart_brings_them_back(
    stack: Stack, two: tuple[str, str]
) -> None:
    silenced_ns, other = two
    now = datetime.now(UTC)
    silence = stack.am.post(
        "/api/v2/silences",
        {
            "matchers": [
                {"name": "namespace", "value": silenced_ns, "isRegex": False, "isEqual": True}
            ],
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(hours=1)).isoformat(),
            "createdBy": "e2e",
            "comment": "a known change",
        },
    )
    silence_id = silence["silenceID"]

    def suppressed() -> dict[str, Any] | None:
        a = stack.alert_in(silenced_ns)
        return a if a is not None and a["status"]["state"] == "suppressed" else None

    held = eventually("the silenced alert suppressed", suppressed, timeout=30)
    assert held["status"]["silencedBy"] == [silence_id]
    assert stack.alert_in(silenced_ns, silenced="false") is None
    unheld = stack.alert_in(other)
    assert unheld is not None
    assert unheld["status"]["state"] == "active"
    starts = {ns: stack.alert_in(ns)["startsAt"] for ns in two}  # type: ignore[index]

    # Alertmanager keeps alerts in memory only: a restart forgets them, the monitor re-posts.
    stack.am.stop()
    stack.am.start()
    restarted = time.monotonic()
    eventually(
        "both alerts back after the restart",
        lambda: all(stack.alert_in(ns) for ns in two),
        timeout=30,
    )
    print(f"back {time.monotonic() - restarted:.1f}s after the restart (re-post: {RESEND:.0f}s)")
    for ns in two:  # the same alerts, posted again: not new ones
        assert stack.alert_in(ns)["startsAt"] == starts[ns]  # type: ignore[index]
    held = eventually("the silence (kept in its storage) still holds it", suppressed, timeout=30)
    assert held["status"]["silencedBy"] == [silence_id]


def test_with_alertmanager_down_intake_goes_on_and_the_alert_comes_once_it_is_back(
    stack: Stack, two: tuple[str, str]
) -> None:
    m = stack.monitor
    retries = m.metric("kubefence_monitor_alertmanager_retries_total")
    stack.am.stop()
    try:
        ns = stack.bypass("am-down")
        eventually(
            "the monitor alerts while Alertmanager is down",
            lambda: any(a["namespace"] == ns for a in m.alerts("evasion.bypass")),
            timeout=30,
        )
        eventually(
            "posts retried, then their alerts dropped and counted",
            lambda: (
                m.metric("kubefence_monitor_alertmanager_retries_total") > retries
                and _dropped(m, "failed") > 0
            ),
            timeout=60,
        )
        assert _dropped(m, "queue_full") == 0
    finally:
        stack.am.start()
    eventually("the alert raised meanwhile in Alertmanager", lambda: stack.alert_in(ns), timeout=30)
    eventually("the earlier ones back too", lambda: all(stack.alert_in(n) for n in two))


def _dropped(m: Monitor, reason: str) -> float:
    return m.metric("kubefence_monitor_alertmanager_dropped_alerts_total", reason=reason)


# A bcrypt hash (cost 10) of PASSWORD, for Alertmanager's basic_auth_users: a test credential.
PASSWORD = "kubefence-e2e-password"
PASSWORD_HASH = "$2a$10$MBGzSunzhVaI7tapqt9r9uFsSNgpmmOi53vigkEnINpH43cNL0TQC"


def test_over_tls_with_a_client_certificate_and_basic_auth(tmp_path: Path) -> None:
    """An Alertmanager that wants TLS, a client certificate its CA signed and basic auth (its
    --web.config.file): the monitor's alert arrives; with a wrong password it is refused, counted
    and logged once, the password in no line."""
    require_binary()
    ca = trustme.CA()
    files = {name: tmp_path / name for name in ("ca", "srv.crt", "srv.key", "c.crt", "c.key")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    serving = ca.issue_cert("127.0.0.1")
    serving.cert_chain_pems[0].write_to_path(str(files["srv.crt"]))
    serving.private_key_pem.write_to_path(str(files["srv.key"]))
    monitor_pair = ca.issue_cert("kubefence-monitor")
    monitor_pair.cert_chain_pems[0].write_to_path(str(files["c.crt"]))
    monitor_pair.private_key_pem.write_to_path(str(files["c.key"]))
    context = ssl.create_default_context(cafile=str(files["ca"]))
    context.load_cert_chain(files["c.crt"], files["c.key"])
    basic = "Basic " + base64.b64encode(f"monitor:{PASSWORD}".encode()).decode()
    am = Alertmanager(
        tmp_path / "am",
        web_config=(
            "tls_server_config:\n"
            f"  cert_file: {files['srv.crt']}\n  key_file: {files['srv.key']}\n"
            f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {files['ca']}\n"
            f"basic_auth_users:\n  monitor: {PASSWORD_HASH}\n"
        ),
        client=context,
        authorization=basic,
    )
    am.start()
    try:
        for password, namespace in ((PASSWORD, "tls-ok"), ("wrong-password", "tls-wrong")):
            work = tmp_path / namespace
            work.mkdir()
            (work / "password").write_text(password + "\n")
            monitor = _plain_monitor(
                work,
                [
                    "--alertmanager", am.url, "--alertmanager-ca", str(files["ca"]),
                    "--alertmanager-cert", str(files["c.crt"]),
                    "--alertmanager-key", str(files["c.key"]),
                    "--alertmanager-username", "monitor",
                    "--alertmanager-password-file", str(work / "password"),
                ],
            )  # fmt: skip
            try:
                monitor.feed(event_list([bypass_event(1, namespace, "mallory")]))
                if password == PASSWORD:
                    alert = eventually("the alert over TLS", lambda ns=namespace: _alert_in(am, ns))
                    assert alert["labels"]["user"] == "mallory"
                else:
                    eventually(
                        "the post refused and counted",
                        lambda m=monitor.monitor: _dropped(m, "refused") == 1,
                    )
                    assert _alert_in(am, namespace) is None
                    refused = monitor.monitor.alerts("alertmanager.refused")
                    assert len(refused) == 1
                    assert "401" in refused[0]["reason"]
                    logs = b"".join(p.read_bytes() for p in work.glob("*.log"))
                    assert b"wrong-password" not in logs
            finally:
                monitor.monitor.stop()
    finally:
        am.stop()


def _alert_in(am: Alertmanager, namespace: str) -> dict[str, Any] | None:
    found = [a for a in am.alerts() if a["labels"].get("namespace") == namespace]
    return found[0] if found else None


@dataclass
class PlainMonitor:
    """A monitor fed by this test instead of an API server: TLS, no client authentication."""

    monitor: Monitor
    context: ssl.SSLContext

    def feed(self, body: bytes) -> None:
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.monitor.port}/audit", data=body, method="POST"
        )
        with urllib.request.urlopen(request, context=self.context, timeout=10) as r:
            assert r.status == 200


def _plain_monitor(work: Path, extra: list[str]) -> PlainMonitor:
    ca_cert, ca_key = certs.generate_ca()
    cert, key = certs.issue_serving_cert(ca_cert, ca_key, ["localhost"], ["127.0.0.1"])
    paths = certs.write_bundle(work / "certs", ca_cert, ca_key, cert, key)
    port, probe_port = free_port(), free_port()
    monitor = Monitor(
        work,
        port,
        probe_port,
        [
            "--cert", str(paths.cert), "--key", str(paths.key), "--insecure-allow-unauthenticated",
            "--host", "127.0.0.1", "--port", str(port), "--probe-port", str(probe_port),
            "--webhook-name", WEBHOOK_NAME, *extra,
        ],
    )  # fmt: skip
    monitor.start()
    return PlainMonitor(monitor, ssl.create_default_context(cafile=str(paths.ca_cert)))
