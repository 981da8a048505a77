"""What in a pod spec reaches the node around NetworkPolicy: privileged containers, capabilities,
hostPath volumes and probe or lifecycle hosts, each found with the field path that sets it.

Pure readers of a pod spec as the API server sends it (a JSON map), walking every container kind
Pod Security Admission walks (`initContainers`, `containers`, `ephemeralContainers`); field paths
are given under the pod spec's own path in its object (`spec` for a Pod, `spec.template.spec` for
a Deployment), e.g. `spec.containers[0].securityContext.privileged`.

Capability names are read as the container runtimes read them, since the API server does not
validate them: containerd and CRI-O upper-case the name and prepend `CAP_`, and take `ALL` in any
case for every capability. So `sys_admin`, `SYS_ADMIN` and `CAP_SYS_ADMIN` are one capability
here. A hostPath is compared after normalising it as the kernel resolves a path (`.`, `..`,
duplicate and trailing slashes), without following symlinks: that is why both `/var/run/...` and
`/run/...` forms are listed by default. A hostPath is judged by its path alone: `readOnly` is set
on each volumeMount, and a read-only mount still lets a socket be connected to and a token be read.
"""

from __future__ import annotations

import posixpath
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CONTAINER_KINDS = ("initContainers", "containers", "ephemeralContainers")
ALL_CAPABILITIES = "ALL"

# Added capabilities that reach past the pod onto the node, and how. Pod Security Admission's
# baseline refuses every capability outside its default set
# (k8s.io/pod-security-admission/policy/check_capabilities_baseline.go); of those, these act on
# the node's kernel or files rather than on the pod's own namespaces. NET_ADMIN and NET_RAW act in
# the pod's own network namespace (service-mesh init containers rewrite its iptables with them)
# and are left alone; SYS_PTRACE reaches other processes only with hostPID (`hostPIDPtrace`).
NODE_CAPABILITIES: dict[str, str] = {
    "SYS_ADMIN": "mount filesystems, enter a namespace through a namespace file (setns), and "
    "more: the capability most container escapes start from",
    "SYS_MODULE": "load a kernel module into the node's kernel",
    "SYS_RAWIO": "raw I/O ports and device memory of the node",
    "SYS_BOOT": "kexec_load a new kernel on the node, or reboot it",
    "DAC_READ_SEARCH": "open_by_handle_at opens any file of the node's filesystem behind a "
    "bind mount (the pod's /etc/hosts is one)",
    "BPF": "load BPF programs and maps into the node's kernel, which every pod shares",
}

# The probe and lifecycle handlers whose `host` the kubelet connects to from the node's network
# namespace (k8s.io/pod-security-admission/policy/check_hostProbesAndhostLifecycle.go: only ""
# or unset is allowed). gRPC probes have no host field.
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
LIFECYCLE_HANDLERS = ("postStart", "preStop")
HANDLER_ACTIONS = ("httpGet", "tcpSocket")


@dataclass(frozen=True, slots=True)
class Container:
    """One container of a pod spec, reduced to what reaches the node."""

    field: str  # e.g. "spec.containers[0]"
    privileged: bool
    # (field of the capabilities.add entry, its normalised name), in the order written
    added: tuple[tuple[str, str], ...]
    # (field of a probe's or lifecycle handler's host, the host as written), in the order read
    probe_hosts: tuple[tuple[str, object], ...] = ()

    def granting(self, capability: str) -> tuple[str, ...]:
        """The fields that give this container `capability` (normalised): `privileged: true`
        gives every capability, so does an added `ALL`."""
        fields = [f"{self.field}.securityContext.privileged"] if self.privileged else []
        fields += [
            f"{where} ({name})"
            for where, name in self.added
            if name in (capability, ALL_CAPABILITIES)
        ]
        return tuple(fields)

    def adding(self, capabilities: Collection[str]) -> tuple[tuple[str, str], ...]:
        """The capabilities.add entries (field, name) that add one of `capabilities` (normalised)
        or `ALL`; `privileged` is not read here (it has a finding of its own)."""
        return tuple(
            (where, name)
            for where, name in self.added
            if name in capabilities or name == ALL_CAPABILITIES
        )


def normalise_capability(name: str) -> str:
    """A capability name as the runtime applies it, without its `CAP_` prefix: `CAP_sys_admin`
    and `SYS_ADMIN` are both `SYS_ADMIN`; `all` is `ALL`."""
    upper = name.upper()
    return upper[4:] if upper.startswith("CAP_") else upper


