"""Every write that can set a Namespace's labels meets rule `namespace-labels`: a CREATE, a plain
UPDATE, and UPDATEs of the `status` and `finalize` subresources; the namespace controller's writes
during a deletion pass, and its finalize call is never denied."""

from __future__ import annotations

from typing import Any

import pytest
from correlate_kit import dump, real_event, run
from objects import parse, review
from test_label_trust import namespace, settings, trusting, view

from webhook.cluster.static import StaticView
from webhook.cluster.view import namespace_facts
from webhook.decide import decide
from webhook.netpol import analyse_policy
from webhook.registration import DEFAULT_RULES, is_registered

CONTROLLER = "system:serviceaccount:kube-system:namespace-controller"


def namespace_review(
    operation: str,
    name: str,
    new: dict[str, str],
    old: dict[str, str] | None = None,
    *,
    sub_resource: str = "",
    deleting: bool = False,
    user: str = "alice",
) -> dict[str, Any]:
    obj = namespace(name, new)
    previous = namespace(name, old) if old is not None else None
    if deleting:
        for doc in (obj, previous):
            if doc is not None:
                doc["metadata"]["deletionTimestamp"] = "2026-04-01T00:00:00Z"
                doc["status"] = {"phase": "Terminating"}
                doc["spec"] = {"finalizers": []}
    return review(
        operation,
        ("", "v1", "namespaces"),
        "Namespace",
        namespace="" if operation == "CREATE" else name,
        name="" if operation == "CREATE" else name,
        obj=obj,
        old=previous,
        sub_resource=sub_resource,
        user=user,
    )


TRUSTED = {"team": "monitoring"}
WARNING = "label team=monitoring: NetworkPolicy app/from-monitoring now trusts namespace {}"


# --- CREATE ---------------------------------------------------------------------------------------


def test_a_namespace_created_with_a_trusted_label_is_warned() -> None:
    decision = decide(
        parse(namespace_review("CREATE", "sneaky", TRUSTED)), view(trusting()), settings()
    )
    assert decision.allowed
    assert WARNING.format("sneaky") in decision.warnings
    (result,) = [r for r in decision.failed if r.rule == "namespace-labels"]
    assert result.message.startswith(
        'namespace "sneaky": created with team=monitoring, it matches 1 allow rule'
    )


def test_enforce_denies_such_a_create() -> None:
    request = parse(namespace_review("CREATE", "sneaky", TRUSTED))
    denied = decide(request, view(trusting()), settings("namespaceLabels: {mode: enforce}"))
    assert not denied.allowed
    assert "NetworkPolicy app/from-monitoring" in denied.message


def test_a_namespace_created_without_a_trusted_label_is_not_warned_about_labels() -> None:
    for labels in ({}, {"owner": "me"}, {"team": "other"}):
        decision = decide(
            parse(namespace_review("CREATE", "plain", labels)), view(trusting()), settings()
        )
        assert [r.rule for r in decision.failed] == ["default-deny"]  # only "not fenced yet"
        (result,) = [r for r in decision.results if r.rule == "namespace-labels"]
        assert result.passed


# --- status and finalize ----------------------------------------------------------------------


@pytest.mark.parametrize("sub_resource", ["status", "finalize"])
def test_a_label_change_through_a_subresource_is_warned(sub_resource: str) -> None:
    request = parse(namespace_review("UPDATE", "x", TRUSTED, {}, sub_resource=sub_resource))
    decision = decide(request, view(trusting()), settings())
    assert decision.verdict == "warn"
    assert decision.warnings == (WARNING.format("x"),)
    enforced = decide(request, view(trusting()), settings("namespaceLabels: {mode: enforce}"))
    assert not enforced.allowed


@pytest.mark.parametrize("sub_resource", ["status", "finalize"])
def test_the_namespace_controller_s_writes_during_a_deletion_pass(sub_resource: str) -> None:
    # What it sends: the same labels, the finalizers emptied or a status condition set.
    request = parse(
        namespace_review(
            "UPDATE",
            "x",
            TRUSTED,
            TRUSTED,
            sub_resource=sub_resource,
            deleting=True,
            user=CONTROLLER,
        )
    )
    decision = decide(request, view(trusting()), settings("namespaceLabels: {mode: enforce}"))
    assert decision.verdict == "allow"
    (result,) = decision.results
    assert (result.rule, result.passed, result.message) == (
        "namespace-labels",
        True,
        "no label changed",
    )


