"""Remembered approvals: what a decision sees between approving a NetworkPolicy change and the
informer seeing it, in the direction each rule reads them, and what that memory costs."""

from __future__ import annotations

import itertools
from typing import Any

from objects import deny_all, netpol, netpol_review, parse, workload_review

from webhook.cluster.approvals import MAX_TOTAL, RecentApprovals
from webhook.cluster.view import StaticView, namespace_facts
from webhook.decide import decide
from webhook.netpol import Direction, PolicyFacts, analyse_policy
from webhook.settings import Settings


def versioned(doc: dict[str, Any], rv: str) -> PolicyFacts:
    doc["metadata"]["resourceVersion"] = rv
    return analyse_policy(doc)


OLDEST = versioned(deny_all(), "10")
NEWER = versioned(deny_all("newer", created="2026-02-01T00:00:00Z"), "11")
VIEW = StaticView([namespace_facts("team", [OLDEST, NEWER])])


def names(view: Any) -> list[str]:
    """The policies that fence the namespace (Ingress) in `view`."""
    facts = view.namespace("team")
    assert facts is not None
    return sorted(p.name for p in facts.policies if p.fences(Direction.INGRESS, strict=False))


def test_an_approved_removal_is_gone_from_the_fence_view_until_the_informer_sees_it() -> None:
    approvals = RecentApprovals()
    approvals.record("team", NEWER, None)
    assert names(approvals.removals(VIEW)) == ["default-deny"]
    assert names(approvals.additions(VIEW)) == ["default-deny", "newer"]  # never fewer fences
    # The informer still shows it long after: still gone (a stale view never counts it).
    approvals.settle("team", VIEW.namespace("team"))
    assert names(approvals.removals(VIEW)) == ["default-deny"]


def test_a_removal_outlives_the_informer_for_the_grace_then_settles() -> None:
    now = [0.0]
    approvals = RecentApprovals(grace=15.0, clock=lambda: now[0])
    approvals.record("team", NEWER, None)
    # The informer saw the delete, but a live read remembered from before the write may still
    # show the fence: within the grace the removal stays.
    approvals.settle("team", namespace_facts("team", [OLDEST]))
    assert len(approvals) == 1
    now[0] = 16.0
    approvals.settle("team", namespace_facts("team", [OLDEST]))
    assert len(approvals) == 0


def test_a_removal_goes_only_for_the_exact_version_the_view_holds() -> None:
    approvals = RecentApprovals()
    approvals.record(
        "team", versioned(deny_all("newer", created="2026-02-01T00:00:00Z"), "9"), None
    )
    assert names(approvals.removals(VIEW)) == ["default-deny", "newer"]  # rv 11 is not rv 9


def test_a_removal_the_api_server_never_made_is_forgotten_on_a_live_read_after_the_grace() -> None:
    now = [0.0]
    approvals = RecentApprovals(grace=15.0, clock=lambda: now[0])
    approvals.record("team", NEWER, None)
    approvals.settle("team", VIEW.namespace("team"), live=True)  # within the grace: may be due
    assert len(approvals) == 1
    now[0] = 16.0
    approvals.settle("team", VIEW.namespace("team"))  # the informer: keep, it may lag
    assert len(approvals) == 1
    approvals.settle("team", VIEW.namespace("team"), live=True)  # a fresh read still holds it
    assert len(approvals) == 0


def test_a_rewrite_never_plants_its_replacement_in_the_fence_view() -> None:
    approvals = RecentApprovals()
    plant = versioned(deny_all("planted"), "")
    approvals.record("team", None, plant)
    assert names(approvals.removals(VIEW)) == ["default-deny", "newer"]
    assert names(approvals.additions(VIEW)) == ["default-deny", "newer", "planted"]


def test_additions_are_forgotten_after_the_grace() -> None:
    now = [0.0]
    approvals = RecentApprovals(grace=15.0, clock=lambda: now[0])
    approvals.record("team", None, analyse_policy(netpol("half")))
    now[0] = 16.0
    approvals.settle("team", VIEW.namespace("team"))
    assert len(approvals) == 0


def test_approvals_in_namespaces_the_view_does_not_know_expire_and_are_bounded() -> None:
    now = [0.0]
    approvals = RecentApprovals(grace=15.0, clock=lambda: now[0])
    for i in range(3):
        approvals.record(f"nope-{i}", None, analyse_policy(netpol("x", namespace=f"nope-{i}")))
    now[0] = 16.0
    for i in range(3):
        approvals.settle(f"nope-{i}", None)
    assert len(approvals) == 0
    for i in range(MAX_TOTAL + 5):
        approvals.record(f"flood-{i}", None, analyse_policy(netpol("x", namespace="flood")))
    assert len(approvals) == MAX_TOTAL


