"""What `scan` finds outside NetworkPolicies: Services with externalIPs and who holds nodes/proxy.

- A Service with `spec.externalIPs` captures traffic sent to those addresses from every pod and
  node (CVE-2020-8554); any user who may create Services can set them. Kubernetes' answer is the
  `DenyServiceExternalIPs` admission plugin.
- `nodes/proxy` is the kubelet API (exec into any pod of the node, and straight on the kubelet's
  port, past the API server's admission). A ClusterRole rule grants it as upstream RBAC matches
  (`pkg/apis/rbac/v1/evaluation_helpers.go`): apiGroups `""` or `*`; resources `nodes/proxy`,
  `*/proxy` or `*` (`nodes/*` is no pattern RBAC knows); verbs `get`, `create` or `*`. Nodes are
  cluster-scoped, so only ClusterRoleBindings grant it: a RoleBinding grants within its namespace
  only. Bindings the API server creates itself (label `kubernetes.io/bootstrapping:
  rbac-defaults`: `cluster-admin` for `system:masters`) are listed but are not findings.
Pure: plain objects in, frozen findings out; malformed fields are skipped, never raised.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DENY_EXTERNAL_IPS = "DenyServiceExternalIPs"
BOOTSTRAP_LABEL = "kubernetes.io/bootstrapping"
KINDS = frozenset({"Service", "ClusterRole", "ClusterRoleBinding"})
_VERBS = ("get", "create", "*")  # the kubelet authorizes a GET as get, a POST (exec) as create


@dataclass(frozen=True, slots=True)
class ExternalIPs:
    namespace: str
    service: str
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NodeProxyHolder:
    subject: str  # `User alice`, `Group ops`, `ServiceAccount monitoring/prometheus`
    role: str  # the ClusterRole
    binding: str  # the ClusterRoleBinding
    verbs: tuple[str, ...]  # of get, create, * that the role grants on nodes/proxy
    nodes: tuple[str, ...] = ()  # resourceNames: () for every node
    builtin: bool = False  # a binding the API server bootstraps itself

    @property
    def on(self) -> str:
        return ", ".join(self.nodes) if self.nodes else "every node"


@dataclass(frozen=True, slots=True)
class Exposure:
    """The exposure findings of one cluster, and the lists scan could not read."""

    external_ips: tuple[ExternalIPs, ...] = ()
    node_proxy: tuple[NodeProxyHolder, ...] = ()
    unread: tuple[str, ...] = ()  # `clusterroles: 403 Forbidden`: those findings are unknown


NOTHING_READ = Exposure()


def read_exposure(objects: Iterable[Mapping[str, Any]], unread: Iterable[str] = ()) -> Exposure:
    """Reduce Services, ClusterRoles and ClusterRoleBindings (other kinds ignored)."""
    services: list[ExternalIPs] = []
    grants: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    bindings: list[Mapping[str, Any]] = []
    for obj in objects:
        kind, meta = obj.get("kind"), _map(obj.get("metadata"))
        name = meta.get("name")
        if not isinstance(name, str):
            continue
        if kind == "Service":
            addresses = _strings(_map(obj.get("spec")).get("externalIPs"))
            if addresses:
                namespace = str(meta.get("namespace") or "default")
                services.append(ExternalIPs(namespace, name, addresses))
        elif kind == "ClusterRole":
            granted = node_proxy_grant(obj.get("rules"))
            if granted is not None:
                grants[name] = granted
        elif kind == "ClusterRoleBinding":
            bindings.append(obj)
    holders = [holder for binding in bindings for holder in _holders(binding, grants)]
    return Exposure(
        tuple(sorted(services, key=lambda s: (s.namespace, s.service))),
        tuple(sorted(holders, key=lambda h: (h.builtin, h.subject, h.role, h.binding))),
        tuple(unread),
    )


def node_proxy_grant(rules: object) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """The verbs a ClusterRole's rules grant on nodes/proxy, and the nodes (() for all); None:
    no grant. A rule limited by resourceNames grants those nodes; one without, all of them."""
    verbs: dict[str, None] = {}
    nodes: dict[str, None] = {}
    every_node = False
    for listed in rules if isinstance(rules, list) else ():
        rule = _map(listed)
        groups = _strings(rule.get("apiGroups"))
        resources = _strings(rule.get("resources"))
        granted = [v for v in _VERBS if v in _strings(rule.get("verbs"))]
        if not granted or not ({"", "*"} & set(groups)):
            continue
        if not ({"nodes/proxy", "*/proxy", "*"} & set(resources)):
            continue
        verbs.update(dict.fromkeys(granted))
        names = _strings(rule.get("resourceNames"))
        if names:
            nodes.update(dict.fromkeys(names))
        else:
            every_node = True
    if not verbs:
        return None
    return tuple(v for v in _VERBS if v in verbs), () if every_node else tuple(nodes)


def _holders(
    binding: Mapping[str, Any], grants: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]
) -> Iterable[NodeProxyHolder]:
    meta = _map(binding.get("metadata"))
    ref = _map(binding.get("roleRef"))
    if ref.get("kind") != "ClusterRole" or ref.get("name") not in grants:
        return
    role = str(ref["name"])
    verbs, nodes = grants[role]
    builtin = _map(meta.get("labels")).get(BOOTSTRAP_LABEL) == "rbac-defaults"
    for listed in binding.get("subjects") or ():
        subject = _map(listed)
        kind, name = subject.get("kind"), subject.get("name")
        if not isinstance(kind, str) or not isinstance(name, str):
            continue
        if kind == "ServiceAccount":
            name = f"{subject.get('namespace') or ''}/{name}"
        yield NodeProxyHolder(f"{kind} {name}", role, str(meta.get("name")), verbs, nodes, builtin)


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str))
