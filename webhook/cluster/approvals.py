"""Fence removals this process approved that the cluster view may not show yet (tombstones).

Admission runs before the write: between approving a NetworkPolicy DELETE (or a weakening UPDATE)
and the informer seeing it, the view still shows the old policy. Decisions in that window are made
on the view minus these approvals, so one process never counts a fence it just let go. Across
replicas the guard's "an older fence must remain" rule keeps concurrent removals safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from webhook.cluster.view import ClusterView, NamespaceFacts, namespace_facts
from webhook.netpol import PolicyFacts

TTL_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class _Approval:
    removed: PolicyFacts
    replacement: PolicyFacts | None
    expires: float


class RecentApprovals:
    def __init__(
        self, ttl: float = TTL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._by_namespace: dict[str, list[_Approval]] = {}

    def record(self, removed: PolicyFacts, replacement: PolicyFacts | None) -> None:
        entry = _Approval(removed, replacement, self._clock() + self._ttl)
        self._by_namespace.setdefault(removed.namespace, []).append(entry)

    def view(self, base: ClusterView) -> ClusterView:
        """`base` with approved removals applied; `base` itself when there are none."""
        if not self._by_namespace:
            return base
        self._expire()
        return _Applied(base, self) if self._by_namespace else base

    def apply(self, facts: NamespaceFacts) -> NamespaceFacts:
        approvals = self._by_namespace.get(facts.name)
        if not approvals:
            return facts
        policies = list(facts.policies)
        for approval in approvals:
            policies = [p for p in policies if not p.same_object(approval.removed)]
            if approval.replacement is not None:
                policies.append(approval.replacement)
        return namespace_facts(
            facts.name,
            policies,
            labels=facts.labels,
            terminating=facts.terminating,
            running_pods=facts.running_pods,
        )

    def _expire(self) -> None:
        now = self._clock()
        for namespace in list(self._by_namespace):
            alive = [a for a in self._by_namespace[namespace] if a.expires > now]
            if alive:
                self._by_namespace[namespace] = alive
            else:
                del self._by_namespace[namespace]


class _Applied:
    """A ClusterView that answers through the approvals, and otherwise as its base does."""

    def __init__(self, base: ClusterView, approvals: RecentApprovals) -> None:
        self._base = base
        self._approvals = approvals

    def namespace(self, name: str) -> NamespaceFacts | None:
        facts = self._base.namespace(name)
        return self._approvals.apply(facts) if facts is not None else None

    @property
    def synced(self) -> bool:
        return self._base.synced

    def staleness(self) -> float:
        return self._base.staleness()
