"""Rule `host-network`: pods that reach the node's network walk around every NetworkPolicy.

What leads off the pod's network namespace or onto the node, taken from Pod Security Admission's
baseline checks (k8s.io/pod-security-admission/policy, v0.37.2: check_hostNamespaces.go,
check_privileged.go, check_capabilities_baseline.go, check_hostPathVolumes.go,
check_hostProbesAndhostLifecycle.go). Each finding has its own mode under `hostNetwork:` in the
config:
- `mode`: the pod template sets `hostNetwork: true`;
- `hostPort`: a container or init container binds a non-zero `hostPort` (default warn);
- `hostPID`: `hostPID: true` with a container (of any kind: init, app, ephemeral) that is
  privileged or adds SYS_ADMIN: it can `nsenter -t 1 -n` into the node's network namespace;
- `hostPIDPtrace`: `hostPID: true` with a container that can ptrace (SYS_PTRACE, ALL, or
  privileged when `hostPID` is off): it can inject code into the node's processes;
- `hostPath`: a hostPath volume at, above or below a path of `hostNetwork.hostPaths` (the node's
  network namespaces, `/proc`, `/`, the kubelet's, the container runtimes' and the network
  plugin's files and sockets, static Pod manifests);
- `otherHostPaths`: any other hostPath volume (default warn: PSA baseline refuses them all, but
  log collectors and node agents mount them);
- `privileged`: a privileged container of any kind, with or without hostPID: it has the node's
  devices and every capability, so it can mount the node's disk;
- `capabilities`: a container that adds a capability of `hostreach.NODE_CAPABILITIES` (or ALL);
- `probeHost`: a probe or lifecycle handler with a `host`: the kubelet connects there from the
  node's network namespace on the pod's behalf.
hostIPC (check_hostNamespaces.go) is not judged: it shares the node's System V IPC and POSIX
shared memory, not its network. A pod's `hostUsers: false` lifts no check: the baseline checks
followed here do not relax for it either.
Only `mode` reports a pass; the others report only what they find. Messages name the fields
(`spec.template.spec.containers[0].securityContext.privileged`). The UPDATE ratchet of
`webhook.workloads` applies: an ephemeral container added to a Pod is judged with the whole pod.
`findings` is the judgement itself, pure over a pod spec: `kubefence scan` reports running Pods
and workload templates with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from webhook.cluster.view import ClusterView
from webhook.hostreach import NODE_CAPABILITIES, Container, HostPathHit, containers, host_paths
from webhook.rules.result import HOST_NETWORK, RuleResult, passed
from webhook.settings import HOST_NETWORK_MODES, Mode, Settings
from webhook.subject import Subject

RULE = HOST_NETWORK
_OFF = Mode.OFF  # read once per finding kind per request: a module global is the cheap lookup
MODES = HOST_NETWORK_MODES


@dataclass(frozen=True, slots=True)
class Finding:
    """One way onto the node found in a pod spec: the mode key that governs it, the fields it
    names (the first is what it is about), the full text and the one-line warning."""

    key: str
    fields: tuple[str, ...]
    text: str
    warning: str


def check(subject: Subject, cluster: ClusterView, settings: Settings) -> tuple[RuleResult, ...]:
    request = subject.request
    workload = subject.workload
    if workload is None:
        return ()
    modes = {key: settings.mode(key, request.namespace) for key in MODES}
    active = [mode for mode in modes.values() if mode is not Mode.OFF]
    if not active:
        return ()
    if not workload.judged:
        return (passed(HOST_NETWORK, active[0], workload.why_not),)
    what = f'{request.kind.kind} "{subject.name}"'
    found = findings(what, workload.spec, workload.spec_path, modes, settings.host_paths)
    results = [
        RuleResult(HOST_NETWORK, modes[f.key], False, f.text, warning=f.warning) for f in found
    ]
    network_mode = modes["hostNetwork"]
    if network_mode is not Mode.OFF and not any(f.key == "hostNetwork" for f in found):
        results.insert(0, passed(HOST_NETWORK, network_mode, "no hostNetwork"))
    return tuple(results)


def findings(
    what: str,
    spec: Mapping[str, Any],
    spec_path: str,
    modes: Mapping[str, Mode],
    listed: Sequence[str],
) -> list[Finding]:
    """Every finding of the rule in a pod spec whose mode (by `MODES` key) is not off, in order.

    `what` names the object in messages (`Pod "web"`); `spec_path` is where the spec lies in it.
    """
    on = {key for key, mode in modes.items() if mode is not _OFF}
    found: list[Finding] = []
    if "hostNetwork" in on and spec.get("hostNetwork") is True:
        text = (
            f"{what} uses hostNetwork: its pods share the node's network and no "
            "NetworkPolicy applies to them"
        )
        found.append(Finding("hostNetwork", (f"{spec_path}.hostNetwork",), text, text))
    if "hostPort" in on:
        found += _host_ports(what, spec, spec_path)
    kinds = tuple(containers(spec, spec_path))
    if spec.get("hostPID") is True:
        found += _host_pid(what, spec_path, kinds, "hostPID" in on, "hostPIDPtrace" in on)
    # A container named by a hostPID finding is named again here: each finding has its own mode,
    # and turning one to warn must not let the other way onto the node pass silently.
    if "privileged" in on:
        found += _privileged(what, kinds)
    if "capabilities" in on:
        found += _capabilities(what, kinds)
    hits = host_paths(spec, spec_path, listed)
    if "hostPath" in on:
        found += _host_paths(what, [h for h in hits if h.listed])
    if "otherHostPaths" in on:
        found += _other_host_paths(what, [h for h in hits if not h.listed])
    if "probeHost" in on:
        found += _probe_hosts(what, kinds)
    return found


def _host_pid(
    what: str, spec_path: str, found: Sequence[Container], entering_on: bool, ptrace_on: bool
) -> list[Finding]:
    """hostPID with a container that can enter, or ptrace, the node's processes."""
    pid = f"{spec_path}.hostPID"
    results = []
    entering: Sequence[Container] = ()
    if entering_on:
        entering = [c for c in found if c.granting("SYS_ADMIN")]
        if entering:
            fields = _fields(entering, "SYS_ADMIN")
            text = (
                f"{what} sets {pid} with {', '.join(fields)}: a privileged or SYS_ADMIN "
                "container in the node's PID namespace can enter the node's network namespace "
                "(nsenter -t 1 -n), where no NetworkPolicy applies"
            )
            warning = (
                f"{what} sets hostPID with a privileged or SYS_ADMIN container "
                f"({', '.join(fields)})"
            )
            results.append(Finding("hostPID", (pid, *fields), text, warning))
    if ptrace_on:
        # A container already refused for entering is not named twice.
        tracing = [c for c in found if c not in entering and c.granting("SYS_PTRACE")]
        if tracing:
            fields = _fields(tracing, "SYS_PTRACE")
            text = (
                f"{what} sets {pid} with {', '.join(fields)}: a container with SYS_PTRACE in "
                "the node's PID namespace can inject code into the node's processes and so act "
                "on the node's network, where no NetworkPolicy applies"
            )
            warning = f"{what} sets hostPID with a SYS_PTRACE container ({', '.join(fields)})"
            results.append(Finding("hostPIDPtrace", (pid, *fields), text, warning))
    return results


