"""`kubefence correlate` over the real audit log and decision log of this suite's API server.

A request made while kubefence is registered with failurePolicy Ignore and down is a fail-open
bypass; one made while its configuration is deleted is a dodged bypass; decided requests join.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from controlplane import ControlPlane, free_port
from kubefence_process import CONFIGURATION, WEBHOOK_NAME, RunningWebhook, webhook_configuration
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from test_webhook import create_deployment, deployment, fence, new_namespace


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def failing_open(ca_pem: bytes) -> dict[str, Any]:
    """kubefence's webhook configuration with failurePolicy Ignore, pointed at a loopback port
    nobody listens on: the API server fails open on every request it covers."""
    dead = f"https://127.0.0.1:{free_port()}/validate"
    return webhook_configuration(CONFIGURATION, WEBHOOK_NAME, dead, ca_pem, failure_policy="Ignore")


def reconfigure(
    kube: client.ApiClient, hook: RunningWebhook, manifest: dict[str, Any] | None
) -> None:
    """Replace kubefence's webhook configuration with `manifest` (None: leave it deleted)."""
    hook.unregister(kube)
    if manifest is not None:
        client.AdmissionregistrationV1Api(kube).create_validating_webhook_configuration(manifest)


def eventually_created(kube: client.ApiClient, namespace: str, timeout: float = 30.0) -> None:
    """Retry a Deployment create until the API server lets it through without kubefence."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            create_deployment(kube, namespace)
            return
        except ApiException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def await_configuration(
    kube: client.ApiClient, audit_log: Path, namespace: str, *, failing_open: bool
) -> None:
    """Wait until the API server applies the webhook configuration just written.

    It reads configurations through an informer, so a change takes effect a little later: a
    dry-run Deployment create in `namespace` is the marker, and its audit event tells whether the
    API server called (and failed open on) the dead webhook or called no webhook at all.
    """
    deadline = time.monotonic() + 30
    api = client.AppsV1Api(kube)
    while True:
        try:
            _, _, headers = api.create_namespaced_deployment_with_http_info(
                namespace, deployment(), dry_run="All"
            )
        except ApiException:  # kubefence itself still answers (and denies): not yet
            headers = None
        if headers is not None:
            audit_id = headers.get("Audit-Id", "")
            if failed_open(audit_log, audit_id) is failing_open:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"the API server did not apply the configuration in {namespace}")
        time.sleep(0.2)


def failed_open(audit_log: Path, audit_id: str) -> bool | None:
    """Whether the request's ResponseComplete event carries a failed-open annotation."""
    for line in audit_log.read_text(encoding="utf-8").splitlines():
        event = orjson.loads(line)
        if event.get("auditID") == audit_id and event.get("stage") == "ResponseComplete":
            annotations = event.get("annotations") or {}
            return any(k.startswith("failed-open.") for k in annotations)
    return None


def test_correlate_reports_fail_open_and_dodged_bypasses(
    control_plane: ControlPlane, kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    since = now()
    joined_ns = new_namespace(kube, "trail")
    fence(kube, joined_ns)
    open_ns = new_namespace(kube, "trail-open")  # not fenced: anything created here is a bypass
    down_ns = new_namespace(kube, "trail-down")
    try:
        reconfigure(kube, webhook, failing_open(webhook.ca_pem))
        audit_log = control_plane.audit_log_path
        await_configuration(kube, audit_log, open_ns, failing_open=True)
        eventually_created(kube, open_ns)  # kubefence is "down": the API server fails open
        reconfigure(kube, webhook, None)
        await_configuration(kube, audit_log, down_ns, failing_open=False)
        eventually_created(kube, down_ns)  # no configuration at all: dodged
        until = now()
    finally:
        webhook.register(kube)
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "correlate",
         "--audit-log", str(control_plane.audit_log_path), "--decision-log", str(webhook.decision_log),
         "--config", str(webhook.config_path), "--since", since, "--until", until, "--format", "json"],
        capture_output=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr.decode()  # exit 1: there are bypasses
    report = orjson.loads(result.stdout)
    by_namespace = {(b["namespace"], b["resource"]): b for b in report["bypasses"]}
    fail_open = by_namespace[(open_ns, "apps/deployments")]
    assert fail_open["cause"] == "fail-open"
    assert fail_open["webhook"] == WEBHOOK_NAME
    assert by_namespace[(down_ns, "apps/deployments")]["cause"] == "dodged"
    assert report["summary"]["joined"] >= 2  # the namespace and the policy of joined_ns
    assert report["summary"]["auditGaps"] == 0
