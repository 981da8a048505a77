"""A Terminating namespace exempts only the namespace controller's deletions, through the real API
server: its Pods may run out a long grace period, so the tunnels into them are judged there as
anywhere. This control plane runs no namespace controller, so a deleted namespace stays
Terminating with its Pods: what a long grace period looks like from the API server.
"""

from __future__ import annotations

import contextlib
import time

import pytest
from controlplane import ControlPlane
from kubefence_process import RunningWebhook, kubectl
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from test_tunnels import DENIED, fixed_namespace, pod_in, raw

DYING = "tunnel-dying"  # the audit policy leaves its tunnels unrecorded, as tunnel-blind's


CLEANER = "system:serviceaccount:kube-system:namespace-controller"


def dying_namespace_with_a_pod(
    control_plane: ControlPlane, kube: client.ApiClient, webhook: RunningWebhook
) -> str:
    core = client.CoreV1Api(kube)
    phase = ""
    with contextlib.suppress(ApiException):  # 404: not made yet
        phase = core.read_namespace(DYING).status.phase
    if phase != "Terminating":
        fixed_namespace(kube, DYING)
        pod_in(kube, DYING, "web")
        core.delete_namespace(DYING)
    # Wait until the webhook's view has it Terminating: the namespace controller's (dry-run)
    # delete of the fence is then exempt as such.
    deadline = time.monotonic() + 15
    while True:
        kubectl(
            control_plane.kubeconfig_path,
            "delete", "networkpolicy", "default-deny", "-n", DYING,
            "--dry-run=server", f"--as={CLEANER}",
        )  # fmt: skip
        if any(
            d.get("exempt") == f'namespace "{DYING}" is terminating'
            for d in webhook.decisions()
            if d["namespace"] == DYING
        ):
            return DYING
        if time.monotonic() > deadline:
            pytest.fail(f"the webhook never saw namespace {DYING} Terminating")
        time.sleep(0.3)


def test_tunnels_into_a_terminating_namespace_are_judged_as_anywhere(
    control_plane: ControlPlane, kube: client.ApiClient, webhook: RunningWebhook
) -> None:
    namespace = dying_namespace_with_a_pod(control_plane, kube, webhook)
    status, message = raw(control_plane, "GET", f"/api/v1/namespaces/{namespace}/pods/web/proxy/")
    assert status == 403, message
    assert DENIED in message
    assert f'CONNECT of pods/proxy in namespace "{namespace}"' in message
    result = kubectl(
        control_plane.kubeconfig_path,
        "debug", "web", "-n", namespace,
        "--image=registry.example/debug:1", "-c", "debugger", "--attach=false",
    )  # fmt: skip
    assert result.returncode != 0
    assert DENIED in result.stderr
    assert "UPDATE of pods/ephemeralcontainers" in result.stderr
    decided = [
        d
        for d in webhook.decisions()
        if d["namespace"] == namespace and d["subresource"] in ("proxy", "ephemeralcontainers")
    ]
    assert decided
    assert {d["decision"] for d in decided} == {"deny"}
    assert all("exempt" not in d for d in decided)
