"""Reading NetworkPolicy rules into openings (`webhook.reach`), as the API server would read them.

`null` is absent for every optional field (`networking/v1/types.go`; the API decoder turns a
`null` list element into an empty struct, so a `null` rule is `{}`). A rule without `ports`
opens every port of every protocol; an entry without `port` every port of its protocol
(`protocol` absent: TCP); `endPort` makes a range; a named port opens nothing numeric, since the
name resolves per pod; a digit string reads as the number; an unknown protocol opens nothing.
A rule without peers admits everyone; so does a peer whose namespaceSelector a namespace carrying
only its `kubernetes.io/metadata.name` label satisfies, with no podSelector or one the empty label
set satisfies. A peer with only a podSelector stays in the policy's namespace: not everyone, and
like any narrower selector peer it cannot make "every peer" in a union (the union of selector
peers covering every (namespace, pod) would cover that minimal one), so it is left out. Malformed
values never raise; they open nothing (the API server refuses them), except that a peer with both
an ipBlock and selectors reaches what either reaches.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping
from typing import Any, TypeGuard

from webhook.labels import opens_every_pod, selects_every_namespace
from webhook.reach import (
    ALL_PORTS,
    EVERYONE,
    NOBODY,
    PORT_MAX,
    PORT_MIN,
    PROTOCOLS,
    Interval,
    Opening,
    Peers,
    merge,
    subtract,
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_MAPPED_V4 = ipaddress.IPv6Network("::ffff:0:0/96")


def read_openings(rules: object, peers_key: str) -> tuple[Opening, ...]:
    """The openings of one direction's rule list (`spec.ingress` or `spec.egress`)."""
    if not isinstance(rules, list):
        return ()
    found: list[Opening] = []
    for listed in rules:
        rule = {} if listed is None else listed
        if not _is_map(rule):
            continue
        peers = read_peers(rule.get(peers_key))
        if peers.is_nothing:
            continue
        for protocol, ports in read_ports(rule.get("ports")).items():
            found.append(Opening(protocol, ports, peers))
    return tuple(found)


def read_ports(ports: object) -> dict[str, tuple[Interval, ...]]:
    """Numeric port intervals per protocol (merged); protocols with none are left out."""
    if ports is None or ports == []:
        return dict.fromkeys(PROTOCOLS, ALL_PORTS)
    if not isinstance(ports, list):
        return {}
    ranges: dict[str, list[Interval]] = {}
    for listed in ports:
        entry = {} if listed is None else listed
        if not _is_map(entry):
            continue
        protocol = entry.get("protocol") or "TCP"
        if protocol not in PROTOCOLS:
            continue
        interval = _port_interval(entry.get("port"), entry.get("endPort"))
        if interval is not None:
            ranges.setdefault(protocol, []).append(interval)
    return {protocol: merge(found) for protocol, found in ranges.items()}


def _port_interval(port: object, end_port: object) -> Interval | None:
    if port is None:
        return ALL_PORTS[0]
    start = _port_number(port)
    if start is None or not PORT_MIN <= start <= PORT_MAX:
        return None
    stop = _port_number(end_port) if isinstance(end_port, int) else None
    if stop is None or stop < start:
        return (start, start)
    return (start, min(stop, PORT_MAX))


def _port_number(port: object) -> int | None:
    if isinstance(port, bool):
        return None
    if isinstance(port, int):
        return port
    # IntOrString: a digit string is not a valid name (names need a letter); read it as the number,
    # the reading that cannot hide an opening.
    if isinstance(port, str) and _is_number(port):
        return int(port)
    return None


def _is_number(text: str) -> bool:
    """A few ASCII digits: `str.isdigit` also accepts characters `int` refuses (such as '²'),
    and `int` refuses strings of more than 4,300 digits."""
    return len(text) <= 12 and text.isascii() and text.isdigit()


def read_peers(peers: object) -> Peers:
    """The peers of one rule's `from`/`to` list, with every family merged once."""
    if peers is None or peers == []:
        return EVERYONE
    if not isinstance(peers, list):
        return NOBODY
    v4: list[Interval] = []
    v6: list[Interval] = []
    for peer in peers:
        if not _is_map(peer):
            continue  # `null` is the empty peer, which the API refuses: it matches nothing
        if _selects_everyone(peer):
            return EVERYONE
        block = peer.get("ipBlock")
        if _is_map(block):
            family, ranges = ip_block_ranges(block)
            (v4 if family == 4 else v6).extend(ranges)
    return Peers(False, merge(v4), merge(v6))


