"""A brute-force NetworkPolicy evaluator for the property tests, written apart from the product.

It reads policies literally (networking/v1 semantics; `null` is absent, a `null` list element is
the empty struct, as the API decoder makes it) and evaluates every probe of a finite universe
made of the edges of the input: every port edge and its neighbours, per protocol; every CIDR and
except boundary and its neighbours, per family; label sets from every key and value the selectors
mention plus a fresh value and absence, for pods and for namespaces (every namespace also carries
its `kubernetes.io/metadata.name` label, with a name of its own among them). Between two
consecutive edges nothing changes, so each probe stands for the segment up to the next one and
carries its length: the universe is complete for "every port", "every peer" and "how much is
left out".

Peers are pods (namespace labels x pod labels) and addresses: a selector peer matches pods, an
ipBlock addresses (a peer with both matches what either matches). Probe pods declare no named
ports, so a named port matches nothing. An IPv4-mapped IPv6 CIDR (::ffff:0:0/96 and longer) is
the IPv4 network, and no IPv6 peer lies in ::ffff:0:0/96 (those addresses are IPv4 peers), as
Go's net.IPNet reads them. No peer of a Pod's traffic is ever a loopback (127.0.0.0/8, ::1),
"this network" (0.0.0.0/8) or unspecified (::) address: no probe stands for one. Every other
address is a peer, multicast and class E included (`Relax.unused_ranges` says otherwise).

A protocol is nearly open when, on the ports not open to every peer, those that leave out a /16
of IPv4 peers or more and a /48 of IPv6 peers or more are fewer than 1,024 or all in 49152-65535.

`Relax` names the documented choices of the product's model; with all of them on, the reference
computes exactly what the model is documented to compute.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PROTOCOLS = ("TCP", "UDP", "SCTP")
NAME_KEY = "kubernetes.io/metadata.name"
FRESH_NAMESPACE = "fresh-namespace-nobody-names"
FRESH_VALUE = "fresh-value-nobody-names"
MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
MAPPED_START = int(MAPPED.network_address)
MAPPED_END = int(MAPPED.broadcast_address)
# Never a peer: (family, first, last).
NEVER = [
    (4, 0, 0x00FFFFFF),  # 0.0.0.0/8
    (4, 0x7F000000, 0x7FFFFFFF),  # 127.0.0.0/8
    (6, 0, 1),  # :: and ::1
    (6, MAPPED_START, MAPPED_END),
]
# Ranges a cluster may or may not use for Pods and Services, by `defaultDeny.peerRanges` name.
SPECIAL = {
    "multicast": [(4, 0xE0000000, 0xEFFFFFFF), (6, 0xFF << 120, 2**128 - 1)],
    "classE": [(4, 0xF0000000, 0xFFFFFFFF)],
}
DYNAMIC_START = 49152


@dataclass(frozen=True)
class Relax:
    """The model's documented readings, each one a way the reference may be relaxed."""

    one_family: bool = False  # every IPv4 address, or every IPv6 address, is every peer
    pods_everyone: bool = False  # every pod of every namespace is every peer
    few_namespaces: bool = False  # the fresh name-only namespace stands for every namespace
    all_pods: bool = False  # the pod with no labels stands for every peer pod
    isolation_empty: bool = False  # only an empty podSelector isolates every pod
    pairwise: bool = False  # selected pods: pool every policy one label set shares with subject
    unused_ranges: bool = False  # the special ranges the cluster does not say it uses: no peer


STRICT = Relax()
MODEL = Relax(True, True, True, True, True, True, True)

# --- reading ----------------------------------------------------------------------------------


def _absent(value: object) -> bool:
    return value is None


