"""Smoke test of the e2e cluster: it answers, it stores, and it audits."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from controlplane import ControlPlane, ExternalCluster, read_audit_log
from kubernetes import client


def test_version(control_plane: ControlPlane | ExternalCluster, kube: client.ApiClient) -> None:
    info = client.VersionApi(kube).get_code()
    if control_plane.local:
        assert info.git_version == "v1.37.2"
    assert info.major == "1"


def test_namespace_create_is_audited(
    control_plane: ControlPlane | ExternalCluster, kube: client.ApiClient
) -> None:
    name = f"kf-smoke-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        assert core.read_namespace(name).metadata.name == name
        if control_plane.audit_log_path is None:
            pytest.skip("no audit log for this cluster (set KUBEFENCE_E2E_AUDIT_LOG)")

        def matches(e: dict[str, Any]) -> bool:
            ref = e.get("objectRef") or {}
            return (
                e.get("verb") == "create"
                and ref.get("resource") == "namespaces"
                and ref.get("name") == name
                and e.get("stage") == "ResponseComplete"
            )

        # Blocking mode writes the event before the response; poll briefly for other backends.
        deadline = time.monotonic() + 10
        while not (
            found := [e for e in read_audit_log(control_plane.audit_log_path) if matches(e)]
        ):
            assert time.monotonic() < deadline, "no audit event for the namespace create"
            time.sleep(0.2)
        (event,) = found
        assert event["apiVersion"] == "audit.k8s.io/v1"
        assert event["kind"] == "Event"
        assert event["responseStatus"]["code"] == 201
        assert event["auditID"]
    finally:
        core.delete_namespace(name)