def _selects_everyone(peer: Mapping[str, Any]) -> bool:
    # namespaceSelector absent or null: the policy's own namespace only, never everyone.
    return selects_every_namespace(peer.get("namespaceSelector")) and opens_every_pod(
        peer.get("podSelector")
    )


def ip_block_ranges(block: Mapping[str, Any]) -> tuple[int, tuple[Interval, ...]]:
    """(family, the block's address ranges with its same-family excepts removed)."""
    network = cidr_interval(block.get("cidr"))
    if network is None:
        return 4, ()
    family, whole = network
    holes: list[Interval] = []
    excepts = block.get("except")
    for raw in excepts if isinstance(excepts, list) else ():
        hole = cidr_interval(raw)
        # An except of the other family excludes nothing here (Go's IPNet.Contains); an
        # unparseable one is refused by the API server: read either as no hole at all.
        if hole is not None and hole[0] == family:
            holes.append(hole[1])
    return family, subtract((whole,), holes)


def cidr_interval(value: object) -> tuple[int, Interval] | None:
    """(4 or 6, the first and last address) of a CIDR read as `parse_cidr_sloppy` reads it.

    Plain dotted IPv4 and colon-hex IPv6 take a fast path (most CIDRs, and all of a hostile
    list's); every other form goes through `parse_cidr_sloppy`.
    """
    if not isinstance(value, str):
        return None
    dotted = _DOTTED_V4.fullmatch(value)
    if dotted is not None:
        a, b, c, d, bits = (int(g) for g in dotted.groups())
        if max(a, b, c, d) <= 255 and bits <= 32:
            return 4, _prefix_interval(a << 24 | b << 16 | c << 8 | d, bits, 32)
        return None
    hexed = _HEX_V6.fullmatch(value)
    if hexed is not None:
        try:
            number = int.from_bytes(socket.inet_pton(socket.AF_INET6, hexed.group(1)), "big")
        except OSError:
            return None
        bits = int(hexed.group(2))
        if bits > 128:
            return None
        if bits >= 96 and number >> 32 == 0xFFFF:  # IPv4-mapped: the IPv4 network
            return 4, _prefix_interval(number & 0xFFFFFFFF, bits - 96, 32)
        return 6, _prefix_interval(number, bits, 128)
    network = parse_cidr_sloppy(value)
    if network is None:
        return None
    return network.version, (int(network.network_address), int(network.broadcast_address))


_DOTTED_V4 = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})/(\d{1,2})", re.ASCII)
_HEX_V6 = re.compile(r"([0-9a-fA-F:]{2,39})/(\d{1,3})", re.ASCII)


def _prefix_interval(address: int, bits: int, width: int) -> Interval:
    host = (1 << (width - bits)) - 1
    start = address & ~host
    return start, start | host


def parse_cidr_sloppy(value: object) -> Network | None:
    """Parse a CIDR as kube-apiserver's ParseCIDRSloppy does (k8s.io/utils/net/parse.go).

    Leading zeros in IPv4 octets are decimal (`010.0.0.0/8` is 10.0.0.0/8) and host bits are
    ignored; objects stored before strict CIDR validation (1.33) may still hold such values.
    IPv4-mapped IPv6 prefixes (`::ffff:0:0/96` and longer) are returned as the IPv4 network.
    """
    if not isinstance(value, str):
        return None
    address, slash, prefix = value.strip().partition("/")
    if not slash or not _is_number(prefix):
        return None
    head, colon, tail = address.rpartition(":")
    if "." in tail:  # IPv4, or the dotted tail of an IPv4-mapped IPv6 address
        octets = tail.split(".")
        if not all(_is_number(o) for o in octets):
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


def _is_map(value: object) -> TypeGuard[Mapping[str, Any]]:
    """A JSON object: a dict almost always (checked first: the ABC check is slow)."""
    return type(value) is dict or isinstance(value, Mapping)
