"""Reach as sets: which peers reach a pod on which ports, and whether that is everyone everywhere.

An `Opening` is one protocol's port intervals paired with the `Peers` allowed on them. A pool of
openings is judged per protocol, jointly on ports x peers: cut 1-65535 at every opening's port
edges; on each segment the peers of the openings open there are united. The protocol is
*neutralised* when every segment's union is every peer (`everyone`, or every address of a family
that can be a peer: `PeerSpace`), *nearly* open when the ports that leave out a /16 of IPv4 peers
or more and a /48 of IPv6 peers or more number fewer than `NEAR_PORTS`, or all lie in the dynamic
range (`DYNAMIC_PORTS`). Cost: O(n log n) in the pool's intervals (port edges x address intervals
of an opening), one sort and one sweep with a coverage tree per family; nothing is re-merged per
rule.

Intervals are inclusive `(start, end)` pairs of ints; every tuple of intervals here is merged
(sorted, disjoint, not adjacent) unless its name says otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from webhook.covered_length import Coverage

Interval = tuple[int, int]
Intervals = tuple[Interval, ...]

PROTOCOLS: tuple[str, ...] = ("TCP", "UDP", "SCTP")
PORT_MIN, PORT_MAX = 1, 65535
ALL_PORTS: Intervals = ((PORT_MIN, PORT_MAX),)
V4_SIZE = 2**32
V6_SIZE = 2**128
# ::ffff:0:0/96 holds no IPv6 peer: an address there is an IPv4 peer (Go's net.IP.To4), and an
# IPv6 ipBlock never matches it.
MAPPED_V4: Interval = (0xFFFF << 32, (0xFFFF << 32) + V4_SIZE - 1)

NEAR_PORTS = 1024  # a near-total opening leaves out fewer ports than this ...
NEAR_V4 = 2**16  # ... where it leaves out a /16 of IPv4 peers or more
NEAR_V6 = 2**80  # ... and a /48 of IPv6 peers or more
# ... or leaves out only ports of the dynamic range (RFC 6335's 49152-65535): services listen
# there too (TURN relays, RPC; Linux hands out 32768-60999 for bind(0)), so an opening that stops
# short of it is as open as one that stops short of a few ports.
DYNAMIC_PORTS: Interval = (49152, PORT_MAX)


def _prefix(address: int, bits: int, width: int) -> Interval:
    return address, address + (1 << (width - bits)) - 1


# Addresses that are never the peer of a Pod's traffic: the source or destination address of a
# packet NetworkPolicy applies to is never loopback (127.0.0.0/8, ::1: a pod's own loopback
# traffic never leaves it), "this network" (0.0.0.0/8) or unspecified (::), and no IPv6 peer lies
# in the IPv4-mapped range.
NEVER_V4: Intervals = (_prefix(0, 8, 32), _prefix(127 << 24, 8, 32))
NEVER_V6: Intervals = ((0, 1), MAPPED_V4)
# Ranges a cluster's network may or may not use for Pods and Services, by config name
# (`defaultDeny.peerRanges`): unused, they hold no peer. Multicast: some plugins (Antrea) forward
# Pod multicast. Class E with the limited broadcast (240.0.0.0/4, 255.255.255.255 in it): some
# clusters (GKE's Class E option) number Pods and Services there.
PEER_RANGES: Mapping[str, tuple[Intervals, Intervals]] = {
    "multicast": ((_prefix(224 << 24, 4, 32),), (_prefix(0xFF << 120, 8, 128),)),
    "classE": ((_prefix(240 << 24, 4, 32),), ()),
}


def merge(ranges: Iterable[Interval]) -> Intervals:
    """Sorted, disjoint, non-adjacent intervals covering the same points (one sort, one sweep)."""
    merged: list[Interval] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1] + 1:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return tuple(merged)


def subtract(ranges: Intervals, holes: Iterable[Interval]) -> Intervals:
    """`ranges` (merged) without the points of `holes` (any order): one sort, one sweep."""
    cut = merge(holes)
    out: list[Interval] = []
    first = 0
    for start, end in ranges:
        while first < len(cut) and cut[first][1] < start:
            first += 1
        point = start
        index = first
        while index < len(cut) and cut[index][0] <= end:
            hole_start, hole_end = cut[index]
            if hole_start > point:
                out.append((point, hole_start - 1))
            point = max(point, hole_end + 1)
            if hole_end > end:
                break
            index += 1
        if point <= end:
            out.append((point, end))
    return tuple(out)


def length(ranges: Intervals) -> int:
    return sum(end - start + 1 for start, end in ranges)


def covers(ranges: Intervals, whole: Interval) -> bool:
    """`ranges` (merged) contain every point of `whole`."""
    return any(start <= whole[0] and end >= whole[1] for start, end in ranges)


@dataclass(frozen=True, slots=True)
class Peers:
    """Who a rule lets in: `everyone` (a peer counting as every peer), or address ranges."""

    everyone: bool = False
    v4: Intervals = ()
    v6: Intervals = ()

    @property
    def is_nothing(self) -> bool:
        return not self.everyone and not self.v4 and not self.v6


NOBODY = Peers()
EVERYONE = Peers(everyone=True)


@dataclass(frozen=True, slots=True)
class PeerSpace:
    """The addresses that can be a peer, per family, as the ranges that cannot (merged).

    Every coverage count starts with the ranges that cannot be covered: an opening to every other
    address of a family is every peer of it, and what a near-total opening leaves out counts only
    addresses that can be peers.
    """

    never_v4: Intervals
    never_v6: Intervals

    @property
    def v4_peers(self) -> int:
        return V4_SIZE - length(self.never_v4)

    @property
    def v6_peers(self) -> int:
        return V6_SIZE - length(self.never_v6)

    def v4_in(self, ranges: Intervals) -> int:
        """How many IPv4 peers the (merged) `ranges` hold."""
        return length(subtract(ranges, self.never_v4))

    def v6_in(self, ranges: Intervals) -> int:
        return length(subtract(ranges, self.never_v6))


def peer_space(uses: Iterable[str] = ()) -> PeerSpace:
    """The peer space of a cluster that uses the `PEER_RANGES` named in `uses`."""
    used = set(uses)
    if used - PEER_RANGES.keys():
        raise KeyError(f"unknown peer ranges: {sorted(used - PEER_RANGES.keys())}")
    unused = [ranges for name, ranges in PEER_RANGES.items() if name not in used]
    return PeerSpace(
        merge([*NEVER_V4, *(r for v4, _ in unused for r in v4)]),
        merge([*NEVER_V6, *(r for _, v6 in unused for r in v6)]),
    )


DEFAULT_PEER_SPACE = peer_space()


def unite(peers: Sequence[Peers]) -> Peers:
    """The union of several peer sets, merging each family once."""
    if len(peers) == 1:
        return peers[0]
    if any(p.everyone for p in peers):
        return EVERYONE  # every peer already; the address ranges add nothing
    return Peers(
        False, merge(r for p in peers for r in p.v4), merge(r for p in peers for r in p.v6)
    )


@dataclass(frozen=True, slots=True)
class Opening:
    """Peers allowed on some ports of one protocol."""

    protocol: str
    ports: Intervals
    peers: Peers


def group(openings: Iterable[Opening]) -> tuple[Opening, ...]:
    """One opening per (protocol, ports), its peers united: fewer, larger sets to sweep."""
    by_key: dict[tuple[str, Intervals], list[Peers]] = {}
    for opening in openings:
        by_key.setdefault((opening.protocol, opening.ports), []).append(opening.peers)
    return tuple(Opening(proto, ports, unite(peers)) for (proto, ports), peers in by_key.items())


@dataclass(frozen=True, slots=True)
class ProtocolVerdict:
    """How far a pool opens one protocol; `left_out` describes a near-total opening."""

    protocol: str
    neutralised: bool = False
    nearly: bool = False
    short_ports: Intervals = ()  # ports where the opening leaves out a /16 and a /48 or more
    left_out_v4: int = 0  # most IPv4 addresses left out on a nearly-open, not fully open port
    left_out_v6: int = 0  # the same for IPv6, when IPv6 is what makes the port nearly open

    @property
    def left_out(self) -> str:
        """What a near-total opening leaves out, without the protocol: "every port but 65535 open
        to every peer", "every port open to all but 1 IPv4 address"."""
        ports = "every port"
        if self.short_ports:
            shown = ", ".join(_port_text(r) for r in self.short_ports[:3])
            if len(self.short_ports) > 3:
                shown += f", ... ({length(self.short_ports)} ports)"
            ports = f"every port but {shown}"
        peers = "every peer"
        if self.left_out_v4:
            n = self.left_out_v4
            peers = f"all but {n} IPv4 address{'es' * (n > 1)}"
        elif self.left_out_v6:
            peers = f"all but about 2^{self.left_out_v6.bit_length() - 1} IPv6 addresses"
        return f"{ports} open to {peers}"


