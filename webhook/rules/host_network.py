"""Rule `host-network`: pods on the node's network walk around every NetworkPolicy.

A workload whose pod template sets `hostNetwork: true` is judged by `hostNetwork.mode`; a
container or init container with a non-zero `hostPort` by `hostNetwork.hostPort` (default warn).
The UPDATE ratchet of `webhook.workloads` applies.
"""

from __future__ import annotations

from collections.abc import Mapping

from webhook.cluster.view import ClusterView
from webhook.rules.result import HOST_NETWORK, RuleResult, passed
from webhook.settings import Mode, Settings
from webhook.subject import Subject

RULE = HOST_NETWORK


def check(subject: Subject, cluster: ClusterView, settings: Settings) -> tuple[RuleResult, ...]:
    request = subject.request
    workload = subject.workload
    if workload is None:
        return ()
    network_mode = settings.mode("hostNetwork", request.namespace)
    port_mode = settings.mode("hostPort", request.namespace)
    if network_mode is Mode.OFF and port_mode is Mode.OFF:
        return ()
    if not workload.judged:
        mode = network_mode if network_mode is not Mode.OFF else port_mode
        return (passed(HOST_NETWORK, mode, workload.why_not),)
    spec = workload.spec
    results: list[RuleResult] = []
    what = f'{request.kind.kind} "{subject.name}"'
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
    return tuple(results)


def _host_ports(spec: Mapping[str, object]) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for key in ("initContainers", "containers"):
        containers = spec.get(key)
        for container in containers if isinstance(containers, list) else []:
            if not isinstance(container, Mapping):
                continue
            ports = container.get("ports")
            for port in ports if isinstance(ports, list) else []:
                host_port = port.get("hostPort") if isinstance(port, Mapping) else None
                if isinstance(host_port, int) and not isinstance(host_port, bool) and host_port:
                    found.append((str(container.get("name", "?")), host_port))
    return found
