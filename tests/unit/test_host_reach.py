"""Rule `host-network` beyond hostNetwork: hostPID with privileges, and hostPaths that reach the node.

Every case runs in a fenced namespace, where only `host-network` can refuse the workload.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from objects import deny_all, parse, pod_spec, workload_review

from webhook.cluster.view import StaticView, namespace_facts
from webhook.config import parse_settings
from webhook.decide import Decision, decide
from webhook.errors import ConfigError
from webhook.hostreach import normalise_path
from webhook.netpol import analyse_policy
from webhook.settings import Mode, Settings

FENCED = StaticView([namespace_facts("team", [analyse_policy(deny_all())])])


def settings(text: str = "") -> Settings:
    return parse_settings(text, "config.yaml", Path())


def container(name: str = "app", **security: Any) -> dict[str, Any]:
    return {"name": name, "image": "registry.example/app:1", "securityContext": security}


def pod(kind: str = "Pod", config: str = "", **spec: Any) -> Decision:
    return decide(parse(workload_review(kind, spec=pod_spec(**spec))), FENCED, settings(config))


# --- hostPID with privileges ------------------------------------------------------------------


def test_host_pid_with_a_privileged_container_is_denied_naming_both_fields() -> None:
    decision = pod(hostPID=True, containers=[container(privileged=True)])
    assert decision.verdict == "deny"
    assert decision.annotations["rules"] == "host-network"
    assert (
        'Pod "app" sets spec.hostPID with spec.containers[0].securityContext.privileged'
        in decision.message
    )
    assert "nsenter -t 1 -n" in decision.message


@pytest.mark.parametrize("capability", ["SYS_ADMIN", "sys_admin", "CAP_SYS_ADMIN", "ALL", "all"])
def test_host_pid_with_sys_admin_in_an_init_container_is_denied(capability: str) -> None:
    init = container("init", capabilities={"add": ["NET_BIND_SERVICE", capability]})
    decision = pod(hostPID=True, initContainers=[init])
    assert decision.verdict == "deny"
    assert "spec.initContainers[0].securityContext.capabilities.add[1]" in decision.message


def test_the_field_is_named_under_the_workloads_own_pod_spec() -> None:
    decision = pod("CronJob", hostPID=True, containers=[container(privileged=True)])
    assert decision.verdict == "deny"
    assert (
        "spec.jobTemplate.spec.template.spec.hostPID with "
        "spec.jobTemplate.spec.template.spec.containers[0].securityContext.privileged"
        in decision.message
    )


@pytest.mark.parametrize("capability", ["SYS_PTRACE", "cap_sys_ptrace"])
def test_host_pid_with_sys_ptrace_is_denied(capability: str) -> None:
    decision = pod(hostPID=True, containers=[container(capabilities={"add": [capability]})])
    assert decision.verdict == "deny"
    assert "inject code into the node's processes" in decision.message
    assert "spec.containers[0].securityContext.capabilities.add[0]" in decision.message


def test_a_privileged_container_is_named_once() -> None:
    decision = pod(hostPID=True, containers=[container(privileged=True)])
    assert len(decision.failed) == 1
    # With the nsenter check off, the same container is still one that can ptrace.
    ptrace_only = pod(
        "Pod", "hostNetwork: {hostPID: off}", hostPID=True, containers=[container(privileged=True)]
    )
    assert ptrace_only.verdict == "deny"
    assert "SYS_PTRACE" in ptrace_only.message


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"hostPID": True}, id="hostPID alone"),
        pytest.param({"containers": [container(privileged=True)]}, id="privileged alone"),
        pytest.param(
            {"hostPID": True, "containers": [container(capabilities={"add": ["NET_ADMIN"]})]},
            id="hostPID with another capability",
        ),
        pytest.param(
            {"hostPID": False, "containers": [container(capabilities={"add": ["SYS_ADMIN"]})]},
            id="SYS_ADMIN without hostPID",
        ),
    ],
)
def test_what_does_not_reach_the_node_passes(spec: dict[str, Any]) -> None:
    assert pod(**spec).verdict == "allow"


def test_each_host_pid_check_has_its_own_mode() -> None:
    spec = {"hostPID": True, "containers": [container(capabilities={"add": ["SYS_ADMIN"]})]}
    assert pod("Pod", "hostNetwork: {hostPID: warn}", **spec).verdict == "warn"
    ptrace = {"hostPID": True, "containers": [container(capabilities={"add": ["SYS_PTRACE"]})]}
    assert pod("Pod", "hostNetwork: {hostPIDPtrace: audit}", **ptrace).verdict == "audit"
    override = "overrides: [{namespaces: [team], hostPID: off}]"
    assert pod("Pod", override, **spec).verdict == "allow"


# --- hostPath ---------------------------------------------------------------------------------


def host_path(path: str, kind: str = "Pod", config: str = "") -> Decision:
    volumes = [
        {"name": "data", "emptyDir": {}},
        {"name": "config", "configMap": {"name": "c"}},
        {"name": "host", "hostPath": {"path": path}},
    ]
    return pod(kind, config, volumes=volumes)


@pytest.mark.parametrize(
    ("path", "reaches"),
    [
        ("/proc", "/proc"),
        ("/proc/1/ns/net", "/proc"),
        ("/var/run/netns", "/var/run/netns"),
        ("/var/run/netns/../netns", "/var/run/netns"),
        ("/var/run//netns/", "/var/run/netns"),
        ("//var/run/netns", "/var/run/netns"),
        ("/var/run/./netns/cni-1234", "/var/run/netns"),
        ("/run/netns", "/run/netns"),
        ("/var", "/var/run/netns"),
        ("/run", "/run/netns"),
        ("/", "/"),
        ("//", "/"),
        ("/var/run/containerd/containerd.sock", "/var/run/containerd/containerd.sock"),
        ("/run/containerd", "/run/containerd/containerd.sock"),
        ("/var/run/crio/crio.sock", "/var/run/crio/crio.sock"),
        ("/var/run/docker.sock", "/var/run/docker.sock"),
        ("/run/docker.sock", "/run/docker.sock"),
        ("var/run/netns", "/var/run/netns"),
    ],
)
def test_a_host_path_that_reaches_the_node_is_denied(path: str, reaches: str) -> None:
    decision = host_path(path)
    assert decision.verdict == "deny", path
    assert decision.annotations["rules"] == "host-network"
    assert f'spec.volumes[2].hostPath.path "{path}" (reaches {reaches})' in decision.message


@pytest.mark.parametrize(
    "path", ["/var/log", "/data", "/var/lib/kubelet", "/procfs", "/var/run/netns2", "/etc/ssl"]
)
def test_other_host_paths_pass(path: str) -> None:
    assert host_path(path).verdict == "allow"


def test_a_deployments_host_path_names_its_template_field() -> None:
    decision = host_path("/proc", "Deployment")
    assert decision.verdict == "deny"
    assert 'spec.template.spec.volumes[2].hostPath.path "/proc"' in decision.message


def test_the_host_path_list_and_mode_come_from_the_config() -> None:
    listed = "hostNetwork: {hostPaths: [/srv/secret/, /opt//agent.sock]}"
    assert host_path("/srv").verdict == "allow"
    assert host_path("/srv", config=listed).verdict == "deny"
    assert host_path("/opt/agent.sock", config=listed).verdict == "deny"
    assert host_path("/proc", config=listed).verdict == "allow"  # the list replaces the default
    assert host_path("/proc", config="hostNetwork: {hostPath: warn}").verdict == "warn"
    assert host_path("/proc", config="hostNetwork: {hostPath: off}").verdict == "allow"


def test_host_paths_must_be_absolute() -> None:
    with pytest.raises(ConfigError) as caught:
        settings("hostNetwork: {hostPaths: [/proc, run/netns]}")
    assert str(caught.value) == (
        "config.yaml: hostNetwork.hostPaths[1]: must be an absolute path (starting with /)"
    )


def test_defaults_enforce_every_escape() -> None:
    defaults = settings()
    for key in ("hostNetwork", "hostPID", "hostPIDPtrace", "hostPath"):
        assert defaults.mode(key, "team") is Mode.ENFORCE, key
    assert "/var/run/netns" in defaults.host_paths


@pytest.mark.parametrize(
    ("raw", "normal"),
    [("//a//b/", "/a/b"), ("/a/./b/../c", "/a/c"), ("/..", "/"), ("a/b", "/a/b"), ("///a", "/a")],
)
def test_paths_are_normalised_as_the_kernel_resolves_them(raw: str, normal: str) -> None:
    assert normalise_path(raw) == normal
