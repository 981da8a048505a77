"""Remembered approvals: what a decision sees between approving a policy change and the informer
seeing it, and what that memory costs."""

from __future__ import annotations

import itertools

from objects import deny_all, netpol

from webhook.cluster.approvals import RecentApprovals
from webhook.cluster.view import StaticView, namespace_facts
from webhook.netpol import analyse_policy

OLDEST = analyse_policy(deny_all())
NEWER = analyse_policy(deny_all("newer", created="2026-02-01T00:00:00Z"))
VIEW = StaticView([namespace_facts("team", [OLDEST, NEWER])])


def names(approvals: RecentApprovals) -> list[str]:
    facts = approvals.view(VIEW).namespace("team")
    assert facts is not None
    return sorted(p.name for p in facts.policies)


def test_an_approved_removal_is_gone_from_the_view_until_it_expires() -> None:
    now = [0.0]
    approvals = RecentApprovals(ttl=15.0, clock=lambda: now[0])
    approvals.record(NEWER, None)
    assert names(approvals) == ["default-deny"]
    now[0] = 16.0
    assert names(approvals) == ["default-deny", "newer"]
    assert len(approvals) == 0


def test_an_approved_rewrite_replaces_the_policy_in_the_view() -> None:
    approvals = RecentApprovals()
    weakened = analyse_policy(netpol("newer", types=["Ingress"], created="2026-02-01T00:00:00Z"))
    approvals.record(NEWER, weakened)
    facts = approvals.view(VIEW).namespace("team")
    assert facts is not None
    (newer,) = (p for p in facts.policies if p.name == "newer")
    assert newer.types == weakened.types


def test_a_policy_approved_again_and_again_is_remembered_once() -> None:
    approvals = RecentApprovals()
    versions = [
        analyse_policy(netpol("newer", types=t, created="2026-02-01T00:00:00Z"))
        for t in (["Ingress"], ["Egress"], ["Ingress", "Egress"]) * 3000
    ]
    for before, after in itertools.pairwise(versions):
        approvals.record(before, after)
    approvals.record(OLDEST, None)
    # One entry per policy, and the view shows the latest replacement only.
    assert len(approvals) == 2
    facts = approvals.view(VIEW).namespace("team")
    assert facts is not None
    assert [(p.name, sorted(p.types)) for p in facts.policies] == [
        ("newer", sorted(versions[-1].types))
    ]