def containers(spec: Mapping[str, Any], spec_path: str) -> Iterator[Container]:
    """Every container of every kind, with its privileges and its probe and lifecycle hosts."""
    for kind in CONTAINER_KINDS:
        items = spec.get(kind)
        for i, raw_item in enumerate(items if isinstance(items, list) else ()):
            item = _mapping(raw_item)
            if item is None:
                continue
            where = f"{spec_path}.{kind}[{i}]"
            context = _mapping(item.get("securityContext")) or {}
            capabilities = _mapping(context.get("capabilities"))
            raw = capabilities.get("add") if capabilities is not None else None
            added = tuple(
                (f"{where}.securityContext.capabilities.add[{j}]", normalise_capability(c))
                for j, c in enumerate(raw if isinstance(raw, list) else ())
                if isinstance(c, str)
            )
            yield Container(
                where, context.get("privileged") is True, added, _probe_hosts(item, where)
            )


def _mapping(value: object) -> Mapping[str, Any] | None:
    """`value` if it is a mapping, else None. Every admission webhook is asked this for each field
    of each container: a JSON object is a dict, checked at C speed, before the slower ABC check
    (a Mapping that is not a dict still counts)."""
    if type(value) is dict:
        return value
    if value is None:
        return None
    return value if isinstance(value, Mapping) else None


def _probe_hosts(container: Mapping[str, Any], where: str) -> tuple[tuple[str, object], ...]:
    """The `host` fields set (not "" or null) in a container's probes and lifecycle handlers.

    Read in every container kind: the API server refuses probes and lifecycle on an ephemeral
    container, but the request is judged as it was sent, as PSA's `visitContainers` does."""
    handlers = [(f"{where}.{p}", container.get(p)) for p in PROBES if p in container]
    lifecycle = _mapping(container.get("lifecycle"))
    if lifecycle is not None:
        handlers += [
            (f"{where}.lifecycle.{h}", lifecycle.get(h))
            for h in LIFECYCLE_HANDLERS
            if h in lifecycle
        ]
    found: list[tuple[str, object]] = []
    for field, raw in handlers:
        handler = _mapping(raw)
        if handler is None:
            continue
        for action in HANDLER_ACTIONS:
            target = _mapping(handler.get(action))
            host = target.get("host") if target is not None else None
            if host is not None and host != "":
                found.append((f"{field}.{action}.host", host))
    return tuple(found)


def normalise_path(path: str) -> str:
    """An absolute path with `.`, `..`, duplicate and trailing slashes resolved.

    A relative path is taken from `/` (the kubelet's working directory). `posixpath.normpath`
    keeps a leading `//` (POSIX leaves its meaning to the implementation; Linux reads it as `/`).
    """
    normal = posixpath.normpath("/" + path)
    return "/" + normal.lstrip("/")


def overlaps(path: str, listed: str) -> bool:
    """Whether normalised `path` is `listed`, lies below it or contains it (`/var` contains
    `/var/run/netns`). Below `/` lies every path, so a listed `/` matches only `/` itself."""
    if path in (listed, "/"):  # "/" contains every listed path
        return True
    if listed != "/" and path.startswith(listed + "/"):
        return True
    return listed.startswith(path + "/")


@dataclass(frozen=True, slots=True)
class HostPathHit:
    field: str  # e.g. "spec.volumes[2].hostPath.path"
    path: str  # as written
    listed: str  # the listed path it reaches; "" when it reaches none


def host_paths(
    spec: Mapping[str, Any], spec_path: str, listed: Sequence[str]
) -> tuple[HostPathHit, ...]:
    """Every hostPath volume, with the first listed (normalised) path it is at, above or below."""
    hits: list[HostPathHit] = []
    volumes = spec.get("volumes")
    for i, volume in enumerate(volumes if isinstance(volumes, list) else ()):
        source = volume.get("hostPath") if isinstance(volume, Mapping) else None
        raw = source.get("path") if isinstance(source, Mapping) else None
        if not isinstance(raw, str):
            continue
        normal = normalise_path(raw)
        reached = next((p for p in listed if overlaps(normal, p)), "")
        hits.append(HostPathHit(f"{spec_path}.volumes[{i}].hostPath.path", raw, reached))
    return tuple(hits)
