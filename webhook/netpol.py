"""NetworkPolicy analysis: which directions a namespace's policies fence, and what neutralises one.

A namespace is fenced for a direction when every pod is isolated for it (a policy with an empty
podSelector lists the direction among its effective policyTypes) and the direction is not
neutralised: pooled over every rule of every policy whose podSelector opens every pod (the empty
label set satisfies it), jointly on ports x peers, no protocol is open to every peer on every port
(`webhook.reach`). Each policy is reduced once (`analyse_policy`) after a linear count against the
limits; an over-limit policy is refused unanalysed and counts fail-closed: it neutralises every
direction among its policyTypes. Pure functions over plain JSON-shaped data; malformed fields
never raise.

A pool's joint verdict is a function of its members' specs and the limits alone, so it is
remembered process-wide (`_POOLS`, bounded, least recently used first out) under a digest of
those specs: every rule of every request, and the informer, share one computation per policy set
of a namespace. The key is never a uid or resourceVersion (a forged review chooses those, a
CREATE or a manifest on disk has none): a review whose specs digest alike has the same pool.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from hashlib import blake2b
from typing import Any

import orjson

from webhook.label_trust import TrustedSelector, trusted_selectors
from webhook.labels import LabelSelector, is_empty_selector, parse_selector_lenient
from webhook.labels import satisfiable_together as _satisfiable_together
from webhook.netpol_limits import CONFIG_KEYS, DEFAULT_LIMITS, Limits, PolicySize, measure
from webhook.netpol_read import parse_cidr_sloppy, read_openings
from webhook.reach import PROTOCOLS, Opening, PeerSpace, ProtocolVerdict, group, judge_protocol

__all__ = [
    "DEFAULT_LIMITS",
    "DIRECTIONS",
    "Direction",
    "DirectionFence",
    "Limits",
    "PolicyFacts",
    "PolicySize",
    "Reach",
    "analyse_policy",
    "effective_policy_types",
    "fence_for",
    "fences_by_definition",
    "namespace_refusal",
    "opens_selected_to_everyone",
    "parse_cidr_sloppy",
]


class Direction(StrEnum):
    INGRESS = "Ingress"
    EGRESS = "Egress"


DIRECTIONS: tuple[Direction, ...] = (Direction.INGRESS, Direction.EGRESS)
NO_SIZE = PolicySize()
_RULES_KEY = {Direction.INGRESS: "ingress", Direction.EGRESS: "egress"}
_PEERS_KEY = {Direction.INGRESS: "from", Direction.EGRESS: "to"}


@dataclass(frozen=True, slots=True)
class Reach:
    """What one policy's rules open for one direction: openings grouped by protocol and ports,
    and the policy's own verdict per protocol that has openings (what it opens alone)."""

    openings: tuple[Opening, ...] = ()
    verdicts: tuple[ProtocolVerdict, ...] = ()

    @property
    def is_nothing(self) -> bool:
        return not self.openings

    @property
    def neutralises(self) -> frozenset[str]:
        """The protocols this policy alone opens to every peer on every port."""
        return frozenset(v.protocol for v in self.verdicts if v.neutralised)

    def verdict(self, protocol: str) -> ProtocolVerdict | None:
        return next((v for v in self.verdicts if v.protocol == protocol), None)


NOTHING = Reach()


@dataclass(frozen=True, slots=True)
class PolicyFacts:
    """What one NetworkPolicy contributes to its namespace's fence; all a decision needs of it."""

    namespace: str
    name: str
    created: str = ""  # creationTimestamp (RFC 3339 sorts as text); "" = unknown, oldest
    uid: str = ""
    resource_version: str = ""
    selects_all: bool = False  # empty podSelector: isolates every pod (the isolation reading)
    opens_all_pods: bool = False  # the empty label set satisfies it (the openings reading)
    pod_selector: LabelSelector | None = None  # None: malformed, selects no pod
    types: frozenset[Direction] = frozenset()  # effective policy types, after API defaulting
    rule_count: Mapping[Direction, int] = field(default_factory=dict)
    reach: Mapping[Direction, Reach] = field(default_factory=dict)
    refused: str = ""  # the limit the policy exceeds (one line); it was not analysed then
    size: PolicySize = NO_SIZE
    # Allow-rule peers whose namespaceSelector keys on a label other than the namespace's name:
    # they trust whoever may label namespaces (`webhook.label_trust`); () when refused.
    label_trust: tuple[TrustedSelector, ...] = ()
    # Not (yet) in the cluster's view: a version this process just approved (webhook.cluster.
    # approvals). Rules read it as an addition, never as what was there before.
    remembered: bool = field(default=False, compare=False)
    # What its reach is a function of (with the limits): a digest of the spec, b"" when the
    # spec cannot be encoded canonically (a pool holding it is then never remembered).
    spec_digest: bytes = field(default=b"", compare=False, repr=False)

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
        """Alone, it opens the pods it selects to every peer on every port of some protocol.

        A refused policy is taken to (fail-closed).
        """
        if direction not in self.types:
            return False
        return bool(self.refused) or bool(self.reach_for(direction).neutralises)