def _port_text(ports: Interval) -> str:
    return str(ports[0]) if ports[0] == ports[1] else f"{ports[0]}-{ports[1]}"


def judge_protocol(
    protocol: str, openings: Sequence[Opening], space: PeerSpace = DEFAULT_PEER_SPACE
) -> ProtocolVerdict:
    """Joint ports x peers verdict for one protocol's openings (each opening's ports merged), over
    the addresses `space` says can be peers."""
    everyone_ports = merge(r for o in openings if o.peers.everyone for r in o.ports)
    if covers(everyone_ports, (PORT_MIN, PORT_MAX)):
        return ProtocolVerdict(protocol, neutralised=True)
    addressed = [o for o in openings if not o.peers.everyone and (o.peers.v4 or o.peers.v6)]
    # A family whose union over every port is short of nearly every peer can be neither full
    # nor nearly full on any one port: leave it out of the sweep.
    all_v4 = merge(r for o in addressed for r in o.peers.v4)
    all_v6 = merge(r for o in addressed for r in o.peers.v6)
    use_v4 = space.v4_peers - space.v4_in(all_v4) < NEAR_V4
    use_v6 = space.v6_peers - space.v6_in(all_v6) < NEAR_V6
    if not (use_v4 or use_v6):
        short = subtract(ALL_PORTS, everyone_ports)
        return ProtocolVerdict(protocol, nearly=_near_ports(short), short_ports=short)
    openings = [o for o in openings if o.peers.everyone] + addressed
    steps = _steps(openings)
    bounded = _bounded_pass(protocol, openings, steps, use_v4, use_v6, space=space)
    if bounded is not None:
        return bounded
    return _tree_pass(protocol, openings, steps, use_v4, use_v6, space=space)


