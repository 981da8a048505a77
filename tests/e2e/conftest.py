"""Fixtures of the end-to-end tests: a cluster to test against, and a client for it.

The cluster is, in order of preference:
- the one named by ``KUBEFENCE_E2E_KUBECONFIG`` (kind, or any cluster; its audit log is read
  from ``KUBEFENCE_E2E_AUDIT_LOG`` when that is set, else tests that need it skip);
- a local etcd + kube-apiserver (tests/e2e/controlplane.py) built by
  hack/build-control-plane.sh. Without those binaries the tests skip, or fail when
  ``KUBEFENCE_E2E=1`` (CI sets it, so a missing build cannot pass silently).

Every test under tests/e2e gets the ``e2e`` marker: ``pytest -m "not e2e"`` leaves them out.

The cluster tier (tests/e2e/cluster.py: controllers, scheduler, kwok's fake Nodes) starts once a
session, for the tests that use the ``cluster`` or ``fenced_cluster`` fixture; those live in
``test_cluster_*.py``, whose tests get the ``cluster`` marker: ``pytest -m "not cluster"`` leaves
them out.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import Cluster, FencedCluster, missing_cluster_binaries
from controlplane import ControlPlane, ExternalCluster, bin_dir, missing_binaries
from kubefence_process import AUDIT_POLICY, RunningWebhook
from kubernetes import client, config

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.e2e)
            if item.path.name.startswith("test_cluster_"):
                item.add_marker(pytest.mark.cluster)


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test() -> Iterator[None]:
    """Collect garbage once the test's other fixtures (and its event loop) are gone: a socket or
    transport a test left open is reported against that test, not against whichever later one a
    garbage collection happens to run in. (Autouse: set up first, so torn down last.)"""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane | ExternalCluster]:
    external = os.environ.get("KUBEFENCE_E2E_KUBECONFIG")
    if external:
        audit = os.environ.get("KUBEFENCE_E2E_AUDIT_LOG")
        yield ExternalCluster(Path(external), Path(audit) if audit else None)
        return
    missing = missing_binaries()
    if missing:
        message = (
            f"no local control plane in {bin_dir()} (missing"
            f" {', '.join(p.name for p in missing)}): run hack/build-control-plane.sh,"
            " or set KUBEFENCE_E2E_KUBECONFIG"
        )
        if os.environ.get("KUBEFENCE_E2E") == "1":
            pytest.fail(message)
        pytest.skip(message)
    cp = ControlPlane()
    try:
        cp.start()
    except BaseException:
        print(f"control plane logs kept in {cp.log_dir}", file=sys.stderr)
        cp.stop()
        raise
    try:
        yield cp
    finally:
        cp.stop()
        if request.session.testsfailed or os.environ.get("KUBEFENCE_E2E_KEEP") == "1":
            print(f"\ncontrol plane logs kept in {cp.log_dir}", file=sys.stderr)
        else:
            cp.cleanup()


@pytest.fixture(scope="session")
def kube(control_plane: ControlPlane | ExternalCluster) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(control_plane.kubeconfig_path))
    try:
        yield api
    finally:
        api.close()


@pytest.fixture(scope="session")
def webhook(
    control_plane: ControlPlane | ExternalCluster,
    kube: client.ApiClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningWebhook]:
    """kubefence serving the cluster live, registered with a real ValidatingWebhookConfiguration."""
    if not getattr(control_plane, "local", False):
        pytest.skip(
            "the registered-webhook suite runs kubefence on loopback: local control plane only"
        )
    work = tmp_path_factory.mktemp("kubefence")
    hook = RunningWebhook.start(work, control_plane.kubeconfig_path, AUDIT_POLICY)
    try:
        hook.register(kube)
        yield hook
    finally:
        hook.unregister(kube)
        hook.stop()
        if hook.returncode != 0:
            print(f"\nkubefence exited {hook.returncode}; logs in {hook.work}", file=sys.stderr)


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The cluster tier, started once a session: its own etcd and API server (not
    ``control_plane``'s), kube-controller-manager, kube-scheduler and kwok with three fake
    Nodes. Local only; a missing binary skips, or fails under ``KUBEFENCE_E2E=1``."""
    if os.environ.get("KUBEFENCE_E2E_KUBECONFIG"):
        pytest.skip("the cluster tier runs its own local processes, not an external cluster")
    missing = missing_cluster_binaries()
    if missing:
        message = (
            f"no cluster tier in {bin_dir()} (missing {', '.join(p.name for p in missing)}):"
            " run hack/build-control-plane.sh"
        )
        if os.environ.get("KUBEFENCE_E2E") == "1":
            pytest.fail(message)
        pytest.skip(message)
    c = Cluster()
    try:
        c.start()
    except BaseException:
        print(f"cluster logs kept in {c.log_dir}", file=sys.stderr)
        c.stop()
        raise
    print(f"\ncluster tier started in {c.start_seconds:.1f}s", file=sys.stderr)
    if not c.tunnels:
        print(
            "\ncluster tier: this host has no non-loopback IPv4 address (`ip -4 addr`), so kwok"
            " serves no kubelet API: exec, attach, logs and port-forward tests skip",
            file=sys.stderr,
        )
    try:
        yield c
    finally:
        c.stop()
        if request.session.testsfailed or os.environ.get("KUBEFENCE_E2E_KEEP") == "1":
            print(f"\ncluster logs kept in {c.log_dir}", file=sys.stderr)
        else:
            c.cleanup()


@pytest.fixture(scope="session")
def fenced_cluster(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FencedCluster]:
    """The cluster tier with kubefence (enforce, the e2e audit policy) serving it as a host
    process, registered by the chart's own ValidatingWebhookConfiguration pointed at its URL."""
    fenced = FencedCluster.start(cluster, tmp_path_factory.mktemp("kubefence-cluster"))
    try:
        yield fenced
    finally:
        fenced.stop()
        if fenced.hook.returncode not in (0, None):
            print(f"\nkubefence exited {fenced.hook.returncode}; logs in {fenced.hook.work}")
