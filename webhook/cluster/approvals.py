"""Fence removals this process approved that the cluster view may not show yet (tombstones).

Admission runs before the write: between approving a NetworkPolicy DELETE (or a weakening UPDATE)
and the informer seeing it, the view still shows the old policy. Decisions in that window are made
on the view minus these approvals, so one process never counts a fence it just let go. Across
replicas the guard's "an older fence must remain" rule keeps concurrent removals safe.

One approval is kept per policy (the latest): a policy updated a thousand times a minute costs a
decision in its namespace one entry, not a thousand.
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
        # namespace -> policy key -> approval, oldest first
        self._by_namespace: dict[str, dict[str, _Approval]] = {}
        self._next_expiry = float("inf")
        # namespace -> (the facts the approvals were applied to, the result): decisions in a
        # namespace with approvals reuse the result while neither side changed.
        self._applied: dict[str, tuple[NamespaceFacts, NamespaceFacts]] = {}

    def record(self, removed: PolicyFacts, replacement: PolicyFacts | None) -> None:
        entry = _Approval(removed, replacement, self._clock() + self._ttl)
        approvals = self._by_namespace.setdefault(removed.namespace, {})
        key = _key(removed)
        # The latest approval of a policy supersedes the earlier ones: applying both removes
        # the policy (whichever version) and leaves the latest replacement, as this one does.
        approvals.pop(key, None)
        approvals[key] = entry
        self._applied.pop(removed.namespace, None)
        self._next_expiry = min(self._next_expiry, entry.expires)

    def __len__(self) -> int:
        return sum(len(a) for a in self._by_namespace.values())

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
        applied = self._applied.get(facts.name)
        if applied is not None and applied[0] is facts:
            return applied[1]
        policies = list(facts.policies)
        for approval in approvals.values():
            policies = [p for p in policies if not p.same_object(approval.removed)]
            if approval.replacement is not None:
                policies.append(approval.replacement)
        result = namespace_facts(
            facts.name,
            policies,
            labels=facts.labels,
            terminating=facts.terminating,
            running_pods=facts.running_pods,
        )
        self._applied[facts.name] = (facts, result)
        return result

    def _expire(self) -> None:
        now = self._clock()
        if now < self._next_expiry:
            return
        self._next_expiry = float("inf")
        for namespace in list(self._by_namespace):
            approvals = self._by_namespace[namespace]
            alive = {k: a for k, a in approvals.items() if a.expires > now}
            if len(alive) != len(approvals):
                self._applied.pop(namespace, None)
            if alive:
                self._by_namespace[namespace] = alive
                self._next_expiry = min(self._next_expiry, *(a.expires for a in alive.values()))
            else:
                del self._by_namespace[namespace]


def _key(policy: PolicyFacts) -> str:
    """One key per policy object, as `PolicyFacts.same_object` tells them apart."""
    return f"uid:{policy.uid}" if policy.uid else f"name:{policy.name}"


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
