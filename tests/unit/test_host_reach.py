"""Rule `host-network` beyond hostNetwork: hostPID with privileges, privileged containers, added
capabilities, probe and lifecycle hosts, and hostPaths that reach the node.

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


def test_a_privileged_container_is_named_once_by_the_host_pid_checks() -> None:
    decision = pod(hostPID=True, containers=[container(privileged=True)])
    # Entering the node's network (hostPID) and being privileged: not also the ptrace finding.
    assert len(decision.failed) == 2
    assert "inject code" not in decision.message
    assert "a privileged container has the node's devices" in decision.message
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
        pytest.param({"containers": [container(privileged=False)]}, id="privileged false"),
        pytest.param(
            {"hostPID": True, "containers": [container(capabilities={"add": ["NET_ADMIN"]})]},
            id="hostPID with another capability",
        ),
        pytest.param(
            {"containers": [container(capabilities={"add": ["SYS_PTRACE"]})]},
            id="SYS_PTRACE without hostPID",
        ),
        pytest.param(
            {"initContainers": [container("istio-init", capabilities={"add": ["NET_ADMIN"]})]},
            id="a mesh init container's NET_ADMIN",
        ),
        pytest.param(
            {"containers": [container(capabilities={"add": ["NET_RAW", "CHOWN", "SETUID"]})]},
            id="NET_RAW and default capabilities",
        ),
        pytest.param({"hostIPC": True}, id="hostIPC shares no network"),
    ],
)
def test_what_does_not_reach_the_node_passes(spec: dict[str, Any]) -> None:
    assert pod(**spec).verdict == "allow"


def test_each_host_pid_check_has_its_own_mode() -> None:
    spec = {"hostPID": True, "containers": [container(capabilities={"add": ["SYS_ADMIN"]})]}
    # SYS_ADMIN is also a capability that reaches the node on its own: still denied for that.
    still = pod("Pod", "hostNetwork: {hostPID: warn}", **spec)
    assert still.verdict == "deny"
    assert "nsenter" not in still.message
    assert "(SYS_ADMIN): mount filesystems" in still.message
    both = "hostNetwork: {hostPID: warn, capabilities: warn}"
    assert pod("Pod", both, **spec).verdict == "warn"
    ptrace = {"hostPID": True, "containers": [container(capabilities={"add": ["SYS_PTRACE"]})]}
    assert pod("Pod", "hostNetwork: {hostPIDPtrace: audit}", **ptrace).verdict == "audit"
    override = "overrides: [{namespaces: [team], hostPID: off, capabilities: off}]"
    assert pod("Pod", override, **spec).verdict == "allow"


# --- privileged containers, with or without hostPID ------------------------------------------


@pytest.mark.parametrize("kind", ["initContainers", "containers", "ephemeralContainers"])
def test_a_privileged_container_without_host_pid_is_denied(kind: str) -> None:
    decision = pod(**{kind: [container(), container("root", privileged=True)]})
    assert decision.verdict == "deny"
    assert decision.annotations["rules"] == "host-network"
    assert (
        f'Pod "app" sets spec.{kind}[1].securityContext.privileged: a privileged container has '
        "the node's devices and every capability, so it can mount the node's disk"
    ) in decision.message


def test_a_deployments_privileged_container_names_its_template_field() -> None:
    decision = pod("Deployment", containers=[container(privileged=True)])
    assert decision.verdict == "deny"
    assert "spec.template.spec.containers[0].securityContext.privileged:" in decision.message


# --- added capabilities that reach the node ---------------------------------------------------


@pytest.mark.parametrize(
    ("written", "named", "how"),
    [
        ("SYS_ADMIN", "SYS_ADMIN", "mount filesystems"),
        ("sys_module", "SYS_MODULE", "load a kernel module"),
        ("CAP_SYS_RAWIO", "SYS_RAWIO", "raw I/O ports"),
        ("SYS_BOOT", "SYS_BOOT", "kexec_load"),
        ("DAC_READ_SEARCH", "DAC_READ_SEARCH", "open_by_handle_at"),
        ("BPF", "BPF", "load BPF programs"),
        ("all", "ALL", "every capability"),
    ],
)
def test_a_capability_that_reaches_the_node_is_denied_without_host_pid(
    written: str, named: str, how: str
) -> None:
    caps = {"add": ["NET_BIND_SERVICE", written]}
    decision = pod(initContainers=[container("init", capabilities=caps)])
    assert decision.verdict == "deny"
    assert (
        f"spec.initContainers[0].securityContext.capabilities.add[1] ({named}): {how}"
        in decision.message
    )
    assert "add[0]" not in decision.message


def test_sys_admin_with_the_hosts_namespace_files_is_denied_twice_over() -> None:
    """The issue's case: SYS_ADMIN plus Docker's netns folder enters the node's network."""
    admin = container(capabilities={"add": ["SYS_ADMIN"]})
    volumes = [{"name": "ns", "hostPath": {"path": "/var/run/docker/netns"}}]
    decision = pod(containers=[admin], volumes=volumes)
    assert decision.verdict == "deny"
    assert "spec.containers[0].securityContext.capabilities.add[0] (SYS_ADMIN)" in decision.message
    assert 'spec.volumes[0].hostPath.path "/var/run/docker/netns" (reaches /var/run/docker)' in (
        decision.message
    )