@dataclass(frozen=True, slots=True)
class DirectionFence:
    """The fence of one namespace for one direction."""

    fencing: tuple[str, ...]  # policies that fence it under the definition in use, oldest first
    neutralised_by: tuple[str, ...] = ()  # all-pods policies whose pooled rules admit everyone
    nearly_all_by: tuple[str, ...] = ()  # all-pods policies whose pool is open all but a little
    nearly_all: str = ""  # what that near-total opening leaves out
    refused: tuple[str, ...] = ()  # policies over a limit, not analysed: they count as openers
    over_limit: str = ""  # the namespace is over a limit: nothing is fenced (one line)

    @property
    def fenced(self) -> bool:
        return bool(self.fencing) and not self.neutralised

    @property
    def neutralised(self) -> bool:
        return bool(self.neutralised_by or self.refused or self.over_limit)

    @property
    def openers(self) -> tuple[str, ...]:
        """Who opens a neutralised direction: the pooled policies, those over a limit (named as
        such), or the namespace itself when it is over one."""
        refused = tuple(f"{name} (over a limit, not analysed)" for name in self.refused)
        over = (f"(the namespace is over a limit: {self.over_limit})",) if self.over_limit else ()
        return tuple(sorted(self.neutralised_by)) + refused + over


def effective_policy_types(spec: Mapping[str, Any]) -> frozenset[Direction]:
    """policyTypes as the API server defaults them (pkg/apis/networking/v1/defaults.go).

    Absent, null or empty: Ingress, plus Egress only when `spec.egress` is non-empty. Objects read
    back from the API always carry the defaulted list; manifests on disk may not.
    """
    declared = spec.get("policyTypes")
    if isinstance(declared, list) and declared:
        return frozenset(Direction(t) for t in declared if t in Direction.__members__.values())
    egress = spec.get("egress")
    if isinstance(egress, list) and egress:
        return frozenset(DIRECTIONS)
    return frozenset({Direction.INGRESS})


def analyse_policy(obj: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS) -> PolicyFacts:
    """Reduce a NetworkPolicy object to the facts the fence rules read.

    The limits are checked first, by a linear count; an over-limit policy keeps its identity,
    selector and policy types but no reach, and `refused` says which limit it exceeds.
    """
    meta = _mapping(obj.get("metadata"))
    spec = _mapping(obj.get("spec"))
    types = effective_policy_types(spec)
    size, where = measure(spec)
    refused = limits.refusal(size, where)
    raw_selector = spec.get("podSelector")
    selector = parse_selector_lenient(raw_selector)
    counts: dict[Direction, int] = {}
    reach: dict[Direction, Reach] = {}
    for direction in DIRECTIONS:
        rules = spec.get(_RULES_KEY[direction])
        counts[direction] = len(rules) if isinstance(rules, list) else 0
        if not refused and direction in types:
            openings = read_openings(rules, _PEERS_KEY[direction])
            reach[direction] = _reach(openings, limits.peer_space)
    return PolicyFacts(
        namespace=_str(meta.get("namespace")),
        name=_str(meta.get("name")),
        created=_str(meta.get("creationTimestamp")),
        uid=_str(meta.get("uid")),
        resource_version=_str(meta.get("resourceVersion")),
        selects_all=is_empty_selector(raw_selector),
        opens_all_pods=selector is not None and selector.matches_empty,
        pod_selector=selector,
        types=types,
        rule_count=counts,
        reach=reach,
        refused=refused,
        size=size,
        label_trust=() if refused else trusted_selectors(spec, (d.value for d in types)),
        spec_digest=b"" if refused else spec_digest(spec),  # a refused one is in no pool
    )