def _near_ports(short: Intervals) -> bool:
    """The ports left out (merged) are few enough, or all in the dynamic range, to be near-total."""
    return length(short) < NEAR_PORTS or (bool(short) and short[0][0] >= DYNAMIC_PORTS[0])


Step = tuple[int, int, list[tuple[int, int]]]  # first port, last port, (delta, opening) changes


def _steps(openings: Sequence[Opening]) -> list[Step]:
    """The port segments in order, each with the openings that open (+1) or close (-1) there."""
    events: list[tuple[int, int, int]] = []
    for index, opening in enumerate(openings):
        for start, end in opening.ports:
            events.append((start, 1, index))
            if end < PORT_MAX:
                events.append((end + 1, -1, index))
    events.sort()
    steps: list[Step] = []
    position, i = PORT_MIN, 0
    while position <= PORT_MAX:
        changes: list[tuple[int, int]] = []
        while i < len(events) and events[i][0] == position:
            changes.append((events[i][1], events[i][2]))
            i += 1
        end = events[i][0] - 1 if i < len(events) else PORT_MAX
        steps.append((position, end, changes))
        position = end + 1
    return steps


class _Tally:
    """Segments classified one by one: every peer, nearly every peer, or short of that."""

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.all_full = True
        self.short: list[Interval] = []
        self.short_count = 0
        self.short_below_dynamic = False  # some short port lies below DYNAMIC_PORTS
        self.worst_v4 = 0
        self.worst_v6 = 0

    def segment(self, start: int, end: int, missing_v4: int, missing_v6: int) -> None:
        if missing_v4 == 0 or missing_v6 == 0:
            return
        self.all_full = False
        if missing_v4 < NEAR_V4:
            self.worst_v4 = max(self.worst_v4, missing_v4)
        elif missing_v6 < NEAR_V6:
            self.worst_v6 = max(self.worst_v6, missing_v6)
        else:
            self.short.append((start, end))
            self.short_count += end - start + 1
            self.short_below_dynamic |= start < DYNAMIC_PORTS[0]

    @property
    def hopeless(self) -> bool:
        """Already neither neutralised nor nearly open: the rest cannot change that (short ports
        only grow, and one below the dynamic range stays)."""
        return self.short_count >= NEAR_PORTS and self.short_below_dynamic

    def verdict(self) -> ProtocolVerdict:
        if self.hopeless:
            return ProtocolVerdict(self.protocol)
        if self.all_full:
            return ProtocolVerdict(self.protocol, neutralised=True)
        return ProtocolVerdict(
            self.protocol,
            nearly=True,
            short_ports=merge(self.short),
            left_out_v4=self.worst_v4,
            left_out_v6=0 if self.worst_v4 else self.worst_v6,
        )