def selector_matches(raw: object, labels: Mapping[str, str]) -> bool:
    """A LabelSelector literally; absent or null matches everything, malformed nothing."""
    if raw is None:
        return True
    if not isinstance(raw, Mapping):
        return False
    match_labels = raw.get("matchLabels")
    if match_labels is not None:
        if not isinstance(match_labels, Mapping):
            return False
        for key, value in match_labels.items():
            if labels.get(key) != value:
                return False
    expressions = raw.get("matchExpressions")
    if expressions is None:
        return True
    if not isinstance(expressions, list):
        return False
    for expression in expressions:
        if not isinstance(expression, Mapping):
            return False
        key, operator = expression.get("key"), expression.get("operator")
        values = expression.get("values") or []
        if operator == "In":
            if not values or labels.get(key) not in values:
                return False
        elif operator == "NotIn":
            if not values or (key in labels and labels[key] in values):
                return False
        elif operator == "Exists":
            if key not in labels:
                return False
        elif operator == "DoesNotExist":
            if key in labels:
                return False
        else:
            return False
    return True


def selector_is_empty(raw: object) -> bool:
    if raw is None:
        return True
    return (
        isinstance(raw, Mapping) and not raw.get("matchLabels") and not raw.get("matchExpressions")
    )


def policy_types(spec: Mapping[str, Any]) -> set[str]:
    declared = spec.get("policyTypes")
    if isinstance(declared, list) and declared:
        return {t for t in declared if t in ("Ingress", "Egress")}
    egress = spec.get("egress")
    return {"Ingress", "Egress"} if isinstance(egress, list) and egress else {"Ingress"}


def network(cidr: object) -> tuple[int, int, int] | None:
    """(family, first, last) of a CIDR; IPv4-mapped IPv6 is IPv4."""
    if not isinstance(cidr, str):
        return None
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return None
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.subnet_of(MAPPED):
        first = int(net.network_address) - MAPPED_START
        return 4, first, first + net.num_addresses - 1
    return net.version, int(net.network_address), int(net.broadcast_address)


def rules_of(spec: Mapping[str, Any], direction: str) -> list[Mapping[str, Any]]:
    listed = spec.get("ingress" if direction == "Ingress" else "egress")
    if not isinstance(listed, list):
        return []
    return [
        {} if rule is None else rule for rule in listed if rule is None or isinstance(rule, Mapping)
    ]


def port_matches(ports: object, protocol: str, port: int) -> bool:
    if ports is None or ports == []:
        return True
    if not isinstance(ports, list):
        return False
    for listed in ports:
        entry = {} if listed is None else listed
        if not isinstance(entry, Mapping):
            continue
        if (entry.get("protocol") or "TCP") != protocol:
            continue
        number = entry.get("port")
        if number is None:
            return True
        if isinstance(number, str) and number.isascii() and number.isdigit():
            number = int(number)
        if not isinstance(number, int) or isinstance(number, bool):
            continue  # a named port: no probe pod declares one
        end = entry.get("endPort")
        last = (
            end if isinstance(end, int) and not isinstance(end, bool) and end >= number else number
        )
        if number <= port <= last:
            return True
    return False


# --- the probe universe -------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    kind: str  # "pod", "v4", "v6"
    namespace: Mapping[str, str] | None = None
    pod: Mapping[str, str] | None = None
    address: int = 0
    weight: int = 1  # addresses this probe stands for


def _walk_selectors(spec: Mapping[str, Any]) -> tuple[list[object], list[object]]:
    """(pod selectors, namespace selectors) of a spec."""
    pods: list[object] = [spec.get("podSelector")]
    namespaces: list[object] = []
    for direction in ("Ingress", "Egress"):
        for rule in rules_of(spec, direction):
            peers = rule.get("from" if direction == "Ingress" else "to")
            for peer in peers if isinstance(peers, list) else ():
                if isinstance(peer, Mapping):
                    pods.append(peer.get("podSelector"))
                    namespaces.append(peer.get("namespaceSelector"))
    return pods, namespaces


def _mentions(selectors: Iterable[object]) -> dict[str, set[str]]:
    keys: dict[str, set[str]] = {}
    for raw in selectors:
        if not isinstance(raw, Mapping):
            continue
        labels = raw.get("matchLabels")
        for key, value in labels.items() if isinstance(labels, Mapping) else ():
            keys.setdefault(key, set()).add(str(value))
        expressions = raw.get("matchExpressions")
        for expression in expressions if isinstance(expressions, list) else ():
            if isinstance(expression, Mapping) and isinstance(expression.get("key"), str):
                values = expression.get("values") or []
                keys.setdefault(expression["key"], set()).update(str(v) for v in values)
    return keys


