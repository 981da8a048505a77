"""Rule `host-network`: pods that reach the node's network walk around every NetworkPolicy.

Each finding has its own mode under `hostNetwork:` in the config:
- `mode`: the pod template sets `hostNetwork: true`;
- `hostPort`: a container or init container binds a non-zero `hostPort` (default warn);
- `hostPID`: `hostPID: true` with a container (of any kind: init, app, ephemeral) that is
  privileged or adds SYS_ADMIN: it can `nsenter -t 1 -n` into the node's network namespace;
- `hostPIDPtrace`: `hostPID: true` with a container that can ptrace (SYS_PTRACE, ALL, or
  privileged when `hostPID` is off): it can inject code into the node's processes;
- `hostPath`: a hostPath volume at, above or below a path of `hostNetwork.hostPaths` (the node's
  network namespaces, `/proc`, `/`, the container runtime's sockets).
Only `mode` reports a pass; the others report only what they find. Messages name the fields
(`spec.template.spec.containers[0].securityContext.privileged`). The UPDATE ratchet of
`webhook.workloads` applies: an ephemeral container added to a Pod is judged with the whole pod.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from webhook.cluster.view import ClusterView
from webhook.hostreach import Container, containers, host_path_hits
from webhook.rules.result import HOST_NETWORK, RuleResult, passed
from webhook.settings import Mode, Settings
from webhook.subject import Subject, WorkloadChange

RULE = HOST_NETWORK
MODES = ("hostNetwork", "hostPort", "hostPID", "hostPIDPtrace", "hostPath")


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
    spec = workload.spec
    what = f'{request.kind.kind} "{subject.name}"'
    results: list[RuleResult] = []
    network_mode, port_mode = modes["hostNetwork"], modes["hostPort"]
    if network_mode is not Mode.OFF:
        if spec.get("hostNetwork") is True:
            text = (
                f"{what} uses hostNetwork: its pods share the node's network and no "
                "NetworkPolicy applies to them"
            )
            results.append(RuleResult(HOST_NETWORK, network_mode, False, text, warning=text))
        else:
            results.append(passed(HOST_NETWORK, network_mode, "no hostNetwork"))
    if port_mode is not Mode.OFF:
        ports = _host_ports(spec)
        if ports:
            listed = ", ".join(f"{c}:{p}" for c, p in ports)
            text = (
                f"{what} binds hostPort {listed}: traffic to the node's port reaches the pod "
                "around NetworkPolicies on some network plugins"
            )
            results.append(RuleResult(HOST_NETWORK, port_mode, False, text, warning=text))
    if spec.get("hostPID") is True:
        results += _host_pid(what, workload, modes["hostPID"], modes["hostPIDPtrace"])
    if modes["hostPath"] is not Mode.OFF:
        results += _host_paths(what, workload, modes["hostPath"], settings.host_paths)
    return tuple(results)


def _host_pid(
    what: str, workload: WorkloadChange, enter_mode: Mode, ptrace_mode: Mode
) -> list[RuleResult]:
    """hostPID with a container that can enter, or ptrace, the node's processes."""
    found = list(containers(workload.spec, workload.spec_path))
    pid = f"{workload.spec_path}.hostPID"
    results = []
    entering: Sequence[Container] = ()
    if enter_mode is not Mode.OFF:
        entering = [c for c in found if c.granting("SYS_ADMIN")]
        if entering:
            fields = _fields(entering, "SYS_ADMIN")
            text = (
                f"{what} sets {pid} with {fields}: a privileged or SYS_ADMIN container in the "
                "node's PID namespace can enter the node's network namespace (nsenter -t 1 -n), "
                "where no NetworkPolicy applies"
            )
            warning = f"{what} sets hostPID with a privileged or SYS_ADMIN container ({fields})"
            results.append(RuleResult(HOST_NETWORK, enter_mode, False, text, warning=warning))
    if ptrace_mode is not Mode.OFF:
        # A container already refused for entering is not named twice.
        tracing = [c for c in found if c not in entering and c.granting("SYS_PTRACE")]
        if tracing:
            fields = _fields(tracing, "SYS_PTRACE")
            text = (
                f"{what} sets {pid} with {fields}: a container with SYS_PTRACE in the node's "
                "PID namespace can inject code into the node's processes and so act on the "
                "node's network, where no NetworkPolicy applies"
            )
            warning = f"{what} sets hostPID with a SYS_PTRACE container ({fields})"
            results.append(RuleResult(HOST_NETWORK, ptrace_mode, False, text, warning=warning))
    return results


def _fields(found: Sequence[Container], capability: str) -> str:
    return ", ".join(field for c in found for field in c.granting(capability))


def _host_paths(
    what: str, workload: WorkloadChange, mode: Mode, listed: Sequence[str]
) -> list[RuleResult]:
    hits = host_path_hits(workload.spec, workload.spec_path, listed)
    if not hits:
        return []
    fields = "; ".join(f'{h.field} "{h.path}" (reaches {h.listed})' for h in hits)
    text = (
        f"{what} mounts {fields}: a hostPath at, above or below the node's network namespaces, "
        "/proc, / or a container runtime socket reaches the node's network around every "
        "NetworkPolicy (hostNetwork.hostPaths)"
    )
    warning = f"{what} mounts a hostPath that reaches the node: " + ", ".join(
        f'"{h.path}"' for h in hits
    )
    return [RuleResult(HOST_NETWORK, mode, False, text, warning=warning)]


def _host_ports(spec: Mapping[str, object]) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for key in ("initContainers", "containers"):
        items = spec.get(key)
        for container in items if isinstance(items, list) else []:
            if not isinstance(container, Mapping):
                continue
            ports = container.get("ports")
            for port in ports if isinstance(ports, list) else []:
                host_port = port.get("hostPort") if isinstance(port, Mapping) else None
                if isinstance(host_port, int) and not isinstance(host_port, bool) and host_port:
                    found.append((str(container.get("name", "?")), host_port))
    return found
