"""Allow rules that trust namespace labels: found in policies, indexed, and warned about when a
Namespace UPDATE makes a namespace newly match one (rule `namespace-labels`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from objects import netpol, parse, review

from webhook.cluster.state import ClusterState, Resource, namespace_record
from webhook.cluster.view import StaticView, namespace_facts
from webhook.config import parse_settings
from webhook.decide import decide
from webhook.label_trust import TrustEntry, TrustIndex, trusted_selectors
from webhook.labels import parse_selector
from webhook.netpol import analyse_policy
from webhook.settings import DEFAULT_SETTINGS, Settings

NAME = "kubernetes.io/metadata.name"


def from_namespaces(selector: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"from": [{"namespaceSelector": selector}]}]


def trusting(
    name: str = "from-monitoring",
    namespace: str = "app",
    selector: dict[str, Any] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    selector = selector if selector is not None else {"matchLabels": {"team": "monitoring"}}
    return netpol(name, namespace, ingress=from_namespaces(selector), **kw)


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {NAME: name, **(labels or {})}},
    }


def label_review(name: str, old: dict[str, str], new: dict[str, str]) -> dict[str, Any]:
    return review(
        "UPDATE",
        ("", "v1", "namespaces"),
        "Namespace",
        namespace="",
        name=name,
        obj=namespace(name, new),
        old=namespace(name, old),
    )


def view(*policies: dict[str, Any]) -> StaticView:
    by_namespace: dict[str, list[Any]] = {}
    for p in policies:
        by_namespace.setdefault(p["metadata"]["namespace"], []).append(analyse_policy(p))
    return StaticView(namespace_facts(ns, ps) for ns, ps in by_namespace.items())


# --- which peers trust labels ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "keys"),
    [
        ({"matchLabels": {"team": "a"}}, ("team",)),
        ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]}, ("env",)),
        ({"matchExpressions": [{"key": "env", "operator": "Exists"}]}, ("env",)),
        ({"matchLabels": {NAME: "ops", "team": "a"}}, ("team",)),
        ({"matchLabels": {NAME: "ops"}}, ()),
        ({}, ()),  # every namespace: not a matter of labels (allow-all judges it)
        ({"matchLabels": {"team": 1}}, ()),  # malformed: selects nothing
    ],
)
def test_a_peer_trusts_labels_when_its_namespace_selector_keys_on_one(
    selector: dict[str, Any], keys: tuple[str, ...]
) -> None:
    found = analyse_policy(trusting(selector=selector)).label_trust
    assert tuple(k for s in found for k in s.keys) == keys


def test_egress_peers_count_only_where_egress_is_a_policy_type() -> None:
    egress = [{"to": [{"namespaceSelector": {"matchLabels": {"team": "db"}}}]}]
    enforced = analyse_policy(netpol("to-db", "app", types=["Egress"], egress=egress))
    ignored = analyse_policy(netpol("to-db", "app", types=["Ingress"], egress=egress))
    assert [(s.direction, s.where) for s in enforced.label_trust] == [
        ("Egress", "spec.egress[0].to[0].namespaceSelector")
    ]
    assert ignored.label_trust == ()


def test_a_pod_selector_peer_without_namespace_selector_trusts_no_namespace_label() -> None:
    spec = {"ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "x"}}}]}]}
    assert trusted_selectors(spec, ["Ingress"]) == ()


# --- the index ------------------------------------------------------------------------------------


def test_only_a_change_that_makes_the_selector_match_is_newly_matched() -> None:
    index = view(trusting()).label_trust()
    base = {NAME: "x"}
    assert [h.entry.policy for h in index.newly_matched(base, {**base, "team": "monitoring"})] == [
        "from-monitoring"
    ]
    assert index.newly_matched(base, {**base, "team": "other"}) == ()
    already = {**base, "team": "monitoring"}
    assert index.newly_matched(already, {**already, "extra": "1"}) == ()
    assert index.newly_matched({**base, "team": "monitoring"}, base) == ()  # it leaves


def test_removing_a_label_can_let_a_namespace_in() -> None:
    selector = {"matchExpressions": [{"key": "quarantined", "operator": "DoesNotExist"}]}
    index = view(trusting("not-quarantined", selector=selector)).label_trust()
    hits = index.newly_matched({NAME: "x", "quarantined": "yes"}, {NAME: "x"})
    assert [h.labels for h in hits] == [("-quarantined",)]


def test_the_index_follows_the_informer_state() -> None:
    state = ClusterState()
    settings = DEFAULT_SETTINGS
    state.replace_namespaces([namespace_record(namespace("app"))], "1", settings)
    state.replace_policies([analyse_policy(trusting())], "1", settings)
    labelled = {NAME: "x", "team": "monitoring"}
    assert len(state.label_trust.newly_matched({NAME: "x"}, labelled)) == 1
    state.apply(Resource.NETWORK_POLICIES, "DELETED", trusting(), settings)
    assert state.label_trust.newly_matched({NAME: "x"}, labelled) == ()
    assert len(state.label_trust) == 0
    state.apply(Resource.NETWORK_POLICIES, "ADDED", trusting("again"), settings)
    assert [h.entry.policy for h in state.label_trust.newly_matched({NAME: "x"}, labelled)] == [
        "again"
    ]


_SELECTORS = st.sampled_from(
    [
        {"matchLabels": {"a": "1"}},
        {"matchLabels": {"a": "1", "b": "2"}},
        {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]},
        {"matchExpressions": [{"key": "b", "operator": "Exists"}]},
        {"matchExpressions": [{"key": "b", "operator": "DoesNotExist"}]},
    ]
)
_LABELS = st.dictionaries(st.sampled_from(["a", "b", "c"]), st.sampled_from(["1", "2"]))


@given(st.lists(_SELECTORS, max_size=6), _LABELS, _LABELS)
def test_the_index_agrees_with_evaluating_every_selector(
    selectors: list[dict[str, Any]], old: dict[str, str], new: dict[str, str]
) -> None:
    index = TrustIndex()
    for i, raw in enumerate(selectors):
        peers = trusted_selectors({"ingress": from_namespaces(raw)}, ["Ingress"])
        index.set(f"ns{i}", [TrustEntry(f"ns{i}", "p", s) for s in peers])
    expected = sorted(
        f"ns{i}"
        for i, raw in enumerate(selectors)
        if parse_selector(raw).matches(new) and not parse_selector(raw).matches(old)
    )
    assert sorted(h.entry.namespace for h in index.newly_matched(old, new)) == expected


# --- the rule -------------------------------------------------------------------------------------


def settings(text: str = "") -> Settings:
    return parse_settings(text, "config.yaml", Path())


def test_labelling_a_namespace_into_an_allow_rule_warns_naming_policy_and_label() -> None:
    decision = decide(
        parse(label_review("sneaky", {}, {"team": "monitoring"})), view(trusting()), settings()
    )
    assert decision.allowed
    assert decision.verdict == "warn"
    assert decision.warnings == (
        "label team=monitoring: NetworkPolicy app/from-monitoring now trusts namespace sneaky",
    )
    assert decision.annotations["rules"] == "namespace-labels"


def test_enforce_denies_and_off_is_silent() -> None:
    request = parse(label_review("sneaky", {}, {"team": "monitoring"}))
    denied = decide(request, view(trusting()), settings("namespaceLabels: {mode: enforce}"))
    assert not denied.allowed
    assert "NetworkPolicy app/from-monitoring" in denied.message
    assert "spec.ingress[0].from[0].namespaceSelector: team=monitoring" in denied.message
    off = decide(request, view(trusting()), settings("namespaceLabels: {mode: off}"))
    assert off.verdict == "allow"
    assert off.results == ()


def test_other_label_changes_pass() -> None:
    cluster = view(trusting())
    unrelated = decide(parse(label_review("x", {}, {"owner": "me"})), cluster, settings())
    assert unrelated.verdict == "allow"
    already = {"team": "monitoring"}
    kept = decide(
        parse(label_review("x", already, {**already, "owner": "me"})), cluster, settings()
    )
    assert kept.verdict == "allow"


def test_many_matches_are_counted_in_one_warning() -> None:
    cluster = view(*(trusting(f"p{i}", f"ns{i}") for i in range(5)))
    decision = decide(parse(label_review("x", {}, {"team": "monitoring"})), cluster, settings())
    assert decision.warnings == (
        "label team=monitoring: NetworkPolicy ns0/p0 (+4 more) now trusts namespace x",
    )
    assert "and 2 more" in decision.results[-1].message


def test_the_mode_is_a_config_key_with_overrides() -> None:
    with pytest.raises(Exception, match=r"namespaceLabels.mode: must be one of"):
        settings("namespaceLabels: {mode: yes}")
    scoped = settings("overrides: [{namespaces: [lab], namespaceLabels: off}]")
    request = parse(label_review("lab", {}, {"team": "monitoring"}))
    assert decide(request, view(trusting()), scoped).verdict == "allow"