# --- probe and lifecycle hosts ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("handler", "action"),
    [
        (("livenessProbe",), "httpGet"),
        (("readinessProbe",), "tcpSocket"),
        (("startupProbe",), "httpGet"),
        (("livenessProbe",), "tcpSocket"),
        (("lifecycle", "postStart"), "httpGet"),
        (("lifecycle", "preStop"), "tcpSocket"),
    ],
)
@pytest.mark.parametrize("kind", ["initContainers", "containers", "ephemeralContainers"])
def test_a_probe_or_lifecycle_host_is_denied(
    handler: tuple[str, ...], action: str, kind: str
) -> None:
    probed = container()
    node: dict[str, Any] = probed
    for key in handler:
        node = node.setdefault(key, {})
    node[action] = {"port": 8080, "host": "169.254.169.254"}
    decision = pod(**{kind: [container(), probed]})
    assert decision.verdict == "deny"
    field = f"spec.{kind}[1].{'.'.join(handler)}.{action}.host"
    assert f'sets {field} "169.254.169.254": the kubelet connects to that host' in (
        decision.message
    )


@pytest.mark.parametrize(
    "probe",
    [
        pytest.param({"httpGet": {"port": 8080, "host": ""}}, id="host empty"),
        pytest.param({"httpGet": {"port": 8080}}, id="host unset"),
        pytest.param({"tcpSocket": {"port": 8080, "host": None}}, id="host null"),
        pytest.param({"grpc": {"port": 8080}}, id="grpc has no host"),
    ],
)
def test_a_probe_of_the_pod_itself_passes(probe: dict[str, Any]) -> None:
    probed = {**container(), "livenessProbe": probe, "lifecycle": {"preStop": probe}}
    assert pod(containers=[probed]).verdict == "allow"


def test_each_new_check_has_its_own_mode_globally_and_per_namespace() -> None:
    privileged = {"containers": [container(privileged=True)]}
    probed = {**container(), "readinessProbe": {"httpGet": {"port": 80, "host": "10.0.0.1"}}}
    admin = {"containers": [container(capabilities={"add": ["SYS_MODULE"]})]}
    assert pod("Pod", "hostNetwork: {privileged: warn}", **privileged).verdict == "warn"
    assert pod("Pod", "hostNetwork: {probeHost: audit}", containers=[probed]).verdict == "audit"
    assert pod("Pod", "hostNetwork: {capabilities: off}", **admin).verdict == "allow"
    override = "overrides: [{namespaces: [team], privileged: off, probeHost: warn}]"
    assert pod("Pod", override, **privileged).verdict == "allow"
    assert pod("Pod", override, containers=[probed]).verdict == "warn"
    elsewhere = "overrides: [{namespaces: [other], privileged: off}]"
    assert pod("Pod", elsewhere, **privileged).verdict == "deny"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "hostNetwork: {probeHost: maybe}",
            "config.yaml: hostNetwork.probeHost: must be one of enforce, warn, audit, off",
        ),
        (
            "overrides: [{namespaces: [team], otherHostPaths: no}]",
            "config.yaml: overrides[0].otherHostPaths: must be one of enforce, warn, audit, off",
        ),
        (
            "hostNetwork: {capabilities: [SYS_ADMIN]}",
            "config.yaml: hostNetwork.capabilities: must be one of enforce, warn, audit, off",
        ),
    ],
)
def test_a_wrong_mode_is_an_error_naming_the_file_and_field(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(text)
    assert str(caught.value) == error


def test_the_update_ratchet_applies_to_the_new_checks() -> None:
    privileged = pod_spec(containers=[container(privileged=True)])
    scaled = workload_review("Deployment", "UPDATE", spec=privileged, old_spec=privileged)
    assert decide(parse(scaled), FENCED, settings()).verdict == "allow"
    changed = workload_review("Deployment", "UPDATE", spec=privileged, old_spec=pod_spec())
    decision = decide(parse(changed), FENCED, settings())
    assert decision.verdict == "deny"
    assert "spec.template.spec.containers[0].securityContext.privileged:" in decision.message


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
        ("/var/run/containerd/containerd.sock", "/var/run/containerd"),
        ("/run/containerd", "/run/containerd"),
        ("/var/run/crio/crio.sock", "/var/run/crio"),
        ("/var/run/docker.sock", "/var/run/docker.sock"),
        ("/run/docker.sock", "/run/docker.sock"),
        ("var/run/netns", "/var/run/netns"),
        # the node's own control paths
        ("/etc/kubernetes/manifests", "/etc/kubernetes"),
        ("/etc", "/etc/kubernetes"),
        ("/opt/cni/bin", "/opt/cni/bin"),
        ("/opt", "/opt/cni/bin"),
        ("/etc/cni/net.d", "/etc/cni/net.d"),
        ("/var/lib/cni/networks", "/var/lib/cni"),
        ("/var/lib/kubelet", "/var/lib/kubelet"),
        ("/var/lib/kubelet/pods", "/var/lib/kubelet"),
        ("/var/lib", "/var/lib/kubelet"),
        ("/usr/libexec/kubernetes/kubelet-plugins/volume/exec", "/usr/libexec/kubernetes"),
        ("/var/run/docker/netns", "/var/run/docker"),
        ("/var/lib/containerd", "/var/lib/containerd"),
        ("/var/lib/docker/overlay2", "/var/lib/docker"),
        ("/var/run/cilium/cilium.sock", "/var/run/cilium"),
        ("/var/run/calico", "/var/run/calico"),
        ("/run/k3s/containerd/containerd.sock", "/run/k3s"),
        ("/var/lib/rancher/k3s/agent/pod-manifests", "/var/lib/rancher"),
    ],
)
def test_a_host_path_that_reaches_the_node_is_denied(path: str, reaches: str) -> None:
    decision = host_path(path)
    assert decision.verdict == "deny", path
    assert decision.annotations["rules"] == "host-network"
    assert f'spec.volumes[2].hostPath.path "{path}" (reaches {reaches})' in decision.message


