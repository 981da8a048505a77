"""NetworkPolicy analysis: which directions a namespace's policies fence, and what neutralises one.

A namespace is fenced for a direction when every pod is isolated for it (a policy with an empty
podSelector lists the direction among its effective policyTypes) and the pooled unrestricted rules
of those policies do not let every peer in (see `Reach`). Pure functions over plain JSON-shaped
data; malformed fields never raise, they count as the narrowest reading that cannot hide an opening.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from webhook.labels import NAMESPACE_NAME_LABEL, is_empty_selector


class Direction(StrEnum):
    INGRESS = "Ingress"
    EGRESS = "Egress"


DIRECTIONS: tuple[Direction, ...] = (Direction.INGRESS, Direction.EGRESS)
_RULES_KEY = {Direction.INGRESS: "ingress", Direction.EGRESS: "egress"}
_PEERS_KEY = {Direction.INGRESS: "from", Direction.EGRESS: "to"}
_V4_ALL = (0, 2**32 - 1)
_V6_ALL = (0, 2**128 - 1)
_MAPPED_V4 = ipaddress.IPv6Network("::ffff:0:0/96")

Interval = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Reach:
    """The peers a set of unrestricted rules admits for one direction.

    `everyone` is set by a rule with no peers, or by a peer that selects every namespace (or all
    but a few) with no pod restriction; `v4`/`v6` are the merged address ranges of ipBlocks with
    their `except`s removed.
    """

    everyone: bool = False
    v4: tuple[Interval, ...] = ()
    v6: tuple[Interval, ...] = ()

    @property
    def covers_all(self) -> bool:
        return self.everyone or _covers(self.v4, _V4_ALL) or _covers(self.v6, _V6_ALL)

    @property
    def is_nothing(self) -> bool:
        return not self.everyone and not self.v4 and not self.v6

    def union(self, other: Reach) -> Reach:
        return Reach(
            self.everyone or other.everyone,
            _merge([*self.v4, *other.v4]),
            _merge([*self.v6, *other.v6]),
        )


NOTHING = Reach()


@dataclass(frozen=True, slots=True)
class PolicyFacts:
    """What one NetworkPolicy contributes to its namespace's fence; all a decision needs of it."""

    namespace: str
    name: str
    created: str = ""  # creationTimestamp (RFC 3339 sorts as text); "" = unknown, oldest
    uid: str = ""
    resource_version: str = ""
    selects_all: bool = False  # empty podSelector
    types: frozenset[Direction] = frozenset()  # effective policyTypes, after API defaulting
    rule_count: Mapping[Direction, int] = field(default_factory=dict)
    reach: Mapping[Direction, Reach] = field(default_factory=dict)  # of unrestricted rules only

    def same_object(self, other: PolicyFacts) -> bool:
        """The same NetworkPolicy, perhaps another version: by uid when both have one, else name."""
        if self.uid and other.uid:
            return self.uid == other.uid
        return self.name == other.name

    @property
    def age_key(self) -> tuple[str, str]:
        """Older first: creationTimestamp, then name (the guard's tie-break)."""
        return (self.created, self.name)

    def isolates(self, direction: Direction) -> bool:
        return self.selects_all and direction in self.types

    def denies_all(self, direction: Direction) -> bool:
        """Isolates the direction and allows nothing for it (`definition: strict`)."""
        return self.isolates(direction) and self.rule_count.get(direction, 0) == 0

    def fences(self, direction: Direction, strict: bool) -> bool:
        return self.denies_all(direction) if strict else self.isolates(direction)

    def reach_for(self, direction: Direction) -> Reach:
        return self.reach.get(direction, NOTHING) if direction in self.types else NOTHING

    def opens_to_everyone(self, direction: Direction) -> bool:
        return self.reach_for(direction).covers_all


@dataclass(frozen=True, slots=True)
class DirectionFence:
    """The fence of one namespace for one direction."""

    fencing: tuple[str, ...]  # policies that fence it under the definition in use, oldest first
    neutralised_by: tuple[str, ...]  # empty-selector policies whose pooled rules admit everyone

    @property
    def fenced(self) -> bool:
        return bool(self.fencing) and not self.neutralised_by

    @property
    def neutralised(self) -> bool:
        return bool(self.neutralised_by)