def spec_digest(spec: Mapping[str, Any]) -> bytes:
    """A 128-bit digest of a spec's canonical JSON (keys sorted), b"" when it has none: a key
    that is not a string, an integer past 64 bits. Linear, in C, after the limits' own count."""
    try:
        encoded = orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return b""
    return blake2b(encoded, digest_size=16).digest()


def _reach(openings: tuple[Opening, ...], space: PeerSpace) -> Reach:
    if not openings:
        return NOTHING
    grouped = group(openings)
    verdicts = []
    for protocol in PROTOCOLS:
        mine = [o for o in grouped if o.protocol == protocol]
        if mine:
            verdicts.append(judge_protocol(protocol, mine, space))
    return Reach(grouped, tuple(verdicts))


def namespace_refusal(policies: Sequence[PolicyFacts], limits: Limits = DEFAULT_LIMITS) -> str:
    """The namespace-wide limit its policies exceed (one line), or ""."""
    if len(policies) > limits.max_policies_per_namespace:
        key = CONFIG_KEYS["max_policies_per_namespace"]
        return (
            f"limits.{key} is {limits.max_policies_per_namespace}; "
            f"the namespace has {len(policies)} NetworkPolicies"
        )
    entries = sum(p.size.entries for p in policies if p.opens_all_pods and not p.refused)
    if entries > limits.max_entries_per_namespace:
        key = CONFIG_KEYS["max_entries_per_namespace"]
        return (
            f"limits.{key} is {limits.max_entries_per_namespace}; the namespace's "
            f"NetworkPolicies for all pods have {entries}"
        )
    return ""


def fence_for(
    policies: Iterable[PolicyFacts],
    direction: Direction,
    *,
    strict: bool = False,
    limits: Limits = DEFAULT_LIMITS,
) -> DirectionFence:
    """The namespace's fence for one direction, given all its policies."""
    return fences_by_definition(policies, direction, limits=limits)[strict]


def fences_by_definition(
    policies: Iterable[PolicyFacts], direction: Direction, *, limits: Limits = DEFAULT_LIMITS
) -> Mapping[bool, DirectionFence]:
    """`fence_for` under both definitions (False: isolating, True: strict), pooling once."""
    policies = tuple(policies)
    oldest_first = sorted(policies, key=lambda p: p.age_key)
    fencing = {
        s: tuple(p.name for p in oldest_first if p.fences(direction, s)) for s in (False, True)
    }
    opening = _opening(policies, direction, limits)
    return {s: dataclasses.replace(opening, fencing=fencing[s]) for s in fencing}


def _opening(
    policies: tuple[PolicyFacts, ...], direction: Direction, limits: Limits
) -> DirectionFence:
    """What the namespace's policies open for a direction (`fencing` left empty)."""
    refused = tuple(sorted(p.name for p in policies if p.refused and direction in p.types))
    over_limit = namespace_refusal(policies, limits)
    if over_limit:
        return DirectionFence((), refused=refused, over_limit=over_limit)
    pool = [p for p in policies if p.opens_all_pods and not p.refused]
    verdicts = _pool_verdicts(pool, direction, limits)
    neutralising = {v.protocol for v in verdicts if v.neutralised}
    if neutralising:
        by = _contributors(pool, direction, neutralising)
        return DirectionFence((), neutralised_by=by, refused=refused)
    nearly = [v for v in verdicts if v.nearly]
    if nearly and not refused:  # a refused policy neutralises already: say that, not less
        return DirectionFence(
            (),
            nearly_all_by=_contributors(pool, direction, {v.protocol for v in nearly}),
            nearly_all=_nearly_text(nearly),
        )
    return DirectionFence((), refused=refused)


