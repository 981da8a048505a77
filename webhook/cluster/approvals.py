"""NetworkPolicy changes this process approved that the cluster view may not show yet.

Admission runs before the write: between approving a NetworkPolicy change and the informer seeing
it, the view still shows the cluster as it was. Decisions in that window read the view with the
approved changes applied, each rule only in the direction that makes it deny more, because any
client that reaches the port can send a review (DESIGN §3, Trust):

- `removals(base)`, for the fence rules (`default-deny`, the guard): the versions approved for
  DELETE or UPDATE are taken out, so one process never counts a fence it just let go. Only the
  exact version the view holds goes (same name, uid and resourceVersion); a replacement is never
  added, so a forged UPDATE cannot plant a fence.
- `additions(base)`, for `allow-all`: the versions approved for CREATE or UPDATE are added beside
  what the view holds, and nothing is taken out, so two halves of `0.0.0.0/0` approved a moment
  apart are judged together, and a forged DELETE cannot make a fence look absent.

A removal is remembered until the informer no longer holds that version, or, once `grace` has
passed, until a live read shows the version still there (the write never happened); an addition
for `grace`. At most `MAX_PER_NAMESPACE` changes a namespace are kept (the oldest go first).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from webhook.cluster.view import ClusterView, NamespaceFacts, namespace_facts
from webhook.netpol import PolicyFacts

GRACE_SECONDS = 15.0  # how long a write may take to reach the informer
MAX_AGE_SECONDS = 600.0  # a removal nobody could settle is forgotten after this
MAX_PER_NAMESPACE = 1000
_REMOVALS, _ADDITIONS = 1, 2  # which view, as an index into the applied triple


@dataclass(frozen=True, slots=True)
class _Change:
    old: PolicyFacts | None  # the version taken away (DELETE, UPDATE)
    new: PolicyFacts | None  # the version let in (CREATE, UPDATE)
    recorded: float


def _version(policy: PolicyFacts) -> tuple[str, str, str]:
    return (policy.name, policy.uid, policy.resource_version)


class RecentApprovals:
    def __init__(
        self,
        grace: float = GRACE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_age: float = MAX_AGE_SECONDS,
    ) -> None:
        self._grace = grace
        self._max_age = max_age
        self._clock = clock
        # namespace -> (the object's name, what changed) -> change, oldest first
        self._by_namespace: dict[str, dict[tuple[str, str], _Change]] = {}
        # namespace -> (the base facts, removals applied, additions applied)
        self._applied: dict[str, tuple[NamespaceFacts, NamespaceFacts, NamespaceFacts]] = {}

    def record(self, namespace: str, old: PolicyFacts | None, new: PolicyFacts | None) -> None:
        """Remember an approved change: `old` taken away, `new` let in (either may be None)."""
        changes = self._by_namespace.setdefault(namespace, {})
        key = (
            (old.name, old.resource_version) if old is not None else (new.name if new else "", "+")
        )
        changes.pop(key, None)
        changes[key] = _Change(old, new, self._clock())
        while len(changes) > MAX_PER_NAMESPACE:
            del changes[next(iter(changes))]
        self._applied.pop(namespace, None)

    def __len__(self) -> int:
        return sum(len(c) for c in self._by_namespace.values())

    def settle(self, facts: NamespaceFacts | None, *, live: bool = False) -> None:
        """Forget what `facts` (the informer's, or with `live` a fresh read) show as settled."""
        if facts is None or facts.name not in self._by_namespace:
            return
        now = self._clock()
        held = {_version(p) for p in facts.policies}
        changes = self._by_namespace[facts.name]
        for key, change in list(changes.items()):
            age = now - change.recorded
            if age > self._max_age:
                del changes[key]
            elif change.old is None:
                if age > self._grace:
                    del changes[key]
            elif _version(change.old) not in held:
                if not live:  # the informer saw it go; a live read may be ahead of the informer
                    del changes[key]
            elif live and age > self._grace:
                del changes[key]  # still there long after approval: the write did not happen
        if not changes:
            del self._by_namespace[facts.name]
        self._applied.pop(facts.name, None)

    def removals(self, base: ClusterView) -> ClusterView:
        """`base` without the versions approved to go; `base` itself when there are none."""
        return _Applied(base, self, _REMOVALS) if self._by_namespace else base

    def additions(self, base: ClusterView) -> ClusterView:
        """`base` with the versions approved to come beside it; `base` when there are none."""
        return _Applied(base, self, _ADDITIONS) if self._by_namespace else base

    def apply(self, name: str, facts: NamespaceFacts | None, which: int) -> NamespaceFacts | None:
        changes = self._by_namespace.get(name)
        if not changes:
            return facts
        if facts is None:  # a namespace the view does not know yet: nothing to take away
            if which == _REMOVALS:
                return None
            facts = namespace_facts(name)  # under the default limits: it holds nothing of its own
        applied = self._applied.get(facts.name)
        if applied is None or applied[0] is not facts:
            applied = (facts, *self._both(facts, changes.values()))
            self._applied[facts.name] = applied
        return applied[which]

    def _both(
        self, facts: NamespaceFacts, changes: Iterable[_Change]
    ) -> tuple[NamespaceFacts, NamespaceFacts]:
        gone = {_version(c.old) for c in changes if c.old is not None}
        added = [c.new for c in changes if c.new is not None]
        kept = [p for p in facts.policies if _version(p) not in gone]
        return self._facts(facts, kept), self._facts(facts, [*facts.policies, *added])

    @staticmethod
    def _facts(facts: NamespaceFacts, policies: list[PolicyFacts]) -> NamespaceFacts:
        if len(policies) == len(facts.policies) and all(
            a is b for a, b in zip(policies, facts.policies, strict=True)
        ):
            return facts
        return namespace_facts(
            facts.name,
            policies,
            labels=facts.labels,
            terminating=facts.terminating,
            running_pods=facts.running_pods,
            limits=facts.limits,
        )


class _Applied:
    """A ClusterView that answers through the approvals, and otherwise as its base does."""

    def __init__(self, base: ClusterView, approvals: RecentApprovals, which: int) -> None:
        self._base = base
        self._approvals = approvals
        self._which = which

    def namespace(self, name: str) -> NamespaceFacts | None:
        return self._approvals.apply(name, self._base.namespace(name), self._which)

    @property
    def synced(self) -> bool:
        return self._base.synced

    def staleness(self) -> float:
        return self._base.staleness()