def _bounded_pass(
    protocol: str,
    openings: Sequence[Opening],
    steps: list[Step],
    use_v4: bool,
    use_v6: bool,
    *,
    space: PeerSpace,
) -> ProtocolVerdict | None:
    """The verdict without a coverage tree, when no segment needs one; else None.

    A segment with at most one address opening is known exactly; one whose openings' lengths
    add up to less than nearly everything is short whatever they overlap. Spread-out hostile
    shapes end here (or stop early, once 1,024 ports are short, one below the dynamic range).
    Lengths count peers only: what `space` says cannot be one is left out of every sum.
    """
    len_v4 = [space.v4_in(o.peers.v4) for o in openings]
    len_v6 = [space.v6_in(o.peers.v6) for o in openings]
    base_v4, base_v6 = space.v4_peers, space.v6_peers  # peers left out when no range is open
    tally = _Tally(protocol)
    everyone = active = last = 0
    sum_v4 = sum_v6 = 0
    needs_tree = False
    for start, end, changes in steps:
        for delta, index in changes:
            if openings[index].peers.everyone:
                everyone += delta
                continue
            active += delta
            last ^= index  # with one opening active, the xor of the active indices is its index
            sum_v4 += delta * len_v4[index]
            sum_v6 += delta * len_v6[index]
        if everyone:
            continue
        if active <= 1:
            missing_v4 = base_v4 - (len_v4[last] if active else 0)
            missing_v6 = base_v6 - (len_v6[last] if active else 0)
        else:
            missing_v4 = base_v4 - sum_v4 if use_v4 else V4_SIZE  # at least this much
            missing_v6 = base_v6 - sum_v6 if use_v6 else V6_SIZE
            if missing_v4 < NEAR_V4 or missing_v6 < NEAR_V6:
                needs_tree = True
                continue
        tally.segment(
            start, end, missing_v4 if use_v4 else V4_SIZE, missing_v6 if use_v6 else V6_SIZE
        )
        if tally.hopeless:
            return tally.verdict()
    return None if needs_tree else tally.verdict()


def _tree_pass(
    protocol: str,
    openings: Sequence[Opening],
    steps: list[Step],
    use_v4: bool,
    use_v6: bool,
    *,
    space: PeerSpace,
) -> ProtocolVerdict:
    """Walk the port segments keeping each family's exact covered length in a coverage tree; what
    cannot be a peer is covered from the start, so an uncovered address is a peer left out."""
    v4 = v6 = None
    if use_v4:
        v4 = Coverage([*space.never_v4, *(r for o in openings for r in o.peers.v4)], V4_SIZE)
        v4.add(v4.leaves(space.never_v4), 1)
    if use_v6:
        v6 = Coverage([*space.never_v6, *(r for o in openings for r in o.peers.v6)], V6_SIZE)
        v6.add(v6.leaves(space.never_v6), 1)
    at_v4 = [v4.leaves(o.peers.v4) if v4 is not None else [] for o in openings]
    at_v6 = [v6.leaves(o.peers.v6) if v6 is not None else [] for o in openings]
    tally = _Tally(protocol)
    everyone = 0
    for start, end, changes in steps:
        for delta, index in changes:
            if openings[index].peers.everyone:
                everyone += delta
                continue
            if v4 is not None and at_v4[index]:
                v4.add(at_v4[index], delta)
            if v6 is not None and at_v6[index]:
                v6.add(at_v6[index], delta)
        if everyone:
            continue
        tally.segment(
            start,
            end,
            V4_SIZE - v4.covered if v4 is not None else V4_SIZE,
            V6_SIZE - v6.covered if v6 is not None else V6_SIZE,
        )
        if tally.hopeless:
            break
    return tally.verdict()