def _fields(found: Sequence[Container], capability: str) -> tuple[str, ...]:
    return tuple(field for c in found for field in c.granting(capability))


def _privileged(what: str, found: Sequence[Container]) -> list[Finding]:
    """Privileged containers, hostPID or not (check_privileged.go): the runtime gives them the
    node's devices and every capability, unconfined, so one mounts the node's disk and writes a
    static Pod manifest, or enters the node's network namespace."""
    fields = tuple(f"{c.field}.securityContext.privileged" for c in found if c.privileged)
    if not fields:
        return []
    listed = ", ".join(fields)
    text = (
        f"{what} sets {listed}: a privileged container has the node's devices and every "
        "capability, so it can mount the node's disk and reach the node's network, where no "
        "NetworkPolicy applies (hostNetwork.privileged)"
    )
    return [Finding("privileged", fields, text, f"{what} runs a privileged container ({listed})")]


def _capabilities(what: str, found: Sequence[Container]) -> list[Finding]:
    """Added capabilities that act on the node's kernel or files (`NODE_CAPABILITIES`)."""
    added = [entry for c in found if c.added for entry in c.adding(NODE_CAPABILITIES)]
    if not added:
        return []
    described = "; ".join(
        f"{where} ({name}): "
        + (NODE_CAPABILITIES.get(name) or "every capability, SYS_ADMIN and SYS_MODULE among them")
        for where, name in added
    )
    text = (
        f"{what} adds {described}. These reach past the pod onto the node, where no "
        "NetworkPolicy applies (hostNetwork.capabilities)"
    )
    warning = f"{what} adds a capability that reaches the node: " + ", ".join(
        f"{where} ({name})" for where, name in added
    )
    return [Finding("capabilities", tuple(where for where, _ in added), text, warning)]