def effective_policy_types(spec: Mapping[str, Any]) -> frozenset[Direction]:
    """policyTypes as the API server defaults them (pkg/apis/networking/v1/defaults.go).

    Absent or empty: Ingress, plus Egress only when `spec.egress` is non-empty. Objects read back
    from the API always carry the defaulted list; manifests on disk may not.
    """
    declared = spec.get("policyTypes")
    if isinstance(declared, list) and declared:
        return frozenset(Direction(t) for t in declared if t in Direction.__members__.values())
    egress = spec.get("egress")
    if isinstance(egress, list) and egress:
        return frozenset(DIRECTIONS)
    return frozenset({Direction.INGRESS})


def analyse_policy(obj: Mapping[str, Any]) -> PolicyFacts:
    """Reduce a NetworkPolicy object to the facts the fence rules read."""
    meta = _mapping(obj.get("metadata"))
    spec = _mapping(obj.get("spec"))
    types = effective_policy_types(spec)
    counts: dict[Direction, int] = {}
    reach: dict[Direction, Reach] = {}
    for direction in DIRECTIONS:
        rules = spec.get(_RULES_KEY[direction])
        rules = rules if isinstance(rules, list) else []
        counts[direction] = len(rules)
        reach[direction] = _rules_reach(rules, _PEERS_KEY[direction])
    return PolicyFacts(
        namespace=_str(meta.get("namespace")),
        name=_str(meta.get("name")),
        created=_str(meta.get("creationTimestamp")),
        uid=_str(meta.get("uid")),
        resource_version=_str(meta.get("resourceVersion")),
        selects_all=is_empty_selector(spec.get("podSelector")),
        types=types,
        rule_count=counts,
        reach=reach,
    )


def fence_for(
    policies: Iterable[PolicyFacts], direction: Direction, *, strict: bool = False
) -> DirectionFence:
    """The namespace's fence for one direction, given all its policies."""
    fencing: list[PolicyFacts] = []
    pooled = NOTHING
    contributors: list[str] = []
    for policy in policies:
        if not policy.selects_all:
            continue
        if policy.fences(direction, strict):
            fencing.append(policy)
        reach = policy.reach_for(direction)
        if not reach.is_nothing:
            pooled = pooled.union(reach)
            contributors.append(policy.name)
    fencing.sort(key=lambda p: p.age_key)
    neutralised_by = tuple(sorted(contributors)) if pooled.covers_all else ()
    return DirectionFence(tuple(p.name for p in fencing), neutralised_by)


# --- rules and peers -------------------------------------------------------------------------


def _rules_reach(rules: list[Any], peers_key: str) -> Reach:
    """The pooled peers of the rules that put no port restriction on TCP or UDP."""
    result = NOTHING
    for rule in rules:
        if not isinstance(rule, Mapping) or not _ports_unrestricted(rule.get("ports")):
            continue
        result = result.union(_peers_reach(rule.get(peers_key)))
    return result


def _ports_unrestricted(ports: object) -> bool:
    """No `ports`, or the entries for TCP or for UDP together cover 1-65535.

    Absent protocol is TCP; an entry without `port` is every port of its protocol; `endPort`
    makes a range; a named port restricts (what it resolves to depends on each pod).
    """
    if ports is None or ports == []:
        return True
    if not isinstance(ports, list):
        return False
    ranges: dict[str, list[Interval]] = {"TCP": [], "UDP": []}
    for entry in ports:
        if not isinstance(entry, Mapping):
            continue
        protocol = entry.get("protocol") or "TCP"
        if protocol not in ranges:
            continue
        port = entry.get("port")
        if port is None:
            ranges[protocol].append((1, 65535))
            continue
        start = _port_number(port)
        if start is None:
            continue
        end = entry.get("endPort")
        stop = end if isinstance(end, int) and not isinstance(end, bool) and end >= start else start
        ranges[protocol].append((start, stop))
    return any(_covers(_merge(r), (1, 65535)) for r in ranges.values())


