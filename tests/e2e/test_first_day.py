"""A quiet first day against the real API server (issue 26 item 4).

This module starts its own control plane, with no webhook configuration and a `kubefence
monitor` receiving its audit webhook backend from the first event on. Requests are made before
kubefence is registered: `correlate` reports no bypass and counts them, and the monitor alerts
none. Then the configuration is deleted, a Pod created, the configuration created again:
`correlate` names that Pod with cause `unregistered` and the monitor alerts it live. Every wait
polls for a condition with a deadline.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from controlplane import ControlPlane, missing_binaries
from kubefence_process import AUDIT_POLICY, CONFIGURATION, WEBHOOK_NAME, RunningWebhook, marker_pod
from kubernetes import client, config
from monitor_process import Monitor, audit_feed, eventually
from test_trail import await_configuration, eventually_created
from test_webhook import new_namespace

# What correlate and the monitor are told: the webhook, the namespaces its configuration leaves
# out (`kubefence_process.webhook_configuration`), and the configuration's name.
CONFIG = f"""\
webhookName: {WEBHOOK_NAME}
exemptions:
  namespaces: [kube-system, kube-public, kube-node-lease, kubefence-system]
drift:
  webhookConfiguration: {CONFIGURATION}
"""


@dataclass
class FirstDay:
    cp: ControlPlane
    kube: client.ApiClient
    monitor: Monitor
    config: Path
    work: Path


@pytest.fixture(scope="module")
def first_day(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirstDay]:
    if missing_binaries():
        pytest.skip("no local control plane binaries")
    work = tmp_path_factory.mktemp("first-day")
    feed = audit_feed(work)
    config_path = work / "config.yaml"
    config_path.write_text(CONFIG)
    monitor = feed.monitor(["--config", str(config_path)])
    cp = ControlPlane(work_dir=work / "cp", extra_apiserver_args=feed.apiserver_args())
    monitor.start()  # before the API server: it sees the API server's own first requests
    try:
        cp.start()
        kube = config.new_client_from_config(config_file=str(cp.kubeconfig_path))
        try:
            yield FirstDay(cp, kube, monitor, config_path, work)
        finally:
            kube.close()
    finally:
        monitor.stop()
        cp.stop()


def correlate(day: FirstDay, hook: RunningWebhook) -> tuple[int, dict[str, Any], str]:
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "correlate",
         "--audit-log", str(day.cp.audit_log_path), "--decision-log", str(hook.decision_log),
         "--config", str(day.config), "--audit-policy", str(AUDIT_POLICY), "--format", "json"],
        capture_output=True, check=False,
    )  # fmt: skip
    return result.returncode, orjson.loads(result.stdout), result.stderr.decode()


def test_before_registration_is_quiet_and_while_deleted_is_loud(first_day: FirstDay) -> None:
    day, kube = first_day, first_day.kube
    early = new_namespace(kube, "early")  # no webhook configuration yet: no decision
    eventually_created(kube, early)
    hook = RunningWebhook.start(day.work / "kubefence", day.cp.kubeconfig_path, AUDIT_POLICY)
    try:
        hook.register(kube)  # creates the configuration; waits until the API server calls it

        code, report, stderr = correlate(day, hook)
        assert code == 0, (report["bypasses"], stderr)
        assert report["summary"]["bypasses"] == 0
        # the namespace and its Deployment, and the API server's own `default`, at least
        assert report["summary"]["beforeRegistration"] >= 3
        assert report["registration"]["firstCreated"] is not None
        assert report["notices"] == [], report["notices"]
        eventually(
            "the monitor counts the early requests",
            lambda: day.monitor.metric("kubefence_monitor_before_registration_total") >= 3,
        )

        target = new_namespace(kube, "while-deleted")  # not fenced: kubefence would deny
        hook.unregister(kube)
        await_configuration(kube, day.cp.audit_log_path, target, failing_open=False)
        client.CoreV1Api(kube).create_namespaced_pod(target, marker_pod("while-deleted"))
        hook.register(kube)

        def unregistered() -> dict[str, Any] | None:
            return next(
                (
                    a
                    for a in day.monitor.alerts("evasion.bypass")
                    if a["namespace"] == target and a["name"] == "while-deleted"
                ),
                None,
            )

        alert = eventually("the monitor alerts the Pod made while unregistered", unregistered)
        assert alert["cause"] == "unregistered"
        assert alert["resource"] == "pods"

        code, report, stderr = correlate(day, hook)
        assert code == 1, stderr
        pods = [
            b
            for b in report["bypasses"]
            if (b["namespace"], b["name"]) == (target, "while-deleted")
        ]
        assert [b["cause"] for b in pods] == ["unregistered"]
        assert report["summary"]["unregisteredBypasses"] >= 1
        # nothing else is a bypass: only what was made while the configuration was deleted
        assert {b["cause"] for b in report["bypasses"]} == {"unregistered"}, report["bypasses"]
        assert not [a for a in day.monitor.alerts("evasion.bypass") if a["namespace"] == early]
    finally:
        hook.unregister(kube)
        hook.stop()