def label_sets(
    keys: Mapping[str, set[str]], fixed: Mapping[str, str] | None = None
) -> list[dict[str, str]]:
    """Every combination of: each key absent, one of its mentioned values, or a fresh value."""
    names = sorted(keys)
    choices = [[None, *sorted(keys[k]), FRESH_VALUE] for k in names]
    out = []
    for combo in itertools.product(*choices):
        labels = {k: v for k, v in zip(names, combo, strict=True) if v is not None}
        out.append({**labels, **(fixed or {})})
    return out


def _segments(edges: Iterable[int], low: int, high: int) -> list[tuple[int, int]]:
    """(start, length) of the segments [low, high] is cut into at `edges` (each a segment start)."""
    points = sorted({low, *(e for e in edges if low <= e <= high)})
    bounds = [*points, high + 1]
    return [(bounds[i], bounds[i + 1] - bounds[i]) for i in range(len(points))]


@dataclass
class Universe:
    ports: list[tuple[int, int]]  # (port, segment length)
    peers: list[Peer]
    pods: list[dict[str, str]]  # target pod label sets (in the policies' namespace)
    namespace: str

    def mask(self, predicate: Any) -> int:
        bits = 0
        for i, peer in enumerate(self.peers):
            if predicate(peer):
                bits |= 1 << i
        return bits


def universe(policies: Sequence[Mapping[str, Any]], namespace: str) -> Universe:
    specs = [p.get("spec") or {} for p in policies]
    pod_selectors: list[object] = []
    ns_selectors: list[object] = []
    port_edges: set[int] = {1, DYNAMIC_START, 65535}
    edges: dict[int, set[int]] = {4: {0, 2**32 - 1}, 6: {0, 2**128 - 1}}
    for family, first, last in NEVER + [r for ranges in SPECIAL.values() for r in ranges]:
        edges[family].update({first, last + 1})
    for spec in specs:
        pods, namespaces = _walk_selectors(spec)
        pod_selectors += pods
        ns_selectors += namespaces
        for direction in ("Ingress", "Egress"):
            for rule in rules_of(spec, direction):
                ports = rule.get("ports")
                for entry in ports if isinstance(ports, list) else ():
                    if isinstance(entry, Mapping):
                        for key in ("port", "endPort"):
                            value = entry.get(key)
                            if isinstance(value, str) and value.isascii() and value.isdigit():
                                value = int(value)
                            if isinstance(value, int) and not isinstance(value, bool):
                                port_edges.update({value - 1, value, value + 1, value + 2})
                peers = rule.get("from" if direction == "Ingress" else "to")
                for peer in peers if isinstance(peers, list) else ():
                    block = peer.get("ipBlock") if isinstance(peer, Mapping) else None
                    if not isinstance(block, Mapping):
                        continue
                    holes = block.get("except")
                    for cidr in [block.get("cidr"), *(holes if isinstance(holes, list) else ())]:
                        net = network(cidr)
                        if net is not None:
                            family, first, last = net
                            edges[family].update(
                                {first - 1, first, first + 1, last, last + 1, last + 2}
                            )
    ports = _segments(port_edges, 1, 65535)
    pod_keys = _mentions(pod_selectors)
    ns_keys = _mentions(ns_selectors)
    names = {namespace, FRESH_NAMESPACE, *ns_keys.pop(NAME_KEY, set())}
    namespaces = [
        labels for name in sorted(names) for labels in label_sets(ns_keys, {NAME_KEY: name})
    ]
    pod_labels = label_sets(pod_keys)
    peers = [Peer("pod", ns, pod) for ns in namespaces for pod in pod_labels]
    for family, kind, top in ((4, "v4", 2**32 - 1), (6, "v6", 2**128 - 1)):
        peers += [
            Peer(kind, address=a, weight=w)
            for a, w in _segments(edges[family], 0, top)
            if not any(f == family and first <= a <= last for f, first, last in NEVER)
        ]
    return Universe(ports, peers, pod_labels, namespace)


