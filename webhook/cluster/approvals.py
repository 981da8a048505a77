"""NetworkPolicy changes this process approved that the cluster view may not show yet.

Admission runs before the write: between approving a NetworkPolicy change and the informer seeing
it, the view still shows the cluster as it was. Decisions in that window read the view with the
approved changes applied, each rule only in the direction that makes it deny more, because any
client that reaches the port can send a review (docs/design.md, "Trust model"):

- `removals(base)`, for the fence rules (`default-deny`, the guard): a version approved to go
  (DELETE, UPDATE) no longer fences, so one process never counts a fence it just let go; what it
  opens still counts (taking an opener away must not make a namespace look fenced). Only the
  exact version the view holds is touched (same name, uid and resourceVersion); a replacement is
  never added, so a forged UPDATE cannot plant a fence.
- `additions(base)`, for `allow-all`: the versions approved to come (CREATE, UPDATE) are added
  beside what the view holds, marked `remembered`, and nothing is taken out, so two halves of
  `0.0.0.0/0` approved a moment apart are judged together and a forged DELETE cannot make a
  fence look absent; allow-all never counts a remembered version as what was there before.

A removal is remembered for at least `grace` (a live read remembered for a second may predate
the write), then until the informer no longer holds that version, or until a live read shows it
still there (the write never happened); an addition for `grace`. At most `MAX_PER_NAMESPACE`
changes a namespace and `MAX_TOTAL` in all are kept, the oldest going first: a flood of forged
reviews can evict real approvals (use `--client-ca`), never grow memory without bound.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

from webhook.cluster.view import ClusterView, NamespaceFacts, OverlaidView, namespace_facts
from webhook.netpol import PolicyFacts

GRACE_SECONDS = 15.0  # how long a write may take to reach the informer
MAX_AGE_SECONDS = 600.0  # a removal nobody could settle is forgotten after this
MAX_PER_NAMESPACE = 1000
MAX_TOTAL = 10_000
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
        self._applied: dict[str, _Triple] = {}
        self._count = 0

    def record(self, namespace: str, old: PolicyFacts | None, new: PolicyFacts | None) -> None:
        """Remember an approved change: `old` taken away, `new` let in (either may be None)."""
        changes = self._by_namespace.setdefault(namespace, {})
        key = (
            (old.name, old.resource_version) if old is not None else (new.name if new else "", "+")
        )
        if changes.pop(key, None) is not None:
            self._count -= 1
        changes[key] = _Change(old, new, self._clock())
        self._count += 1
        self._applied.pop(namespace, None)
        while len(changes) > MAX_PER_NAMESPACE:
            self._forget(namespace, next(iter(changes)))
        while self._count > MAX_TOTAL:
            oldest = min(
                self._by_namespace,
                key=lambda n: next(iter(self._by_namespace[n].values())).recorded,
            )
            self._forget(oldest, next(iter(self._by_namespace[oldest])))

    def _forget(self, namespace: str, key: tuple[str, str]) -> None:
        changes = self._by_namespace[namespace]
        del changes[key]
        self._count -= 1
        if not changes:
            del self._by_namespace[namespace]
        self._applied.pop(namespace, None)

    def __len__(self) -> int:
        return self._count

    def settle(self, name: str, facts: NamespaceFacts | None, *, live: bool = False) -> None:
        """Forget what `facts` (the informer's, or with `live` a fresh read) show as settled."""
        changes = self._by_namespace.get(name)
        if not changes:
            return
        now = self._clock()
        held = {_version(p) for p in facts.policies} if facts is not None else set()
        for key, change in list(changes.items()):
            age = now - change.recorded
            if age > self._max_age:
                self._forget(name, key)
            elif age <= self._grace:
                continue  # a remembered live read may still predate the write
            elif change.old is None or (not live and _version(change.old) not in held):
                self._forget(name, key)  # an addition's grace is over; the informer saw it go
            elif live and _version(change.old) in held:
                self._forget(name, key)  # still there long after approval: the write did not happen
        self._applied.pop(name, None)

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
        return _apply(name, facts, tuple(changes.values()), which, self._applied)

    def of_namespace(self, name: str) -> NamespaceApprovals:
        """The approvals of namespace `name` as they are now, frozen: for a decision made on
        another thread while this process goes on recording and settling (such a decision reads
        only its own namespace)."""
        changes = tuple(self._by_namespace.get(name, {}).values())
        cached = self._applied.get(name)
        return NamespaceApprovals(name, changes, {name: cached} if cached else {})


_Triple = tuple[NamespaceFacts, NamespaceFacts, NamespaceFacts]  # base, removals, additions


def _apply(
    name: str,
    facts: NamespaceFacts | None,
    changes: tuple[_Change, ...],
    which: int,
    cache: dict[str, _Triple],
) -> NamespaceFacts | None:
    """`facts` with `changes` applied as view `which` asks, through `cache` (by namespace, kept
    while its base facts are the same object)."""
    if facts is None:  # a namespace the view does not know yet: nothing to take away
        if which == _REMOVALS:
            return None
        facts = namespace_facts(name)  # under the default limits: it holds nothing of its own
    applied = cache.get(name)
    if applied is None or applied[0] is not facts:
        gone = {_version(c.old) for c in changes if c.old is not None}
        added = [dataclasses.replace(c.new, remembered=True) for c in changes if c.new is not None]
        # Gone as a fence, not as an opening: the version stays, isolating nothing.
        defenced = [
            dataclasses.replace(p, selects_all=False) if _version(p) in gone else p
            for p in facts.policies
        ]
        applied = (facts, _facts(facts, defenced), _facts(facts, [*facts.policies, *added]))
        cache[name] = applied
    return applied[which]


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


class _Applied(OverlaidView):
    """A ClusterView that answers through the approvals, and otherwise as its base does."""

    def __init__(
        self, base: ClusterView, approvals: RecentApprovals | NamespaceApprovals, which: int
    ) -> None:
        super().__init__(base)
        self._approvals = approvals
        self._which = which

    def namespace(self, name: str) -> NamespaceFacts | None:
        return self._approvals.apply(name, self._base.namespace(name), self._which)


class NamespaceApprovals:
    """One namespace's approvals frozen at one moment (`RecentApprovals.of_namespace`): a
    `decide.Memory` that a worker thread may read while the loop records and settles."""

    def __init__(self, name: str, changes: tuple[_Change, ...], cache: dict[str, _Triple]) -> None:
        self._name = name
        self._changes = changes
        self._cache = cache

    def apply(self, name: str, facts: NamespaceFacts | None, which: int) -> NamespaceFacts | None:
        if name != self._name or not self._changes:
            return facts
        return _apply(name, facts, self._changes, which, self._cache)

    def removals(self, base: ClusterView) -> ClusterView:
        return _Applied(base, self, _REMOVALS) if self._changes else base

    def additions(self, base: ClusterView) -> ClusterView:
        return _Applied(base, self, _ADDITIONS) if self._changes else base
