"""The settings model (docs/design.md, "Configuration"): one frozen `Settings` that every
decision reads.

Pure data: no file reading, no YAML. `webhook.config` parses and validates the config file into
it; the decision core imports only this module, so it never depends on file I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from webhook.auditpolicy import Level, Policy
from webhook.drift import DriftSpec
from webhook.labels import LabelSelector
from webhook.netpol import DEFAULT_LIMITS, Direction, Limits


class Mode(StrEnum):
    ENFORCE = "enforce"
    WARN = "warn"
    AUDIT = "audit"
    OFF = "off"


# The host-network rule's mode keys: `hostNetwork.mode` (as "hostNetwork"), then one per way
# onto the node it judges.
HOST_NETWORK_MODES = (
    "hostNetwork",
    "hostPort",
    "hostPID",
    "hostPIDPtrace",
    "hostPath",
    "otherHostPaths",
    "privileged",
    "capabilities",
    "probeHost",
)
# The per-rule mode knobs a namespace override may set, and where each lives in the file.
MODE_KEYS = (
    "defaultDeny",
    "allowAll",
    "allowAllSelected",
    "allowNearlyAll",
    *HOST_NETWORK_MODES,
    "auditScope",
    "namespaceLabels",
)

DEFAULT_WEBHOOK_NAME = "validate.kubefence.io"
DEFAULT_EXEMPT_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
# hostNetwork.hostPaths: a hostPath at, above or below one of these reaches the node's network
# (its namespace files, `/proc/<pid>/ns/net`), or the node itself through what runs Pods on it:
# the kubelet, the container runtime and the network plugin. Normalised
# (webhook.hostreach.normalise_path); symlinks are not followed, hence both /var/run and /run.
DEFAULT_HOST_PATHS = (
    "/",
    "/proc",
    # network namespace files (`ip netns`, CNI, Docker's sandboxes under /var/run/docker/netns)
    "/var/run/netns",
    "/run/netns",
    # static Pod manifests (the kubelet runs what is written there, hostNetwork if it says so),
    # the kubelet's kubeconfig and, on control-plane nodes, the cluster's PKI
    "/etc/kubernetes",
    # every Pod's volumes and service account tokens, the kubelet's pod-resources, device- and
    # CSI-plugin sockets; the FlexVolume drivers the kubelet executes as root
    "/var/lib/kubelet",
    "/usr/libexec/kubernetes",
    # the network plugin: its binaries (replace one and it runs as root in every new Pod's
    # setup), configuration, state, and the agents' sockets (Calico, Cilium)
    "/opt/cni/bin",
    "/etc/cni/net.d",
    "/var/lib/cni",
    "/var/run/calico",
    "/run/calico",
    "/var/lib/calico",
    "/var/run/cilium",
    "/run/cilium",
    # the container runtimes' sockets and state: a socket starts containers on the node's
    # network; the state holds every container's root filesystem and namespace handles
    "/var/run/containerd",
    "/run/containerd",
    "/var/lib/containerd",
    "/var/run/crio",
    "/run/crio",
    "/var/lib/crio",
    "/var/run/containers",
    "/run/containers",
    "/var/lib/containers",
    "/var/run/docker",
    "/run/docker",
    "/var/lib/docker",
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/var/run/cri-dockerd.sock",
    "/run/cri-dockerd.sock",
    "/var/run/runc",
    "/run/runc",
    # k3s and RKE2: their containerd, static Pod manifests, CNI binaries and kubeconfigs
    "/var/run/k3s",
    "/run/k3s",
    "/var/lib/rancher",
)


@dataclass(frozen=True, slots=True)
class Exemptions:
    namespaces: frozenset[str] = frozenset(DEFAULT_EXEMPT_NAMESPACES)
    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Settings:
    webhook_names: tuple[str, ...] = (DEFAULT_WEBHOOK_NAME,)
    # Modes by MODE_KEYS name, before per-namespace overrides.
    modes: Mapping[str, Mode] = field(
        default_factory=lambda: {
            "defaultDeny": Mode.ENFORCE,
            "allowAll": Mode.ENFORCE,
            "allowAllSelected": Mode.WARN,
            "allowNearlyAll": Mode.WARN,
            "hostNetwork": Mode.ENFORCE,
            "hostPort": Mode.WARN,
            "hostPID": Mode.ENFORCE,
            "hostPIDPtrace": Mode.ENFORCE,
            "hostPath": Mode.ENFORCE,
            # Pod Security baseline refuses every hostPath, but log collectors and node agents
            # read unlisted ones (/var/log, /sys): warned, not denied
            "otherHostPaths": Mode.WARN,
            "privileged": Mode.ENFORCE,
            "capabilities": Mode.ENFORCE,
            "probeHost": Mode.ENFORCE,
            "auditScope": Mode.ENFORCE,
            "namespaceLabels": Mode.WARN,
        }
    )
    require: tuple[Direction, ...] = (Direction.INGRESS, Direction.EGRESS)
    strict: bool = False  # defaultDeny.definition: strict
    host_paths: tuple[str, ...] = DEFAULT_HOST_PATHS  # hostNetwork.hostPaths, normalised
    audit_policy: Policy | None = None
    audit_policy_file: str | None = None
    min_level: Level = Level.METADATA
    audit_namespace_selector: LabelSelector | None = None
    exemptions: Exemptions = Exemptions()
    overrides: Mapping[str, Mapping[str, Mode]] = field(default_factory=dict)
    max_staleness: float = 60.0
    deny_on_stale: bool = True
    max_body_bytes: int = 7 * 1024 * 1024
    limits: Limits = DEFAULT_LIMITS  # NetworkPolicy analysis: its cost bounds and peer space
    drift: DriftSpec | None = None
    revision: str = "default"

    @property
    def webhook_name(self) -> str:
        return self.webhook_names[0]

    def mode(self, key: str, namespace: str) -> Mode:
        """The mode of a rule knob in a namespace: the first override naming it, else the global."""
        override = self.overrides.get(namespace)
        if override is not None and key in override:
            return override[key]
        if key == "auditScope" and self.audit_policy is None:
            return Mode.OFF
        return self.modes[key]


DEFAULT_SETTINGS = Settings()
