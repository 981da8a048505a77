"""What `scan` finds outside NetworkPolicies: Services with externalIPs and who holds nodes/proxy.

- A Service with `spec.externalIPs` captures traffic sent to those addresses from every pod and
  node (CVE-2020-8554); any user who may create Services can set them. Kubernetes' answer is the
  `DenyServiceExternalIPs` admission plugin.
- `nodes/proxy` is the kubelet API (exec into any pod of the node, and straight on the kubelet's
  port, past the API server's admission). A ClusterRole rule grants it as upstream RBAC matches
  (`pkg/apis/rbac/v1/evaluation_helpers.go`): apiGroups `""` or `*`; resources `nodes/proxy`,
  `*/proxy` or `*` (`nodes/*` is no pattern RBAC knows); verbs `get`, `create` or `*`. Nodes are
  cluster-scoped, so only ClusterRoleBindings grant it: a RoleBinding grants within its namespace
  only. The holders the API server bootstraps itself (`BUILTIN_HOLDERS`) are listed but are not
  findings: each is one exact (binding, role, subject). Neither a binding's name nor its label
  `kubernetes.io/bootstrapping: rbac-defaults` makes a holder built in: whoever may write bindings
  can set both, and the API server's reconciliation adds missing default subjects back but never
  removes extra ones, so a subject added to a default binding is a finding like any other.
Pure: plain objects in, frozen findings out; malformed fields are skipped, never raised.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DENY_EXTERNAL_IPS = "DenyServiceExternalIPs"
_CONTROLLER = "system:controller:"

# The default ClusterRoleBindings whose ClusterRole grants get, create or * on nodes/proxy, as
# (binding, role, subject), read from k8s.io/kubernetes@v1.37.2
# plugin/pkg/auth/authorizer/rbac/bootstrappolicy:
# - policy.go ClusterRoleBindings: `cluster-admin` (every verb on every resource) for the group
#   system:masters. None of its other default bindings binds a role that grants nodes/proxy;
#   `system:kubelet-api-admin` grants it but upstream binds it to no one (an installer's binding
#   of it is a finding).
# - controller_policy.go: each `system:controller:<name>` role bound by a binding of the same name
#   to the service account kube-system/<name> (addControllerRole). The garbage collector's and the
#   namespace controller's grant get on every resource of every group, nodes/proxy included.
BUILTIN_HOLDERS: frozenset[tuple[str, str, str]] = frozenset(
    {("cluster-admin", "cluster-admin", "Group system:masters")}
    | {
        (_CONTROLLER + name, _CONTROLLER + name, f"ServiceAccount kube-system/{name}")
        for name in ("generic-garbage-collector", "namespace-controller")
    }
)
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
    builtin: bool = False  # one of BUILTIN_HOLDERS: the API server bootstraps it itself

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
    role, name = str(ref["name"]), str(meta.get("name"))
    verbs, nodes = grants[role]
    subjects = binding.get("subjects")
    for listed in subjects if isinstance(subjects, list) else ():
        held = subject_of(_map(listed))
        if held:
            builtin = (name, role, held) in BUILTIN_HOLDERS
            yield NodeProxyHolder(held, role, name, verbs, nodes, builtin)


def subject_of(subject: Mapping[str, Any]) -> str:
    """`User alice`, `Group ops`, `ServiceAccount monitoring/prometheus`; "" when malformed.

    A ServiceAccount is named with its namespace; RBAC reads a User's or Group's without one.
    """
    kind, name = subject.get("kind"), subject.get("name")
    if not isinstance(kind, str) or not isinstance(name, str):
        return ""
    if kind == "ServiceAccount":
        namespace = subject.get("namespace")
        name = f"{namespace if isinstance(namespace, str) else ''}/{name}"
    return f"{kind} {name}"


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str))
