"""Allow rules that trust namespace labels, and which of them a label change makes match.

A NetworkPolicy peer whose `namespaceSelector` keys on any label but the immutable
`kubernetes.io/metadata.name` admits (ingress `from`) or reaches (egress `to`) whatever namespace
carries that label: whoever may label namespaces decides who the rule trusts. `trusted_selectors`
finds such peers in one policy's spec; `TrustIndex` holds them for a whole cluster, indexed by
label key, so that a Namespace UPDATE is judged against only the selectors keyed on a label it
changes, each distinct selector evaluated once (`newly_matched`).

Invariants: selectors are read as the API server would (`labels.parse_selector_lenient`; a
malformed one selects nothing and trusts no one); only directions among the policy's effective
types count (a rule of another direction is never enforced); a selector matches exactly as
upstream `labels.Selector` does (`webhook.labels`). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.labels import NAMESPACE_NAME_LABEL, LabelSelector, parse_selector_lenient

_RULES_KEY = {"Ingress": "ingress", "Egress": "egress"}
_PEERS_KEY = {"Ingress": "from", "Egress": "to"}


@dataclass(frozen=True, slots=True)
class TrustedSelector:
    """A peer of an allow rule whose namespaceSelector keys on a label others can set."""

    direction: str  # "Ingress" (a `from` peer) or "Egress" (a `to` peer)
    rule: int  # index into spec.ingress / spec.egress
    peer: int  # index into the rule's from / to
    selector: LabelSelector
    keys: tuple[str, ...]  # the label keys it trusts (never kubernetes.io/metadata.name)

    @property
    def where(self) -> str:
        """The peer's field path: `spec.ingress[0].from[1].namespaceSelector`."""
        rules, peers = _RULES_KEY[self.direction], _PEERS_KEY[self.direction]
        return f"spec.{rules}[{self.rule}].{peers}[{self.peer}].namespaceSelector"

    def describe(self) -> str:
        """The selector as `kubectl get -l` would read it: `team=a,env notin (dev)`."""
        return describe_selector(self.selector)


def trusted_selectors(
    spec: Mapping[str, Any], directions: Iterable[str]
) -> tuple[TrustedSelector, ...]:
    """The label-trusting peers of a NetworkPolicy spec, for the given (effective) directions."""
    found: list[TrustedSelector] = []
    for direction in sorted(directions):
        rules = spec.get(_RULES_KEY[direction])
        if not isinstance(rules, list):
            continue
        for r, rule in enumerate(rules):
            peers = rule.get(_PEERS_KEY[direction]) if isinstance(rule, Mapping) else None
            if not isinstance(peers, list):
                continue
            for p, peer in enumerate(peers):
                raw = peer.get("namespaceSelector") if isinstance(peer, Mapping) else None
                if raw is None:
                    continue  # absent: the policy's own namespace only
                selector = parse_selector_lenient(raw)
                if selector is None:
                    continue  # malformed: selects nothing
                keys = tuple(
                    dict.fromkeys(
                        q.key for q in selector.requirements if q.key != NAMESPACE_NAME_LABEL
                    )
                )
                if keys:
                    found.append(TrustedSelector(direction, r, p, selector, keys))
    return tuple(found)


def describe_selector(selector: LabelSelector) -> str:
    parts = []
    for q in selector.requirements:
        values = ",".join(sorted(q.values))
        if q.operator == "In":
            parts.append(f"{q.key}={values}" if len(q.values) == 1 else f"{q.key} in ({values})")
        elif q.operator == "NotIn":
            parts.append(f"{q.key} notin ({values})")
        elif q.operator == "Exists":
            parts.append(q.key)
        else:
            parts.append(f"!{q.key}")
    return ",".join(parts)


@dataclass(frozen=True, slots=True)
class TrustEntry:
    """A label-trusting peer of a NetworkPolicy in the cluster."""

    namespace: str  # the policy's
    policy: str
    selector: TrustedSelector


@dataclass(frozen=True, slots=True)
class Newly:
    """A policy peer that a label change made match the namespace, and the labels that did it."""

    entry: TrustEntry
    labels: tuple[str, ...]  # `key=value` (or `-key` for a removed label) among the trusted keys


@dataclass(slots=True)
class TrustIndex:
    """Every label-trusting peer of a cluster, by policy namespace and by trusted label key.

    Kept up to date one namespace at a time (`set`), so a change costs that namespace's peers; a
    reader never sees a namespace half replaced (every change is applied between two awaits).
    """

    _by_namespace: dict[str, tuple[TrustEntry, ...]] = field(default_factory=dict)
    _by_key: dict[str, dict[LabelSelector, dict[TrustEntry, None]]] = field(default_factory=dict)

    def set(self, namespace: str, entries: Iterable[TrustEntry]) -> None:
        """Replace what the index holds of the policies of `namespace`."""
        new = tuple(entries)
        old = self._by_namespace.pop(namespace, ())
        if not old and not new:
            return
        for entry in old:
            for key in entry.selector.keys:
                selectors = self._by_key.get(key, {})
                held = selectors.get(entry.selector.selector)
                if held is not None:
                    held.pop(entry, None)
                    if not held:
                        del selectors[entry.selector.selector]
                if not selectors:
                    self._by_key.pop(key, None)
        for entry in new:
            for key in entry.selector.keys:
                bucket = self._by_key.setdefault(key, {}).setdefault(entry.selector.selector, {})
                bucket[entry] = None
        if new:
            self._by_namespace[namespace] = new

    def entries(self) -> Iterable[TrustEntry]:
        for held in self._by_namespace.values():
            yield from held

    def __len__(self) -> int:
        return sum(len(held) for held in self._by_namespace.values())

    def newly_matched(self, old: Mapping[str, str], new: Mapping[str, str]) -> tuple[Newly, ...]:
        """The peers whose selector the `new` labels satisfy and the `old` did not.

        Only selectors keyed on a label whose value changed can change their answer, so only
        those are evaluated, each distinct selector once.
        """
        changed = sorted(
            k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k in self._by_key
        )
        seen: set[LabelSelector] = set()
        found: list[Newly] = []
        for key in changed:
            for selector, held in self._by_key[key].items():
                if selector in seen:
                    continue
                seen.add(selector)
                if not selector.matches(new) or selector.matches(old):
                    continue
                for entry in held:
                    labels = tuple(
                        f"{k}={new[k]}" if k in new else f"-{k}"
                        for k in entry.selector.keys
                        if old.get(k) != new.get(k)
                    )
                    found.append(Newly(entry, labels))
        return tuple(sorted(found, key=_order))


def _order(hit: Newly) -> tuple[str, str, str, int, int]:
    s = hit.entry.selector
    return (hit.entry.namespace, hit.entry.policy, s.direction, s.rule, s.peer)