# --- evaluation ---------------------------------------------------------------------------------


def peer_matches(peer_spec: object, probe: Peer, namespace: str) -> bool:
    if not isinstance(peer_spec, Mapping):
        return False  # the empty peer (the API refuses it)
    matched = False
    block = peer_spec.get("ipBlock")
    if isinstance(block, Mapping) and probe.kind != "pod":
        net = network(block.get("cidr"))
        family = 4 if probe.kind == "v4" else 6
        if net is not None and net[0] == family and net[1] <= probe.address <= net[2]:
            holes = block.get("except")
            excluded = False
            for hole in holes if isinstance(holes, list) else ():
                cut = network(hole)
                if cut is not None and cut[0] == family and cut[1] <= probe.address <= cut[2]:
                    excluded = True
            matched = not excluded
    ns_raw, pod_raw = peer_spec.get("namespaceSelector"), peer_spec.get("podSelector")
    if probe.kind == "pod" and not (_absent(ns_raw) and _absent(pod_raw)):
        assert probe.namespace is not None
        assert probe.pod is not None
        if _absent(ns_raw):
            in_namespace = probe.namespace.get(NAME_KEY) == namespace
        else:
            in_namespace = selector_matches(ns_raw, probe.namespace)
        matched = matched or (in_namespace and selector_matches(pod_raw, probe.pod))
    return matched


@dataclass
class CompiledRule:
    peers: int  # mask over the universe's peers
    ports: Mapping[str, frozenset[int]]  # matching port probes per protocol


@dataclass
class CompiledPolicy:
    spec: Mapping[str, Any]
    types: set[str]
    rules: Mapping[str, list[CompiledRule]]

    def selects(self, labels: Mapping[str, str]) -> bool:
        return selector_matches(self.spec.get("podSelector"), labels)


