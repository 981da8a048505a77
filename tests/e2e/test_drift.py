"""The drift watch through a real API server: edits to kubefence's own webhook configuration,
admission policy and binding, which no admission control ever sees, show up in its log.

A kubefence process of its own (not registered: the webhook configuration it watches selects no
namespace, so the API server never calls it) is given a `drift` section on a config reload: the
configuration needs the process's URL and CA, known only once it runs. Every wait polls the log.
"""

from __future__ import annotations

import ssl
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane import ControlPlane, ExternalCluster
from kubefence_process import AUDIT_POLICY, WEBHOOK_NAME, RunningWebhook, webhook_configuration
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from webhook import certs

NAME = "kubefence-drift-e2e"  # the webhook configuration, the policy and the binding
VWC, VAP, BINDING = (
    "ValidatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
)
NOWHERE = {"matchLabels": {"kubefence.io/drift-e2e": "no-namespace-has-this"}}
WAIT = 20.0  # seconds; the config is polled every 2s, watch events arrive in milliseconds


def admission_policy() -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": VAP,
        "metadata": {"name": NAME},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["configmaps"],
                    }
                ]
            },
            "validations": [{"expression": "true"}],
        },
    }


def binding() -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": BINDING,
        "metadata": {"name": NAME},
        "spec": {
            "policyName": NAME,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": NOWHERE},
        },
    }


def delete_all(api: client.AdmissionregistrationV1Api) -> None:
    for delete in (
        api.delete_validating_webhook_configuration,
        api.delete_validating_admission_policy_binding,
        api.delete_validating_admission_policy,
    ):
        try:
            delete(NAME)
        except ApiException as exc:
            if exc.status != 404:
                raise


def wait_for(
    hook: RunningWebhook, event: str, match: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The first `event` line of the process's log that `match` accepts, polled for."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = [line for line in hook.events(event) if match(line)]
        if found:
            return found[0]
        if hook.returncode is not None:
            raise AssertionError(f"kubefence exited {hook.returncode}: {hook.stderr_tail()}")
        time.sleep(0.05)
    seen = hook.events("webhook.drift") + hook.events("webhook.drift_resolved")
    raise AssertionError(f"no {event} line within {WAIT}s; drift lines: {seen}")


def about(kind: str, paths: list[str]) -> Callable[[dict[str, Any]], bool]:
    return lambda line: line["object"] == kind and line["name"] == NAME and line["paths"] == paths


def drift_gauge(hook: RunningWebhook, kind: str) -> str:
    context = ssl.create_default_context(cadata=hook.ca_pem.decode())
    with urllib.request.urlopen(f"{hook.url}/metrics", context=context, timeout=5) as response:
        text: str = response.read().decode()
    series = f'kubefence_webhook_drift{{name="{NAME}",object="{kind}"}} '
    values = [line.removeprefix(series) for line in text.splitlines() if line.startswith(series)]
    assert len(values) == 1, text
    return values[0]


@pytest.fixture
def watched(
    control_plane: ControlPlane | ExternalCluster, kube: client.ApiClient, tmp_path: Path
) -> Iterator[tuple[RunningWebhook, client.AdmissionregistrationV1Api]]:
    """A kubefence process watching a webhook configuration, a policy and a binding it matches."""
    api = client.AdmissionregistrationV1Api(kube)
    delete_all(api)
    hook = RunningWebhook.start(tmp_path, control_plane.kubeconfig_path, AUDIT_POLICY)
    try:
        manifest = webhook_configuration(
            NAME, WEBHOOK_NAME, f"{hook.url}/validate", hook.ca_pem, namespace_selector=NOWHERE
        )
        api.create_validating_webhook_configuration(manifest)
        api.create_validating_admission_policy(admission_policy())
        api.create_validating_admission_policy_binding(binding())
        assert hook.events("drift_watch.listed") == []  # no drift section yet: nothing watched
        drift = {
            "webhookConfiguration": NAME,
            "admissionPolicy": NAME,
            "binding": NAME,
            "expected": manifest["webhooks"],
        }
        with hook.config_path.open("a") as config:
            config.write(yaml.safe_dump({"drift": drift}))
        for kind in (VWC, VAP, BINDING):
            wait_for(hook, "drift_watch.listed", lambda line, k=kind: line["object"] == k)
        yield hook, api
    finally:
        delete_all(api)
        hook.stop()


def test_edits_and_deletions_of_the_admission_objects_are_reported(
    watched: tuple[RunningWebhook, client.AdmissionregistrationV1Api],
) -> None:
    hook, api = watched
    assert all(line["found"] for line in hook.events("drift_watch.listed"))
    assert (
        hook.events("webhook.drift") == []
    )  # what the API server serves matches, defaults and all
    assert drift_gauge(hook, VWC) == "0.0"
    failure_policy = f"webhooks[{WEBHOOK_NAME}].failurePolicy"

    def patch(path: str, value: Any) -> None:
        api.patch_validating_webhook_configuration(
            NAME, [{"op": "replace", "path": f"/webhooks/0/{path}", "value": value}]
        )

    patch("failurePolicy", "Ignore")
    drift = wait_for(hook, "webhook.drift", about(VWC, [failure_policy]))
    assert drift["level"] == "warning"
    assert drift["resource_version"]
    assert drift_gauge(hook, VWC) == "1.0"

    patch("failurePolicy", "Fail")
    wait_for(hook, "webhook.drift_resolved", about(VWC, []))
    assert drift_gauge(hook, VWC) == "0.0"

    other_ca, _ = certs.generate_ca()
    patch("clientConfig/caBundle", certs.ca_bundle_b64(other_ca))
    wait_for(hook, "webhook.drift", about(VWC, [f"webhooks[{WEBHOOK_NAME}].clientConfig.caBundle"]))

    api.delete_validating_webhook_configuration(NAME)
    wait_for(hook, "webhook.drift", about(VWC, ["(deleted)"]))

    api.delete_validating_admission_policy_binding(NAME)
    wait_for(hook, "webhook.drift", about(BINDING, ["(deleted)"]))
    assert drift_gauge(hook, BINDING) == "1.0"
    assert [line["object"] for line in hook.events("webhook.drift")] == [VWC, VWC, VWC, BINDING]
    assert not any(line["object"] == VAP for line in hook.events("webhook.drift_resolved"))
