"""Trust in labels through the real API server: `kubectl label ns` that lets a namespace into an
allow rule keyed on a namespace label gets kubefence's warning (rule `namespace-labels`)."""

from __future__ import annotations

import time

from controlplane import ControlPlane
from kubefence_process import RunningWebhook, kubectl
from kubernetes import client
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