class Reference:
    """The verdicts of one namespace's policies, by brute force over the universe."""

    def __init__(
        self,
        policies: Sequence[Mapping[str, Any]],
        namespace: str = "team",
        peer_ranges: Iterable[str] = (),
    ) -> None:
        """`peer_ranges`: the `SPECIAL` ranges the cluster uses (`defaultDeny.peerRanges`)."""
        self.universe = universe(policies, namespace)
        used = set(peer_ranges)
        self.unused = [r for name, ranges in SPECIAL.items() if name not in used for r in ranges]
        u = self.universe
        self.policies: list[CompiledPolicy] = []
        for policy in policies:
            spec = policy.get("spec") or {}
            rules: dict[str, list[CompiledRule]] = {}
            for direction in ("Ingress", "Egress"):
                key = "from" if direction == "Ingress" else "to"
                compiled = []
                for rule in rules_of(spec, direction):
                    peers = rule.get(key)
                    if peers is None or peers == []:
                        mask = (1 << len(u.peers)) - 1
                    elif isinstance(peers, list):
                        mask = u.mask(
                            lambda probe, peers=peers: any(
                                peer_matches(p, probe, namespace) for p in peers
                            )
                        )
                    else:
                        mask = 0
                    ports = {
                        proto: frozenset(
                            port
                            for port, _ in u.ports
                            if port_matches(rule.get("ports"), proto, port)
                        )
                        for proto in PROTOCOLS
                    }
                    compiled.append(CompiledRule(mask, ports))
                rules[direction] = compiled
            self.policies.append(CompiledPolicy(spec, policy_types(spec), rules))

    # what a set of policies lets in ------------------------------------------------------------

    def _everyone(self, relax: Relax) -> tuple[int, int, int, int]:
        """Masks: (pod peers counted as every pod, v4, v6, all pod peers)."""
        u = self.universe
        pods = u.mask(lambda p: p.kind == "pod" and self._counts(p, relax))
        return (
            pods,
            u.mask(lambda p: p.kind == "v4" and self._is_peer(p, relax)),
            u.mask(lambda p: p.kind == "v6" and self._is_peer(p, relax)),
            u.mask(lambda p: p.kind == "pod"),
        )

    def _is_peer(self, probe: Peer, relax: Relax) -> bool:
        """An address probe that counts as a peer: every one, but under `unused_ranges`."""
        family = 4 if probe.kind == "v4" else 6
        return not relax.unused_ranges or not any(
            f == family and first <= probe.address <= last for f, first, last in self.unused
        )

    def _counts(self, probe: Peer, relax: Relax) -> bool:
        assert probe.namespace is not None
        assert probe.pod is not None
        if relax.few_namespaces and probe.namespace != {NAME_KEY: FRESH_NAMESPACE}:
            return False
        return not (relax.all_pods and probe.pod)

    def _left_out(self, allowed: int, family_mask: int) -> int:
        missing = family_mask & ~allowed
        return sum(p.weight for i, p in enumerate(self.universe.peers) if missing >> i & 1)

    def judge(
        self, pool: Sequence[CompiledPolicy], direction: str, relax: Relax
    ) -> tuple[bool, bool]:
        """(open to every peer on every port of some protocol, nearly open) for a pooled set."""
        pods, v4, v6, _ = self._everyone(relax)
        neutralised = nearly = False
        for proto in PROTOCOLS:
            full_everywhere = True
            short_ports = 0
            short_below_dynamic = False
            for port, span in self.universe.ports:
                allowed = 0
                for policy in pool:
                    for rule in policy.rules[direction]:
                        if port in rule.ports[proto]:
                            allowed |= rule.peers
                covered = [allowed & m == m for m in (pods, v4, v6)]
                full = (
                    all(covered)
                    or (relax.one_family and (covered[1] or covered[2]))
                    or (relax.pods_everyone and covered[0])
                )
                if full:
                    continue
                full_everywhere = False
                near = (
                    covered[0]
                    or self._left_out(allowed, v4) < 2**16
                    or self._left_out(allowed, v6) < 2**80
                )
                if not near:
                    short_ports += span
                    short_below_dynamic |= port < DYNAMIC_START
            neutralised |= full_everywhere
            nearly |= not full_everywhere and (short_ports < 1024 or not short_below_dynamic)
        return neutralised, nearly and not neutralised

    def _selecting(self, labels: Mapping[str, str], direction: str) -> list[CompiledPolicy]:
        return [p for p in self.policies if direction in p.types and p.selects(labels)]

    # the verdicts ------------------------------------------------------------------------------

    def neutralised(self, direction: str, relax: Relax = STRICT) -> bool:
        """The pod with no labels is open to every peer, on every port of some protocol."""
        return self.judge(self._selecting({}, direction), direction, relax)[0]

    def nearly_open(self, direction: str, relax: Relax = MODEL) -> bool:
        return self.judge(self._selecting({}, direction), direction, relax)[1]

    def isolated_everywhere(self, direction: str, relax: Relax = STRICT) -> bool:
        if relax.isolation_empty:
            return any(
                direction in p.types and selector_is_empty(p.spec.get("podSelector"))
                for p in self.policies
            )
        return all(self._selecting(labels, direction) for labels in self.universe.pods)

    def fenced(self, direction: str, relax: Relax = STRICT) -> bool:
        return self.isolated_everywhere(direction, relax) and not self.neutralised(direction, relax)

    def selected_open(self, subject: int, direction: str, relax: Relax = STRICT) -> bool:
        """Some pod policy `subject` selects is open to every peer on every port of a protocol."""
        target = self.policies[subject]
        if direction not in target.types:
            return False
        chosen = [labels for labels in self.universe.pods if target.selects(labels)]
        if relax.pairwise:
            if not chosen:
                return False
            pool = [target] + [
                p
                for i, p in enumerate(self.policies)
                if i != subject
                and direction in p.types
                and any(p.selects(labels) for labels in chosen)
            ]
            return self.judge(pool, direction, relax)[0]
        return any(
            self.judge(self._selecting(labels, direction), direction, relax)[0] for labels in chosen
        )

    def judge_alone(self, direction: str, relax: Relax = MODEL) -> bool:
        """Every rule of every policy given, pooled whatever they select (one policy: its own)."""
        return self.judge(self.policies, direction, relax)[0]