def _host_paths(what: str, hits: Sequence[HostPathHit]) -> list[Finding]:
    if not hits:
        return []
    fields = "; ".join(f'{h.field} "{h.path}" (reaches {h.listed})' for h in hits)
    text = (
        f"{what} mounts {fields}: a hostPath at, above or below the node's network namespaces, "
        "/proc, /, a static Pod manifest folder, or the kubelet's, a container runtime's or the "
        "network plugin's files and sockets reaches the node around every NetworkPolicy, "
        "read-only or not (hostNetwork.hostPaths)"
    )
    warning = f"{what} mounts a hostPath that reaches the node: " + ", ".join(
        f'"{h.path}"' for h in hits
    )
    return [Finding("hostPath", tuple(h.field for h in hits), text, warning)]


def _other_host_paths(what: str, hits: Sequence[HostPathHit]) -> list[Finding]:
    """hostPaths off the deny list: Pod Security baseline refuses every hostPath
    (check_hostPathVolumes.go); a writable one of the node's own files can run code there."""
    if not hits:
        return []
    fields = "; ".join(f'{h.field} "{h.path}"' for h in hits)
    text = (
        f"{what} mounts {fields}: a hostPath gives the pod the node's own files (not listed in "
        "hostNetwork.hostPaths; Pod Security baseline forbids every hostPath) "
        "(hostNetwork.otherHostPaths)"
    )
    warning = f"{what} mounts a hostPath of the node: " + ", ".join(f'"{h.path}"' for h in hits)
    return [Finding("otherHostPaths", tuple(h.field for h in hits), text, warning)]


def _probe_hosts(what: str, found: Sequence[Container]) -> list[Finding]:
    """A probe or lifecycle handler with a host (check_hostProbesAndhostLifecycle.go allows ""
    only): the kubelet, not the pod, dials it, from the node's network namespace."""
    hosts = [(where, host) for c in found for where, host in c.probe_hosts]
    if not hosts:
        return []
    fields = ", ".join(f"{where} {_quoted(host)}" for where, host in hosts)
    text = (
        f"{what} sets {fields}: the kubelet connects to that host from the node's network on "
        "the pod's behalf, where no NetworkPolicy applies; leave host unset to probe the pod "
        "(hostNetwork.probeHost)"
    )
    warning = f"{what} sets a probe or lifecycle host the kubelet dials from the node ({fields})"
    return [Finding("probeHost", tuple(where for where, _ in hosts), text, warning)]


def _quoted(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _host_ports(what: str, spec: Mapping[str, Any], spec_path: str) -> list[Finding]:
    found: list[tuple[str, str, int]] = []  # (field, container name, port)
    for key in ("initContainers", "containers"):
        items = spec.get(key)
        for i, container in enumerate(items if isinstance(items, list) else []):
            if not isinstance(container, Mapping):
                continue
            ports = container.get("ports")
            for j, port in enumerate(ports if isinstance(ports, list) else []):
                host_port = port.get("hostPort") if isinstance(port, Mapping) else None
                if isinstance(host_port, int) and not isinstance(host_port, bool) and host_port:
                    field = f"{spec_path}.{key}[{i}].ports[{j}].hostPort"
                    found.append((field, str(container.get("name", "?")), host_port))
    if not found:
        return []
    listed = ", ".join(f"{c}:{p}" for _, c, p in found)
    text = (
        f"{what} binds hostPort {listed}: traffic to the node's port reaches the pod "
        "around NetworkPolicies on some network plugins"
    )
    return [Finding("hostPort", tuple(f for f, _, _ in found), text, text)]
