"""What decisions may know of the cluster: per-namespace facts behind one small lookup Protocol.

Facts are reduced and precomputed when the cluster state changes (fences for both definitions), so
a decision is a dictionary lookup. `StaticView` is the plain-dict implementation used by
`--state DIR` and by tests; the live informer keeps the same facts up to date. Across namespaces,
a view holds one `TrustIndex` of the allow rules that trust namespace labels, built once per
state (the informer keeps it up to date namespace by namespace), never per request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from webhook.label_trust import TrustEntry, TrustIndex
from webhook.netpol import (
    DEFAULT_LIMITS,
    DIRECTIONS,
    Direction,
    DirectionFence,
    Limits,
    PolicyFacts,
    fence_for,
    fences_by_definition,
)


@dataclass(frozen=True, slots=True)
class NamespaceFacts:
    """One namespace: its labels, phase, NetworkPolicies and their fences, precomputed."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    terminating: bool = False
    policies: tuple[PolicyFacts, ...] = ()
    running_pods: int | None = None  # None: not known (the live view reads it on demand)
    limits: Limits = field(default=DEFAULT_LIMITS, repr=False, compare=False)  # analysed under
    _fences: Mapping[tuple[Direction, bool], DirectionFence] = field(
        default_factory=dict, repr=False, compare=False
    )

    def fence(self, direction: Direction, strict: bool) -> DirectionFence:
        cached = self._fences.get((direction, strict))
        if cached is not None:
            return cached
        return fence_for(self.policies, direction, strict=strict, limits=self.limits)


def trust_entries(facts: NamespaceFacts | None) -> tuple[TrustEntry, ...]:
    """The label-trusting allow-rule peers of a namespace's policies, for a `TrustIndex`."""
    if facts is None:
        return ()
    return tuple(TrustEntry(facts.name, p.name, s) for p in facts.policies for s in p.label_trust)


def namespace_facts(
    name: str,
    policies: Iterable[PolicyFacts] = (),
    *,
    labels: Mapping[str, str] | None = None,
    terminating: bool = False,
    running_pods: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> NamespaceFacts:
    """Build a namespace's facts with both fence definitions computed once (one pool each)."""
    ordered = tuple(sorted(policies, key=lambda p: p.age_key))
    fences = {
        (d, strict): fence
        for d in DIRECTIONS
        for strict, fence in fences_by_definition(ordered, d, limits=limits).items()
    }
    return NamespaceFacts(
        name=name,
        labels=dict(labels or {}),
        terminating=terminating,
        policies=ordered,
        running_pods=running_pods,
        limits=limits,
        _fences=fences,
    )


class ClusterView(Protocol):
    """Read-only cluster facts for the decision core; implementations never block."""

    def namespace(self, name: str) -> NamespaceFacts | None:
        """The facts of a namespace, or None when it is not known."""
        ...

    @property
    def synced(self) -> bool:
        """True once the view has been filled completely at least once."""
        ...

    def staleness(self) -> float:
        """Seconds the view has been out of touch with its source (0 when in sync)."""
        ...

    def label_trust(self) -> TrustIndex:
        """Every allow-rule peer of the cluster that trusts a namespace label, indexed."""
        ...


class OverlaidView:
    """A view over `base` that changes only what `namespace` answers (subclasses override it);
    whether it is synced, its staleness and its label index are the base's."""

    def __init__(self, base: ClusterView) -> None:
        self._base = base

    def namespace(self, name: str) -> NamespaceFacts | None:
        return self._base.namespace(name)

    @property
    def synced(self) -> bool:
        return self._base.synced

    def staleness(self) -> float:
        return self._base.staleness()

    def label_trust(self) -> TrustIndex:
        return self._base.label_trust()


class PinnedView(OverlaidView):
    """A view whose one namespace is read once: a decision made on another thread judges one
    version of it (and the rest as the base has it) while the loop goes on applying watch
    events. NamespaceFacts are immutable, so holding one is holding that version."""

    def __init__(self, base: ClusterView, name: str) -> None:
        super().__init__(base)
        self._name = name
        self._facts = base.namespace(name)

    def namespace(self, name: str) -> NamespaceFacts | None:
        return self._facts if name == self._name else self._base.namespace(name)


class StaticView:
    """A ClusterView over a fixed dict of facts: manifests on disk, tests, the demo."""

    def __init__(self, namespaces: Mapping[str, NamespaceFacts] | Iterable[NamespaceFacts]) -> None:
        items = namespaces.values() if isinstance(namespaces, Mapping) else namespaces
        self._namespaces = {ns.name: ns for ns in items}
        self._trust: TrustIndex | None = None

    def namespace(self, name: str) -> NamespaceFacts | None:
        return self._namespaces.get(name)

    @property
    def synced(self) -> bool:
        return True

    def staleness(self) -> float:
        return 0.0

    def label_trust(self) -> TrustIndex:
        if self._trust is None:  # built on first use: most static views never need it
            self._trust = TrustIndex()
            for facts in self._namespaces.values():
                self._trust.set(facts.name, trust_entries(facts))
        return self._trust

    def names(self) -> list[str]:
        return sorted(self._namespaces)