def _port_number(port: object) -> int | None:
    if isinstance(port, bool):
        return None
    if isinstance(port, int):
        return port
    # IntOrString: a digit string is not a valid name (names need a letter); read it as the number,
    # the reading that cannot hide an opening.
    if isinstance(port, str) and port.isdigit():
        return int(port)
    return None


def _peers_reach(peers: object) -> Reach:
    if peers is None or peers == []:
        return Reach(everyone=True)
    if not isinstance(peers, list):
        return NOTHING
    everyone = False
    v4: list[Interval] = []
    v6: list[Interval] = []
    for peer in peers:
        if not isinstance(peer, Mapping):
            continue
        block = peer.get("ipBlock")
        if isinstance(block, Mapping):
            block_v4, block_v6 = _ip_block_ranges(block)
            v4 += block_v4
            v6 += block_v6
        elif "namespaceSelector" in peer and _selects_almost_every_namespace(
            peer.get("namespaceSelector")
        ):
            everyone = everyone or is_empty_selector(peer.get("podSelector"))
    return Reach(everyone, _merge(v4), _merge(v6))


def _selects_almost_every_namespace(selector: object) -> bool:
    """`{}`, or only requirements that exclude a few: NotIn, DoesNotExist, metadata.name Exists."""
    if selector is None:
        return True
    if not isinstance(selector, Mapping) or selector.get("matchLabels"):
        return False
    expressions = selector.get("matchExpressions") or []
    if not isinstance(expressions, list):
        return False
    for expr in expressions:
        if not isinstance(expr, Mapping):
            return False
        operator = expr.get("operator")
        if operator in ("NotIn", "DoesNotExist"):
            continue
        if operator == "Exists" and expr.get("key") == NAMESPACE_NAME_LABEL:
            continue
        return False
    return True


# --- addresses -------------------------------------------------------------------------------

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_cidr_sloppy(value: object) -> Network | None:
    """Parse a CIDR as kube-apiserver's ParseCIDRSloppy does (k8s.io/utils/net/parse.go).

    Leading zeros in IPv4 octets are decimal (`010.0.0.0/8` is 10.0.0.0/8) and host bits are
    ignored; objects stored before strict CIDR validation (1.33) may still hold such values.
    IPv4-mapped IPv6 prefixes (`::ffff:0:0/96` and longer) are returned as the IPv4 network.
    """
    if not isinstance(value, str):
        return None
    address, slash, prefix = value.strip().partition("/")
    if not slash or not prefix.isdigit():
        return None
    head, colon, tail = address.rpartition(":")
    if "." in tail:  # IPv4, or the dotted tail of an IPv4-mapped IPv6 address
        octets = tail.split(".")
        if not all(o.isdigit() for o in octets):
            return None
        tail = ".".join(str(int(o)) for o in octets)
        address = f"{head}{colon}{tail}"
    try:
        network: Network = ipaddress.ip_network(f"{address}/{int(prefix)}", strict=False)
    except ValueError:
        return None
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED_V4):
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}", strict=False)
    return network


def _ip_block_ranges(block: Mapping[str, Any]) -> tuple[list[Interval], list[Interval]]:
    network = parse_cidr_sloppy(block.get("cidr"))
    if network is None:
        return [], []
    ranges = [_interval(network)]
    excepts = block.get("except")
    for raw in excepts if isinstance(excepts, list) else []:
        hole = parse_cidr_sloppy(raw)
        if hole is not None and hole.version == network.version:
            ranges = _subtract(ranges, _interval(hole))
    return (ranges, []) if network.version == 4 else ([], ranges)


def _interval(network: Network) -> Interval:
    return int(network.network_address), int(network.broadcast_address)


def _subtract(ranges: list[Interval], hole: Interval) -> list[Interval]:
    out: list[Interval] = []
    for start, end in ranges:
        if hole[1] < start or hole[0] > end:
            out.append((start, end))
            continue
        if hole[0] > start:
            out.append((start, hole[0] - 1))
        if hole[1] < end:
            out.append((hole[1] + 1, end))
    return out


def _merge(ranges: Iterable[Interval]) -> tuple[Interval, ...]:
    merged: list[Interval] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


def _covers(ranges: Sequence[Interval], whole: Interval) -> bool:
    return any(start <= whole[0] and end >= whole[1] for start, end in _merge(ranges))


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""