def opens_selected_to_everyone(
    subject: PolicyFacts,
    policies: Iterable[PolicyFacts],
    direction: Direction,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> bool:
    """Some pod `subject` selects is open to every peer on every port of some protocol.

    Pooled over `subject` and every other policy whose pod selector one label set can satisfy
    together with the subject's: pairwise, an over-approximation (two such policies may exclude
    each other), so it warns more than an exact answer would. A refused policy among them counts
    as open (fail-closed), as does a namespace over a limit or a pool whose entries exceed
    `max_entries_per_namespace`.
    """
    if direction not in subject.types or subject.pod_selector is None:
        return False
    if subject.refused:
        return True
    others = tuple(p for p in policies if not p.same_object(subject))
    if namespace_refusal((*others, subject), limits):
        return True
    pool = [subject]
    budget = limits.max_entries_per_namespace - subject.size.entries
    for other in others:
        if other.pod_selector is None or not _satisfiable_together(
            subject.pod_selector, other.pod_selector
        ):
            continue
        if direction not in other.types:
            continue
        budget -= other.size.entries
        if other.refused or budget < 0:
            return True  # not analysed, or more to pool than the limit allows: fail-closed
        pool.append(other)
    return any(v.neutralised for v in _pool_verdicts(pool, direction, limits))


def _pool_verdicts(
    pool: Sequence[PolicyFacts], direction: Direction, limits: Limits
) -> list[ProtocolVerdict]:
    """Per protocol, the joint verdict of the pooled policies' rules for the direction, in the
    peer space of `limits`.

    A policy's own verdict stands for the pool when it opens a protocol alone: it was judged in
    the peer space of the `Limits` it was analysed under, the same one but across a config change
    (the informer's copies keep the space in force when `serve` started). The joint sweep (two
    or more policies open a protocol) is remembered by the pool's specs and the limits.
    """
    reaches = [p.reach_for(direction) for p in pool]
    verdicts: list[ProtocolVerdict] = []
    key: tuple[object, ...] | None = None
    for protocol in PROTOCOLS:
        alone = [v for r in reaches if (v := r.verdict(protocol)) is not None]
        if any(v.neutralised for v in alone):
            verdicts.append(ProtocolVerdict(protocol, neutralised=True))
        elif len(alone) == 1:
            verdicts.append(alone[0])  # one policy opens it: its own verdict is the pool's
        elif alone:
            if key is None:
                key = _pool_key(pool, direction, limits)
            remembered = _POOLS.get((key, protocol)) if key else None
            if remembered is None:
                remembered = _joint(reaches, protocol, limits.peer_space)
                if key:
                    _POOLS.put((key, protocol), remembered)
            verdicts.append(remembered)
    return verdicts


def _joint(reaches: Sequence[Reach], protocol: str, space: PeerSpace) -> ProtocolVerdict:
    openings = [o for r in reaches for o in r.openings if o.protocol == protocol]
    return judge_protocol(protocol, group(openings), space)


def _pool_key(
    pool: Sequence[PolicyFacts], direction: Direction, limits: Limits
) -> tuple[object, ...]:
    """What a pool's verdict for `direction` is a function of: each member's spec (a multiset:
    sorted digests; a member is never refused, so the limits decided nothing else of its reach)
    and the limits analysis ran under. `()` when a spec has no digest."""
    digests = sorted(p.spec_digest for p in pool)
    if not digests or not digests[0]:
        return ()
    # One fixed-size digest of the sorted member digests: a key costs the same for 2 or 500.
    return (direction, limits, blake2b(b"".join(digests), digest_size=16).digest())


class _Memo:
    """A bounded, thread-safe map of computed verdicts, least recently used evicted first
    (decisions may run on worker threads; the lock is held for a lookup, never a computation)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._values: OrderedDict[object, ProtocolVerdict] = OrderedDict()

    def get(self, key: object) -> ProtocolVerdict | None:
        with self._lock:
            value = self._values.get(key)
            if value is not None:
                self._values.move_to_end(key)
            return value

    def put(self, key: object, value: ProtocolVerdict) -> None:
        with self._lock:
            self._values[key] = value
            if len(self._values) > self._size:
                self._values.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


# About 4,000 namespaces' policy sets, each protocol of a direction a small verdict.
_POOLS = _Memo(16_384)


def _nearly_text(verdicts: Sequence[ProtocolVerdict]) -> str:
    """'TCP, UDP: every port open to all but 1 IPv4 address; SCTP: ...' (alike protocols joined)."""
    by_text: dict[str, list[str]] = {}
    for verdict in verdicts:
        by_text.setdefault(verdict.left_out, []).append(verdict.protocol)
    return "; ".join(f"{', '.join(protocols)}: {text}" for text, protocols in by_text.items())


def _contributors(
    pool: Sequence[PolicyFacts], direction: Direction, protocols: set[str]
) -> tuple[str, ...]:
    return tuple(
        sorted(
            p.name
            for p in pool
            if any(o.protocol in protocols for o in p.reach_for(direction).openings)
        )
    )


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""