def test_the_finalize_call_of_a_namespace_being_deleted_is_never_denied() -> None:
    # Even one that newly lets it into an allow rule, under enforce: warned instead.
    request = parse(
        namespace_review("UPDATE", "x", TRUSTED, {}, sub_resource="finalize", deleting=True)
    )
    decision = decide(request, view(trusting()), settings("namespaceLabels: {mode: enforce}"))
    assert decision.allowed
    assert decision.warnings == (WARNING.format("x"),)
    assert decision.results[0].message.endswith(
        "Not denied: this is the finalize call of a namespace being deleted."
    )
    # The same label change on its status is still denied: it does not hold up the deletion.
    status = parse(
        namespace_review("UPDATE", "x", TRUSTED, {}, sub_resource="status", deleting=True)
    )
    assert not decide(
        status, view(trusting()), settings("namespaceLabels: {mode: enforce}")
    ).allowed


def terminating_view(name: str) -> StaticView:
    """The trusting policy's view, with namespace `name` Terminating (a Pod still in its grace
    period), as the informer shows it while the namespace controller waits."""
    policy = analyse_policy(trusting())
    return StaticView(
        [namespace_facts("app", [policy]), namespace_facts(name, [], terminating=True)]
    )


@pytest.mark.parametrize("sub_resource", ["", "status"])
def test_relabelling_a_terminating_namespace_into_an_allow_rule_is_still_judged(
    sub_resource: str,
) -> None:
    # Its running Pods are admitted by the trusting rule as soon as it carries the label.
    request = parse(
        namespace_review("UPDATE", "sneaky", TRUSTED, {}, sub_resource=sub_resource, deleting=True)
    )
    enforce = settings("namespaceLabels: {mode: enforce}")
    decision = decide(request, terminating_view("sneaky"), enforce)
    assert (decision.verdict, decision.exempt) == ("deny", "")
    assert decision.annotations["rules"] == "namespace-labels"
    warned = decide(request, terminating_view("sneaky"), settings())
    assert (warned.verdict, warned.warnings) == ("warn", (WARNING.format("sneaky"),))


def test_the_finalize_call_of_a_terminating_namespace_is_warned_not_denied() -> None:
    request = parse(
        namespace_review("UPDATE", "x", TRUSTED, {}, sub_resource="finalize", deleting=True)
    )
    decision = decide(request, terminating_view("x"), settings("namespaceLabels: {mode: enforce}"))
    assert (decision.verdict, decision.exempt) == ("warn", "")
    assert decision.warnings == (WARNING.format("x"),)


def test_other_writes_in_a_terminating_namespace_are_judged_too() -> None:
    # Only the namespace controller's deletions are exempt there (test_decide has them).
    pod = parse(review("CREATE", ("", "v1", "pods"), "Pod", namespace="sneaky", name="p"))
    decision = decide(pod, terminating_view("sneaky"), settings())
    assert decision.exempt == ""
    assert decision.annotations["rules"] == "default-deny"


def test_other_namespace_subresources_are_not_judged() -> None:
    request = parse(namespace_review("UPDATE", "x", TRUSTED, {}, sub_resource="other"))
    assert decide(request, view(trusting()), settings()).results == ()


# --- what the API server sends, and what correlate expects to be decided --------------------------


@pytest.mark.parametrize(
    ("operation", "sub_resource", "registered"),
    [
        ("CREATE", "", True),
        ("UPDATE", "", True),
        ("UPDATE", "status", True),
        ("UPDATE", "finalize", True),
        ("CREATE", "status", False),
        ("DELETE", "", False),
    ],
)
def test_every_write_that_sets_labels_is_registered(
    operation: str, sub_resource: str, registered: bool
) -> None:
    assert is_registered(DEFAULT_RULES, operation, "", "namespaces", sub_resource) is registered


def test_the_subresource_rule_is_cluster_scoped_like_namespaces() -> None:
    (rule,) = [r for r in DEFAULT_RULES if "namespaces/finalize" in r.resources]
    assert (rule.operations, rule.resources, rule.scope) == (
        ("UPDATE",),
        ("namespaces/status", "namespaces/finalize"),
        "Cluster",
    )


def namespace_event(sub_resource: str, decided: bool) -> dict[str, Any]:
    """The namespace controller's write, with (or without) the webhook's decision annotations."""
    event = real_event(b'/decision-id"' if decided else b'"dodged"')
    event["verb"] = "update"
    event["objectRef"] = {
        "resource": "namespaces",
        "name": "leaving",
        "apiVersion": "v1",
        "subresource": sub_resource,
    }
    return event


@pytest.mark.parametrize("sub_resource", ["status", "finalize"])
def test_correlate_counts_a_namespace_subresource_write_as_should_have_been_decided(
    sub_resource: str,
) -> None:
    (bypass,) = run([dump(namespace_event(sub_resource, decided=False))], []).bypasses
    assert (bypass.subresource, bypass.namespace, bypass.cause) == (
        sub_resource,
        "leaving",
        "dodged",
    )
    # Decided by the webhook (every such write reaches it now): no bypass.
    assert run([dump(namespace_event(sub_resource, decided=True))], []).bypasses == ()
