"""The settings model (DESIGN.md §2): one frozen `Settings` that every decision reads.

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


# The per-rule mode knobs a namespace override may set, and where each lives in the file.
MODE_KEYS = (
    "defaultDeny",
    "allowAll",
    "allowAllSelected",
    "allowNearlyAll",
    "hostNetwork",
    "hostPort",
    "hostPID",
    "hostPIDPtrace",
    "hostPath",
    "auditScope",
    "namespaceLabels",
)

DEFAULT_WEBHOOK_NAME = "validate.kubefence.io"
DEFAULT_EXEMPT_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
# hostNetwork.hostPaths: a hostPath at, above or below one of these reaches the node's network
# namespaces (`/proc/<pid>/ns/net`, the named namespaces), or a container runtime that starts
# containers on the node's network. Normalised (webhook.hostreach.normalise_path).
DEFAULT_HOST_PATHS = (
    "/",
    "/proc",
    "/var/run/netns",
    "/run/netns",
    "/var/run/containerd/containerd.sock",
    "/run/containerd/containerd.sock",
    "/run/k3s/containerd/containerd.sock",
    "/var/run/crio/crio.sock",
    "/run/crio/crio.sock",
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/var/run/cri-dockerd.sock",
    "/run/cri-dockerd.sock",
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
