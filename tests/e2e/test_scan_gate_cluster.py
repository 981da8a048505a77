"""`kubefence scan --fix | kubectl apply -f -` against a real kube-apiserver under `set -o
pipefail`: the pipeline exits 0 and kubectl accepts every policy (a server-side dry run, so other
tests' namespaces are left as they are)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from controlplane import ControlPlane, ExternalCluster
from test_chart_cluster import kubectl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chart"))
from helmchart import tool  # the chart's helper, one folder over

Cluster = ControlPlane | ExternalCluster
OPEN = "kf-gate-open"


@pytest.fixture(scope="module")
def cluster(control_plane: Cluster) -> Cluster:
    """The control plane with one namespace that has no fence: --fix has something to print."""
    if kubectl(control_plane, "get", "namespace", OPEN, check=False).returncode != 0:
        kubectl(control_plane, "create", "namespace", OPEN)
    return control_plane


def test_fix_piped_into_kubectl_apply_passes_under_pipefail(cluster: Cluster) -> None:
    binary = tool("kubectl")
    assert binary is not None
    kubeconfig = str(cluster.kubeconfig_path)
    scan = f"{sys.executable} -m webhook scan --kubeconfig {kubeconfig} --fix"
    apply = f"{binary} --kubeconfig {kubeconfig} apply --dry-run=server -f -"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{scan} | {apply}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert (
        "networkpolicy.networking.k8s.io/kubefence-default-deny created (server dry run)" in lines
    )
    assert all(line.endswith("(server dry run)") for line in lines), done.stdout
