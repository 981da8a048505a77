"""Trust in labels through the real API server: `kubectl label ns`, a namespace created with the
label, or the label set through the `status` subresource, any of which lets a namespace into an
allow rule keyed on a namespace label, gets kubefence's warning (rule `namespace-labels`); the
finalize call that ends a namespace's deletion reaches kubefence and is allowed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from controlplane import ControlPlane
from kubefence_process import RunningWebhook, kubectl
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from test_webhook import fence, new_namespace


def trusting_policy(namespace: str, key: str) -> dict[str, object]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "from-monitoring", "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": {"app": "metrics"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {key: "monitoring"}}}]}],
        },
    }


def test_labelling_a_namespace_into_a_trusting_rule_is_warned(
    control_plane: ControlPlane, kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    app = new_namespace(kube, "kf-lbl-app")
    fence(kube, app)
    key = f"team-{time.time_ns() % 10**8}"  # only this run's policy keys on it
    client.NetworkingV1Api(kube).create_namespaced_network_policy(app, trusting_policy(app, key))
    target = new_namespace(kube, "kf-lbl-x")
    config = control_plane.kubeconfig_path
    # The policy and the label, whole: the warning line is cut at 120 characters after them.
    expected = f"label {key}=monitoring: NetworkPolicy {app}/from-monitoring now trusts namespace"

    # The informer sees the policy within moments: label, and take the label off again, until the
    # warning comes (each try is a real label change, judged on the view of that moment).
    deadline = time.monotonic() + 15
    while True:
        labelled = kubectl(config, "label", "ns", target, f"{key}=monitoring")
        assert labelled.returncode == 0, labelled.stderr
        if expected in labelled.stderr:
            break
        assert time.monotonic() < deadline, f"no warning; kubectl said: {labelled.stderr!r}"
        removed = kubectl(config, "label", "ns", target, f"{key}-")
        assert removed.returncode == 0, removed.stderr
        time.sleep(0.2)
    assert f"Warning: {expected}" in labelled.stderr
    assert (
        client.CoreV1Api(kube).read_namespace(target).metadata.labels[key] == "monitoring"
    )  # warn mode: the change went through

    # Already inside, another label changes nothing about who the rule trusts: no warning.
    other = kubectl(config, "label", "ns", target, "owner=someone")
    assert other.returncode == 0, other.stderr
    assert "NetworkPolicy" not in other.stderr
    # A label no rule keys on, on a fresh namespace: no warning either.
    fresh = new_namespace(kube, "kf-lbl-y")
    unrelated = kubectl(config, "label", "ns", fresh, f"{key}-other=monitoring")
    assert unrelated.returncode == 0, unrelated.stderr
    assert "Warning" not in unrelated.stderr


def namespace_manifest(name: str, labels: dict[str, str]) -> str:
    return orjson.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    ).decode()


def trusting_app(kube: client.ApiClient) -> tuple[str, str]:
    """A fenced namespace with an allow rule keyed on a label only this run uses: (app, key)."""
    app = new_namespace(kube, "kf-lbl-app")
    fence(kube, app)
    key = f"team-{time.time_ns() % 10**8}"
    client.NetworkingV1Api(kube).create_namespaced_network_policy(app, trusting_policy(app, key))
    return app, key


def wait_until_trusted(config: Path, key: str, expected: str) -> None:
    """Until kubefence's view holds the policy: a dry-run create with the label is warned."""
    deadline = time.monotonic() + 15
    while True:
        probe = f"kf-lbl-probe-{time.time_ns() % 10**8}"
        tried = kubectl(
            config,
            "create",
            "--dry-run=server",
            "-f",
            "-",
            stdin=namespace_manifest(probe, {key: "monitoring"}),
        )
        assert tried.returncode == 0, tried.stderr
        if expected in tried.stderr:
            return
        assert time.monotonic() < deadline, f"no warning; kubectl said: {tried.stderr!r}"
        time.sleep(0.2)


def decisions_about(webhook: RunningWebhook, name: str, subresource: str) -> list[dict[str, Any]]:
    """kubefence's decisions on `name`'s subresource, once the log has at least one."""
    deadline = time.monotonic() + 10
    while True:
        found = [
            d for d in webhook.decisions() if d["name"] == name and d["subresource"] == subresource
        ]
        if found:
            return found
        assert time.monotonic() < deadline, f"no decision on {name}/{subresource} logged"
        time.sleep(0.1)


def test_creating_or_relabelling_through_status_into_a_trusting_rule_is_warned(
    control_plane: ControlPlane, kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    app, key = trusting_app(kube)
    config = control_plane.kubeconfig_path
    # Whole: the line is cut at 120 characters after them, in the namespace's name.
    warned = f"label {key}=monitoring: NetworkPolicy {app}/from-monitoring now trusts namespace"
    wait_until_trusted(config, key, warned)

    # A namespace created with the label: warned, and created (warn mode).
    created = f"kf-lbl-new-{time.time_ns() % 10**8}"
    made = kubectl(
        config, "create", "-f", "-", stdin=namespace_manifest(created, {key: "monitoring"})
    )
    assert made.returncode == 0, made.stderr
    assert f"Warning: {warned}" in made.stderr
    core = client.CoreV1Api(kube)
    assert core.read_namespace(created).metadata.labels[key] == "monitoring"

    # The same label set through the status subresource: the API server keeps it, and warns.
    target = new_namespace(kube, "kf-lbl-st")
    patch = orjson.dumps({"metadata": {"labels": {key: "monitoring"}}}).decode()
    through_status = kubectl(
        config, "patch", "namespace", target, "--subresource=status", "--type=merge", "-p", patch
    )
    assert through_status.returncode == 0, through_status.stderr
    assert f"Warning: {warned}" in through_status.stderr
    assert core.read_namespace(target).metadata.labels[key] == "monitoring"
    (decided,) = decisions_about(webhook, target, "status")
    assert decided["decision"] == "warn"
    assert [(r["id"], r["result"]) for r in decided["rules"]] == [("namespace-labels", "fail")]


def test_a_namespace_deletion_still_completes_its_finalize_call(
    kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    core = client.CoreV1Api(kube)
    leaving = new_namespace(kube, "kf-lbl-bye", labels={"team": "anything"})
    core.delete_namespace(leaving)
    # This control plane runs no namespace controller: do what it does once the namespace is
    # empty, a PUT to /finalize with the kubernetes finalizer removed and the labels as they are.
    terminating = core.read_namespace(leaving)
    assert terminating.status.phase == "Terminating"
    assert terminating.spec.finalizers == ["kubernetes"]
    terminating.spec.finalizers = []
    core.replace_namespace_finalize(leaving, terminating)  # raises if the webhook denied it

    # With no finalizer left the update deletes the namespace (upstream
    # ShouldDeleteNamespaceDuringUpdate): it is gone when the call returns.
    with pytest.raises(ApiException) as gone:
        core.read_namespace(leaving)
    assert gone.value.status == 404
    # The call reached kubefence (registered) and was allowed.
    (finalized,) = decisions_about(webhook, leaving, "finalize")
    assert finalized["allowed"] is True
