"""`kubefence detections`' Sigma rules, converted to SQL and run by DuckDB over the audit log this
suite's real API server writes, find exactly what `kubefence correlate` reports in it, rule by
rule: a debug container (and an exec that never started), a fence torn down, a prober, writes
failed open during an outage and dodged while the webhook configuration was gone (correlate's
`unregistered`), NetworkPolicy deletes in both, and the writes to the webhook configuration.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from controlplane import ControlPlane
from kubefence_process import CONFIGURATION, RunningWebhook
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from sigma_kit import PROBING, connect, found, read_rule_files, reported_json
from test_monitor_blinding import exec_into
from test_trail import await_configuration, eventually_created, failing_open, now, reconfigure
from test_tunnels import debug, pod_in
from test_webhook import create_deployment, fence, new_namespace

from webhook.correlate.sigma_fields import WRITES

ADMISSION = "kubefence-admission-change"


def kubefence(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", *args], capture_output=True, check=False
    )


def configuration_writes(audit_log: Path, since: str, until: str) -> list[tuple[str, str]]:
    """(verb, auditID) of the admitted writes to the suite's webhook configuration, read plainly
    from the log: what the admission-change rule must find."""
    writes = []
    for line in audit_log.read_bytes().splitlines():
        e = orjson.loads(line)
        ref = e.get("objectRef") or {}
        if (
            ref.get("resource") == "validatingwebhookconfigurations"
            and ref.get("name") == CONFIGURATION
            and e["stage"] != "RequestReceived"
            and e["verb"] in WRITES
            and e.get("responseStatus", {}).get("code", 0) < 400
            and since <= e["requestReceivedTimestamp"] <= until
        ):
            writes.append((e["verb"], e["auditID"]))
    return writes


def test_the_sigma_rules_find_what_correlate_reports_in_the_real_audit_log(
    control_plane: ControlPlane, kube: client.ApiClient, webhook: RunningWebhook, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"  # serve's config, naming its webhook configuration
    config.write_text(
        webhook.config_path.read_text()
        + f"\ndrift: {{webhookConfiguration: {CONFIGURATION}, expected: []}}\n"
    )
    audit_log = control_plane.audit_log_path
    networking = client.NetworkingV1Api(kube)
    since = now()
    debugged = new_namespace(kube, "sig-debug")
    fence(kube, debugged)
    pod_in(kube, debugged, "app")
    assert debug(control_plane, debugged, "app").returncode == 0  # sensitive access
    exec_into(control_plane, debugged, "app", audit_id="sig-exec")  # decided, then 400: no node
    torn_down = new_namespace(kube, "sig-teardown")
    fence(kube, torn_down)
    networking.delete_namespaced_network_policy("default-deny", torn_down)  # fence-lost
    probed = new_namespace(kube, "sig-probed")  # unfenced: every Deployment is denied
    for _ in range(12):
        with pytest.raises(ApiException):
            create_deployment(kube, probed)
    outage = new_namespace(kube, "sig-outage")
    fence(kube, outage, "a")
    fence(kube, outage, "b")
    dodged = new_namespace(kube, "sig-dodged")
    try:
        reconfigure(kube, webhook, failing_open(webhook.ca_pem))
        await_configuration(kube, audit_log, probed, failing_open=True)
        eventually_created(kube, probed)  # failed open
        networking.delete_namespaced_network_policy("a", outage)  # failed open: undecided
        reconfigure(kube, webhook, None)
        await_configuration(kube, audit_log, outage, failing_open=False)
        eventually_created(kube, dodged)  # dodged
        networking.delete_namespaced_network_policy("b", outage)  # dodged: undecided
        until = now()
    finally:
        webhook.register(kube)

    rules = tmp_path / "rules"
    made = kubefence("detections", "--config", str(config), "--out", str(rules))
    assert made.returncode == 0, made.stderr.decode()
    correlated = kubefence(
        "correlate", "--audit-log", str(audit_log), "--decision-log", str(webhook.decision_log),
        "--config", str(config), "--since", since, "--until", until, "--format", "json",
    )  # fmt: skip
    assert correlated.returncode == 1, correlated.stderr.decode()  # there are bypasses
    report = orjson.loads(correlated.stdout)
    want = reported_json(report)
    files = read_rule_files(rules)
    got = found(connect([audit_log], files, since, until), files)

    for rule, events in want.items():
        assert got[rule] == events, rule
        assert events, f"the scenario made no event for {rule}"
    # correlate tells the creates made while the configuration was deleted apart (unregistered);
    # the dodged rule, one event at a time, cannot: it stands for both.
    causes = {b["cause"] for b in report["bypasses"]}
    assert causes == {"fail-open", "unregistered"}
    assert report["summary"]["beforeRegistration"] == 0
    assert "sig-exec" not in got["kubefence-sensitive-access"]  # the exec never started
    assert got[PROBING] == {"kubefence-admin"}
    writes = configuration_writes(audit_log, since, until)
    assert [verb for verb, _ in writes] == ["delete", "create", "delete"]
    assert got[ADMISSION] == {audit_id for _, audit_id in writes}
    print(
        "rules and correlate agree:",
        {rule: len(events) for rule, events in sorted(got.items())},
    )
