"""The `fence-lost` audit annotation: an allowed NetworkPolicy removal says what it left unfenced.

The API server stores it as `<webhook>/fence-lost`; `kubefence monitor` alerts on it. It must be
there exactly when letting the request through leaves a required direction without any fence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from objects import deny_all, netpol, netpol_review, parse

from webhook.cluster.view import StaticView, namespace_facts
from webhook.config import parse_settings
from webhook.decide import Decision, decide, reconsider
from webhook.netpol import analyse_policy
from webhook.settings import Settings

OLD = deny_all("a-oldest", created="2026-01-01T00:00:00Z")
NEW = deny_all("b-newer", created="2026-02-01T00:00:00Z")
INGRESS_ONLY = netpol("c-ingress", types=["Ingress"], created="2026-03-01T00:00:00Z")


def view(*policies: dict[str, Any], running_pods: int = 3, terminating: bool = False) -> StaticView:
    facts = namespace_facts(
        "team",
        [analyse_policy(p) for p in policies],
        running_pods=running_pods,
        terminating=terminating,
    )
    return StaticView([facts])


def settings(text: str = "") -> Settings:
    return parse_settings(text, "config.yaml", Path())


def lost(decision: Decision) -> str | None:
    return decision.response().audit_annotations.get("fence-lost")


def delete(policy: dict[str, Any], **kw: Any) -> Any:
    return parse(netpol_review("DELETE", old=policy, **kw))


def test_a_teardown_of_the_last_fence_names_both_directions() -> None:
    decision = decide(delete(OLD), view(OLD, running_pods=0), settings())
    assert decision.verdict == "allow"
    assert lost(decision) == "Ingress,Egress"


def test_a_teardown_names_only_the_directions_no_other_policy_fences() -> None:
    decision = decide(delete(OLD), view(OLD, INGRESS_ONLY, running_pods=0), settings())
    assert lost(decision) == "Egress"


@pytest.mark.parametrize(
    ("gone", "stays"), [(NEW, OLD), (OLD, NEW)], ids=["an-older-stays", "a-newer-stays"]
)
def test_no_annotation_while_another_fence_keeps_the_namespace_fenced(
    gone: dict[str, Any], stays: dict[str, Any]
) -> None:
    decision = decide(delete(gone), view(OLD, NEW, running_pods=0), settings())
    assert decision.verdict == "allow"
    assert lost(decision) is None


def test_an_older_fence_staying_in_a_running_namespace_loses_nothing() -> None:
    decision = decide(delete(NEW), view(OLD, NEW), settings())
    assert decision.verdict == "allow"
    assert lost(decision) is None


@pytest.mark.parametrize("mode", ["warn", "audit"])
def test_warn_or_audit_mode_letting_the_last_fence_go_says_so(mode: str) -> None:
    decision = decide(delete(OLD), view(OLD), settings(f"defaultDeny: {{mode: {mode}}}"))
    assert decision.verdict == mode
    assert decision.annotations["rules"] == "default-deny"
    assert lost(decision) == "Ingress,Egress"


def test_a_denied_removal_leaves_the_fence_and_says_nothing() -> None:
    decision = decide(delete(OLD), view(OLD), settings())
    assert decision.verdict == "deny"
    assert lost(decision) is None


def test_a_removal_denied_by_another_rule_says_nothing() -> None:
    # Warn mode lets the last fence go, but the replacement opens Ingress to everyone: denied.
    opener = netpol("a-oldest", types=["Ingress"], ingress=[{}], created="2026-01-01T00:00:00Z")
    request = parse(netpol_review("UPDATE", new=opener, old=OLD))
    decision = decide(request, view(OLD), settings("defaultDeny: {mode: warn}"))
    assert decision.verdict == "deny"
    assert lost(decision) is None


def test_an_update_that_keeps_fencing_says_nothing() -> None:
    keep = deny_all("a-oldest")
    keep["spec"]["ingress"] = [{"from": [{"podSelector": {}}]}]
    for pods in (3, 0):
        decision = decide(
            parse(netpol_review("UPDATE", new=keep, old=OLD)),
            view(OLD, running_pods=pods),
            settings(),
        )
        assert decision.verdict == "allow"
        assert lost(decision) is None


def test_an_update_that_weakens_the_last_fence_in_a_teardown_names_the_direction() -> None:
    drop = netpol("a-oldest", types=["Ingress"], created="2026-01-01T00:00:00Z")
    request = parse(netpol_review("UPDATE", new=drop, old=OLD))
    decision = decide(request, view(OLD, running_pods=0), settings())
    assert decision.verdict == "allow"
    assert lost(decision) == "Egress"


def test_only_the_required_directions_are_named() -> None:
    decision = decide(
        delete(OLD), view(OLD, running_pods=0), settings("defaultDeny: {require: [Egress]}")
    )
    assert lost(decision) == "Egress"


def test_nothing_is_lost_where_the_rule_is_off() -> None:
    decision = decide(delete(OLD), view(OLD), settings("defaultDeny: {mode: off}"))
    assert decision.verdict == "allow"
    assert lost(decision) is None


def test_a_dry_run_loses_no_fence_and_approves_nothing() -> None:
    # The audit log cannot tell a dry run (a DELETE's body overrides its URI's `dryRun`): the
    # annotation is written only for a removal that really happens, so correlate trusts it.
    decision = decide(delete(OLD, dry_run=True), view(OLD, running_pods=0), settings())
    assert decision.verdict == "allow"
    assert lost(decision) is None
    assert decision.approval is None
    # ... the same teardown for real says what it lost.
    assert lost(decide(delete(OLD), view(OLD, running_pods=0), settings())) == "Ingress,Egress"


@pytest.mark.parametrize("mode", ["warn", "audit"])
def test_a_dry_run_in_warn_or_audit_mode_or_by_an_exempt_user_loses_no_fence(mode: str) -> None:
    lax = settings(f"defaultDeny: {{mode: {mode}}}")
    decision = decide(delete(OLD, dry_run=True), view(OLD), lax)
    assert decision.verdict == mode
    assert lost(decision) is None
    exempt = settings("exemptions: {users: [ci-bot]}")
    decision = decide(delete(OLD, dry_run=True, user="ci-bot"), view(OLD), exempt)
    assert decision.exempt
    assert lost(decision) is None
    assert lost(decide(delete(OLD, user="ci-bot"), view(OLD), exempt)) == "Ingress,Egress"


@pytest.mark.parametrize(
    ("config", "kw"),
    [
        ("exemptions: {users: [ci-bot]}", {"user": "ci-bot"}),
        ("exemptions: {groups: [platform]}", {"groups": ["system:authenticated", "platform"]}),
    ],
)
def test_an_exempt_user_removing_the_last_fence_is_still_annotated(
    config: str, kw: dict[str, Any]
) -> None:
    decision = decide(delete(OLD, **kw), view(OLD), settings(config))
    assert decision.exempt
    assert decision.verdict == "allow"
    assert lost(decision) == "Ingress,Egress"
    assert decision.approval is not None
    assert decision.approval.old is not None
    # ... and an exempt user's removal that another fence covers is not.
    assert lost(decide(delete(NEW, **kw), view(OLD, NEW), settings(config))) is None


def test_an_exempt_or_terminating_namespace_loses_no_required_fence() -> None:
    exempt = decide(delete(OLD), view(OLD), settings("exemptions: {namespaces: [team]}"))
    cleaner = "system:serviceaccount:kube-system:namespace-controller"
    terminating = decide(
        delete(OLD, user=cleaner), view(OLD, terminating=True, running_pods=0), settings()
    )
    for decision in (exempt, terminating):
        assert decision.exempt
        assert lost(decision) is None


def test_the_annotation_comes_from_the_decision_made_on_the_live_read() -> None:
    request = delete(NEW)
    cached = decide(request, view(OLD, NEW), settings())
    assert cached.confirm == "team"
    assert lost(cached) is None
    # The live read shows the older fence gone and the namespace empty: the last fence goes.
    fresh = reconsider(cached, view(NEW, running_pods=0), settings())
    assert fresh.verdict == "allow"
    assert lost(fresh) == "Ingress,Egress"
    # And the other way round: a fence the cache missed keeps the namespace fenced.
    cached = decide(delete(OLD), view(OLD, running_pods=0), settings())
    assert lost(cached) == "Ingress,Egress"
    assert lost(reconsider(cached, view(OLD, NEW, running_pods=0), settings())) is None


# --- neutralised, not only removed: the pooled fence before and after the change ------------------

INGRESS_FENCE = netpol("default-deny", types=["Ingress"], uid="u1")
# The same object, updated to admit every source: it still selects all pods, and fences nothing.
NEUTRALISED = netpol("default-deny", types=["Ingress"], ingress=[{}], uid="u1")
ALLOW_ALL = netpol(
    "allow-everyone", types=["Ingress"], ingress=[{}], created="2026-05-01T00:00:00Z"
)
INGRESS = "defaultDeny: {require: [Ingress]}"
WARN = "defaultDeny: {require: [Ingress], allowAll: warn}"


def update(old: dict[str, Any], new: dict[str, Any], **kw: Any) -> Any:
    return parse(netpol_review("UPDATE", new=new, old=old, **kw))


def create(new: dict[str, Any], **kw: Any) -> Any:
    return parse(netpol_review("CREATE", new=new, **kw))


@pytest.mark.parametrize(
    ("config", "who", "verdict"),
    [
        (WARN, {}, "warn"),
        ("defaultDeny: {require: [Ingress], allowAll: audit}", {}, "audit"),
        (INGRESS + "\nexemptions: {users: [ci-bot]}", {"user": "ci-bot"}, "allow"),
    ],
    ids=["warn", "audit", "exempt-user"],
)
def test_neutralising_the_last_fence_in_place_or_beside_it_is_annotated(
    config: str, who: dict[str, Any], verdict: str
) -> None:
    # A deny-all updated to `ingress: [{}]`, or an allow-all created next to it: the namespace's
    # pods are open to everyone once it is let through.
    for request in (update(INGRESS_FENCE, NEUTRALISED, **who), create(ALLOW_ALL, **who)):
        decision = decide(request, view(INGRESS_FENCE), settings(config))
        assert decision.verdict == verdict
        assert lost(decision) == "Ingress"


def test_a_neutralising_change_denied_in_enforce_mode_says_nothing() -> None:
    for request in (update(INGRESS_FENCE, NEUTRALISED), create(ALLOW_ALL)):
        decision = decide(request, view(INGRESS_FENCE), settings(INGRESS))
        assert (decision.verdict, lost(decision)) == ("deny", None)


def test_a_create_or_update_that_leaves_the_fence_standing_says_nothing() -> None:
    warn = settings(WARN)
    narrow = netpol(
        "allow-web",
        types=["Ingress"],
        selector={"matchLabels": {"app": "web"}},
        ingress=[{}],
        created="2026-05-01T00:00:00Z",
    )
    assert lost(decide(create(narrow), view(INGRESS_FENCE), warn)) is None
    assert lost(decide(create(deny_all("second")), view(INGRESS_FENCE), warn)) is None
    # A namespace that was open already loses nothing to one more allow-all.
    assert lost(decide(create(ALLOW_ALL), view(), warn)) is None
    assert lost(decide(create(ALLOW_ALL), view(NEUTRALISED), warn)) is None


def test_a_neutralising_update_on_the_live_read_is_annotated_from_that_read() -> None:
    warn = settings(WARN)
    cached = decide(update(INGRESS_FENCE, NEUTRALISED), view(INGRESS_FENCE), warn)
    assert lost(cached) == "Ingress"
    # The live read shows an allow-all the cache missed: the namespace was open already.
    assert lost(reconsider(cached, view(INGRESS_FENCE, ALLOW_ALL), warn)) is None


def test_the_guard_judges_the_fence_with_the_configured_limits() -> None:
    """Limits raised in the config make a namespace of 600 policies fenced everywhere else in
    kubefence; the guard must see it fenced too, or the last fence would go as "no fence lost"."""
    many = [
        netpol(f"app-{i:03}", selector={"matchLabels": {"app": f"a{i}"}}, types=["Ingress"])
        for i in range(600)
    ]
    raised = settings("limits:\n  maxPoliciesPerNamespace: 1000\n")
    decision = decide(delete(OLD), view(OLD, *many, running_pods=3), raised)
    assert decision.verdict == "deny"
    assert "last fence" in decision.message or "unfenced" in decision.message


def test_a_fence_in_a_namespace_over_the_limits_goes_only_by_teardown() -> None:
    """Over the limits nothing is analysed, which proves nothing about the running Pods: the
    guard still keeps their fence, failing closed, and lets it go when no Pod is left."""
    many = [
        netpol(f"app-{i:03}", selector={"matchLabels": {"app": f"a{i}"}}, types=["Ingress"])
        for i in range(600)
    ]
    running = decide(delete(OLD), view(OLD, *many, running_pods=3), settings())
    assert running.verdict == "deny"
    assert decide(delete(OLD), view(OLD, *many, running_pods=0), settings()).verdict == "allow"