def test_a_read_only_mount_of_a_listed_path_is_denied_all_the_same() -> None:
    """readOnly is on the volumeMount: a socket still connects, a token still reads."""
    mount = {"name": "kubelet", "mountPath": "/host", "readOnly": True}
    volumes = [{"name": "kubelet", "hostPath": {"path": "/var/lib/kubelet", "type": "Directory"}}]
    reader = {**container(), "volumeMounts": [mount]}
    decision = pod(containers=[reader], volumes=volumes)
    assert decision.verdict == "deny"
    assert 'spec.volumes[0].hostPath.path "/var/lib/kubelet" (reaches /var/lib/kubelet)' in (
        decision.message
    )


@pytest.mark.parametrize(
    "path", ["/var/log", "/data", "/procfs", "/var/run/netns2", "/etc/ssl", "/sys", "/dev"]
)
def test_other_host_paths_are_warned_naming_the_field(path: str) -> None:
    decision = host_path(path)
    assert decision.verdict == "warn", path
    assert decision.annotations["rules"] == "host-network"
    assert decision.warnings == (f'Pod "app" mounts a hostPath of the node: "{path}"',)
    assert f'spec.volumes[2].hostPath.path "{path}": a hostPath gives the pod' in (
        decision.failed[0].message
    )


def test_a_deployments_host_path_names_its_template_field() -> None:
    decision = host_path("/proc", "Deployment")
    assert decision.verdict == "deny"
    assert 'spec.template.spec.volumes[2].hostPath.path "/proc"' in decision.message


def test_the_host_path_list_and_mode_come_from_the_config() -> None:
    listed = "hostNetwork: {hostPaths: [/srv/secret/, /opt//agent.sock]}"
    assert host_path("/srv").verdict == "warn"  # another hostPath
    assert host_path("/srv", config=listed).verdict == "deny"
    assert host_path("/opt/agent.sock", config=listed).verdict == "deny"
    assert host_path("/proc", config=listed).verdict == "warn"  # the list replaces the default
    assert host_path("/proc", config="hostNetwork: {hostPath: warn}").verdict == "warn"
    assert host_path("/proc", config="hostNetwork: {hostPath: off}").verdict == "allow"
    assert host_path("/srv", config="hostNetwork: {otherHostPaths: enforce}").verdict == "deny"
    assert host_path("/srv", config="hostNetwork: {otherHostPaths: off}").verdict == "allow"


def test_host_paths_must_be_absolute() -> None:
    with pytest.raises(ConfigError) as caught:
        settings("hostNetwork: {hostPaths: [/proc, run/netns]}")
    assert str(caught.value) == (
        "config.yaml: hostNetwork.hostPaths[1]: must be an absolute path (starting with /)"
    )


def test_defaults_enforce_every_escape() -> None:
    defaults = settings()
    for key in (
        "hostNetwork",
        "hostPID",
        "hostPIDPtrace",
        "hostPath",
        "privileged",
        "capabilities",
        "probeHost",
    ):
        assert defaults.mode(key, "team") is Mode.ENFORCE, key
    assert defaults.mode("otherHostPaths", "team") is Mode.WARN
    assert defaults.mode("hostPort", "team") is Mode.WARN
    assert "/var/run/netns" in defaults.host_paths
    assert all(normalise_path(p) == p for p in defaults.host_paths)


@pytest.mark.parametrize(
    ("raw", "normal"),
    [("//a//b/", "/a/b"), ("/a/./b/../c", "/a/c"), ("/..", "/"), ("a/b", "/a/b"), ("///a", "/a")],
)
def test_paths_are_normalised_as_the_kernel_resolves_them(raw: str, normal: str) -> None:
    assert normalise_path(raw) == normal