def test_a_policy_approved_again_and_again_is_remembered_once() -> None:
    approvals = RecentApprovals()
    versions = [
        versioned(netpol("newer", types=t, created="2026-02-01T00:00:00Z"), "11")
        for t in (["Ingress"], ["Egress"], ["Ingress", "Egress"]) * 3000
    ]
    for before, after in itertools.pairwise(versions):
        approvals.record("team", before, after)
    approvals.record("team", OLDEST, None)
    assert len(approvals) == 2


# --- through decide: a forged review may cause a denial, never an allow -------------------------

SETTINGS = Settings()
OPEN_VIEW = StaticView([namespace_facts("team")])


def test_a_forged_update_that_plants_a_fence_does_not_let_workloads_in() -> None:
    approvals = RecentApprovals()
    approvals.record("team", None, analyse_policy(deny_all()))  # a forged UPDATE's object
    decision = decide(parse(workload_review("Pod")), OPEN_VIEW, SETTINGS, approvals)
    assert decision.verdict == "deny"


def test_a_forged_removal_of_an_opener_does_not_let_workloads_in() -> None:
    # Taking an opener away must not make the namespace look fenced (a forged DELETE naming it).
    opener = versioned(netpol("open", types=["Ingress", "Egress"], ingress=[{}], egress=[{}]), "11")
    view = StaticView([namespace_facts("team", [OLDEST, opener])])
    assert decide(parse(workload_review("Pod")), view, SETTINGS).verdict == "deny"
    approvals = RecentApprovals()
    approvals.record("team", opener, None)
    assert decide(parse(workload_review("Pod")), view, SETTINGS, approvals).verdict == "deny"


def test_a_forged_exempt_addition_does_not_let_a_neutralising_policy_through() -> None:
    approvals = RecentApprovals()
    opens = netpol("open", types=["Ingress"], ingress=[{}])
    approvals.record("team", None, analyse_policy(opens))  # forged, as an exempt user
    view = StaticView([namespace_facts("team", [OLDEST])])
    mine = netpol("mine", types=["Ingress"], ingress=[{}])
    decision = decide(parse(netpol_review("CREATE", new=mine)), view, SETTINGS, approvals)
    assert decision.verdict == "deny"


def test_a_forged_removal_does_not_let_a_neutralising_policy_through() -> None:
    approvals = RecentApprovals()
    approvals.record("team", OLDEST, None)  # a forged DELETE of the namespace's only fence
    view = StaticView([namespace_facts("team", [OLDEST])])
    opener = netpol("open", types=["Ingress"], ingress=[{}])
    decision = decide(parse(netpol_review("CREATE", new=opener)), view, SETTINGS, approvals)
    assert decision.verdict == "deny"
    assert "allow-all" in decision.annotations["rules"]


def test_two_halves_of_every_address_are_judged_together() -> None:
    approvals = RecentApprovals()
    view = StaticView([namespace_facts("team", [OLDEST])])

    def half(name: str, cidr: str) -> dict[str, Any]:
        return netpol(name, types=["Ingress"], ingress=[{"from": [{"ipBlock": {"cidr": cidr}}]}])

    first = decide(
        parse(netpol_review("CREATE", new=half("low", "0.0.0.0/1"))), view, SETTINGS, approvals
    )
    assert first.verdict == "allow"
    assert first.approval is not None
    approvals.record("team", first.approval.old, first.approval.new)
    second = decide(
        parse(netpol_review("CREATE", new=half("high", "128.0.0.0/1"))), view, SETTINGS, approvals
    )
    assert second.verdict == "deny"


def test_the_pinned_subject_cannot_be_forged_with_a_comma_in_another_field() -> None:
    from webhook.server import ClientIdentity, Runtime, _trusted

    runtime = Runtime(settings=SETTINGS, cluster=VIEW, client_ca=True, client_subject="apiserver")
    real = ClientIdentity("commonName=apiserver", ("apiserver",))
    # O="x,commonName=apiserver", CN=mallory: rendered escaped, one commonName that is not it.
    forged = ClientIdentity(
        r"organizationName=x\,commonName\=apiserver,commonName=mallory", ("mallory",)
    )
    two_names = ClientIdentity("commonName=apiserver,commonName=mallory", ("apiserver", "mallory"))
    assert _trusted(runtime, real)
    assert not _trusted(runtime, forged)
    assert not _trusted(runtime, two_names)
    assert not _trusted(runtime, None)
