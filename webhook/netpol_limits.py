"""Cost bounds of NetworkPolicy analysis: the size of a policy, counted before any costly work.

`measure` is one linear pass over the raw spec that parses nothing (list lengths only); a policy
over a limit is refused without being analysed, and counts fail-closed. The defaults sit far above
the policies people write and far below what would hold the event loop: the worst policy they
allow analyses in a few tens of milliseconds (tests/bench/bench_netpol.py measures it). The five
per-item limits alone would let one policy multiply to billions of intervals (and say nothing of
label selectors), so one total, `maxEntriesPerPolicy`, bounds the work: per rule, port entries x
(peers + excepts), plus every label-selector term. `maxEntriesPerNamespace` bounds the same total
over the policies whose podSelector opens every pod, the pool `fence_for` sweeps jointly.

`Limits` also carries the cluster's peer space (`webhook.reach.PeerSpace`, config
`defaultDeny.peerRanges`): like the bounds, every analysis of a policy or a pool needs it, and it
travels where they do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, NamedTuple, TypeGuard

from webhook.reach import DEFAULT_PEER_SPACE, PeerSpace

_RULE_LISTS = (("ingress", "from"), ("egress", "to"))


class PolicySize(NamedTuple):
    """What the limits count in one policy; compare two versions with `grows`."""

    rules: int = 0  # ingress and egress rules together
    peers: int = 0  # the most peers in one rule
    ports: int = 0  # the most port entries in one rule
    excepts: int = 0  # the most excepts in one ipBlock
    entries: int = 0  # the work: per rule max(1, ports) x max(1, peers + excepts), + selector terms

    def grows(self, old: PolicySize) -> bool:
        """Some count is larger than in `old` (an UPDATE that makes the policy bigger)."""
        return any(new > before for new, before in zip(self, old, strict=True))


@dataclass(frozen=True, slots=True)
class Limits:
    """How NetworkPolicy analysis is bounded (config `limits:`; each bound's config key is in
    `CONFIG_KEYS`) and what address space peers come from (`defaultDeny.peerRanges`)."""

    max_rules_per_policy: int = 256
    max_peers_per_rule: int = 256
    max_ports_per_rule: int = 256
    max_excepts_per_block: int = 256
    max_entries_per_policy: int = 4096
    max_policies_per_namespace: int = 500
    max_entries_per_namespace: int = 8192
    peer_space: PeerSpace = DEFAULT_PEER_SPACE

    def refusal(self, size: PolicySize, where: Mapping[str, str]) -> str:
        """The first limit `size` exceeds, as one line naming the limit and the count; or ""."""
        checks = (
            ("max_rules_per_policy", size.rules, "spec.ingress and spec.egress have", ""),
            ("max_peers_per_rule", size.peers, f"{where.get('peers', 'a rule')} has", ""),
            ("max_ports_per_rule", size.ports, f"{where.get('ports', 'a rule')} has", ""),
            ("max_excepts_per_block", size.excepts, f"{where.get('excepts', 'a block')} has", ""),
            (
                "max_entries_per_policy",
                size.entries,
                "the policy has",
                " (per rule ports x (peers + excepts), plus selector terms)",
            ),
        )
        for name, count, what, unit in checks:
            limit: int = getattr(self, name)
            if count > limit:
                return f"limits.{CONFIG_KEYS[name]} is {limit}; {what} {count}{unit}"
        return ""


CONFIG_KEYS: Mapping[str, str] = {
    f.name: "max" + "".join(part.title() for part in f.name.split("_")[1:])
    for f in fields(Limits)
    if f.name.startswith("max_")
}
DEFAULT_LIMITS = Limits()


def measure(spec: Mapping[str, Any]) -> tuple[PolicySize, Mapping[str, str]]:
    """Count a spec for the limits, and say where the largest items are (paths for messages)."""
    rules = peers = ports = excepts = 0
    entries = _selector_terms(spec.get("podSelector"))
    where: dict[str, str] = {}
    for rules_key, peers_key in _RULE_LISTS:
        listed = spec.get(rules_key)
        if not isinstance(listed, list):
            continue
        rules += len(listed)
        for i, rule in enumerate(listed):
            if not _is_map(rule):
                entries += 1
                continue
            rule_ports = rule.get("ports")
            port_count = len(rule_ports) if isinstance(rule_ports, list) else 0
            if port_count > ports:
                ports, where["ports"] = port_count, f"spec.{rules_key}[{i}].ports"
            rule_peers = rule.get(peers_key)
            rule_peers = rule_peers if isinstance(rule_peers, list) else []
            if len(rule_peers) > peers:
                peers, where["peers"] = len(rule_peers), f"spec.{rules_key}[{i}].{peers_key}"
            weight = len(rule_peers)
            for j, peer in enumerate(rule_peers):
                if not _is_map(peer):
                    continue
                if "namespaceSelector" in peer or "podSelector" in peer:
                    entries += _selector_terms(peer.get("namespaceSelector"))
                    entries += _selector_terms(peer.get("podSelector"))
                block = peer.get("ipBlock")
                if not _is_map(block):
                    continue
                holes = block.get("except")
                hole_count = len(holes) if isinstance(holes, list) else 0
                weight += hole_count
                if hole_count > excepts:
                    excepts = hole_count
                    where["excepts"] = f"spec.{rules_key}[{i}].{peers_key}[{j}].ipBlock.except"
            entries += max(1, port_count) * max(1, weight)
    return PolicySize(rules, peers, ports, excepts, entries), where


def _selector_terms(selector: object) -> int:
    """matchLabels pairs and matchExpressions values of a label selector (what parsing costs)."""
    if not _is_map(selector):
        return 0
    labels = selector.get("matchLabels")
    terms = len(labels) if _is_map(labels) else 0
    expressions = selector.get("matchExpressions")
    for expression in expressions if isinstance(expressions, list) else ():
        values = expression.get("values") if _is_map(expression) else None
        terms += max(1, len(values)) if isinstance(values, list) else 1
    return terms


def _is_map(value: object) -> TypeGuard[Mapping[str, Any]]:
    """A JSON object: a dict almost always (checked first: the ABC check is slow)."""
    return type(value) is dict or isinstance(value, Mapping)
