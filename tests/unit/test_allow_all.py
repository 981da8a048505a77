"""Rule `allow-all` on the reach model, as a user meets it: which NetworkPolicies are denied,
warned about or let through, and why (issue 16's classes, each through `decide`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from objects import deny_all, netpol, netpol_review, parse

from webhook.cluster.view import StaticView, namespace_facts
from webhook.config import parse_settings
from webhook.decide import Decision, decide
from webhook.netpol import analyse_policy

FENCED = StaticView([namespace_facts("team", [analyse_policy(deny_all())])])
DEFAULTS = parse_settings("", "config.yaml", Path())
NOBODY_HAS = {"matchExpressions": [{"key": "some-key-nobody-has", "operator": "DoesNotExist"}]}


def create(policy: dict[str, Any], view: StaticView = FENCED, config: str = "") -> Decision:
    settings = parse_settings(config, "config.yaml", Path()) if config else DEFAULTS
    return decide(parse(netpol_review("CREATE", new=policy)), view, settings)


def ingress(*rules: Any, selector: dict[str, Any] | None = None, name: str = "p") -> dict[str, Any]:
    return netpol(name, types=["Ingress"], ingress=list(rules), selector=selector)


def tcp(start: int, end: int) -> dict[str, Any]:
    return {"protocol": "TCP", "port": start, "endPort": end}


def test_a_selector_that_selects_every_pod_without_being_empty_neutralises() -> None:
    decision = create(ingress({}, selector=NOBODY_HAS))
    assert decision.verdict == "deny"
    assert "would neutralise the default-deny" in decision.message


def test_ports_split_over_two_policies_are_pooled() -> None:
    low = analyse_policy(ingress({"ports": [tcp(1, 32767)]}, name="low"))
    view = StaticView([namespace_facts("team", [analyse_policy(deny_all()), low])])
    assert create(ingress({"ports": [tcp(1, 32767)]}, name="low"), FENCED).verdict == "allow"
    decision = create(ingress({"ports": [tcp(32768, 65535)]}, name="high"), view)
    assert decision.verdict == "deny"


def test_ports_split_over_two_rules_of_one_policy_are_pooled() -> None:
    decision = create(ingress({"ports": [tcp(1, 32767)]}, {"ports": [tcp(32768, 65535)]}))
    assert decision.verdict == "deny"


def test_halves_of_the_addresses_on_split_ports_are_judged_jointly() -> None:
    def block(cidr: str) -> dict[str, Any]:
        return {"ipBlock": {"cidr": cidr}}

    # 0.0.0.0/1 + 128.0.0.0/1 on 1-1000, 0.0.0.0/0 on 1001-65535: every peer on every port.
    neutralising = ingress(
        {"from": [block("0.0.0.0/1"), block("128.0.0.0/1")], "ports": [tcp(1, 1000)]},
        {"from": [block("0.0.0.0/0")], "ports": [tcp(1001, 65535)]},
    )
    assert create(neutralising).verdict == "deny"
    # Everyone on half the ports, half the addresses on the rest: not everyone everywhere.
    fine = ingress(
        {"from": [block("0.0.0.0/0")], "ports": [tcp(1, 1000)]},
        {"from": [block("0.0.0.0/1")], "ports": [tcp(1, 65535)]},
    )
    assert create(fine).verdict == "allow"


@pytest.mark.parametrize(
    "rule",
    [
        pytest.param(
            {"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["192.0.2.1/32"]}}]},
            id="all-but-one-address",
        ),
        pytest.param({"ports": [tcp(1, 65534)]}, id="all-but-one-port"),
    ],
)
def test_near_total_openings_warn(rule: dict[str, Any]) -> None:
    decision = create(ingress(rule))
    assert decision.verdict == "warn"
    assert "nearly neutralises the default-deny" in decision.failed[0].message
    assert create(ingress(rule), config="defaultDeny: {allowNearlyAll: enforce}").verdict == "deny"


def test_all_but_the_private_ranges_stays_silent() -> None:
    private = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
    rule = {"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": private}}]}
    assert create(ingress(rule)).verdict == "allow"


def test_editing_the_oldest_fence_in_place_into_a_near_total_opening_warns() -> None:
    old = deny_all()
    new = deny_all()
    new["spec"]["ingress"] = [{"ports": [tcp(1, 65534)]}]
    review = netpol_review("UPDATE", new=new, old=old)
    decision = decide(parse(review), FENCED, DEFAULTS)
    assert decision.verdict == "warn"


def test_selected_pods_pooled_across_policies_are_warned_about() -> None:
    web = ingress({"ports": [tcp(1, 32767)]}, selector={"matchLabels": {"app": "web"}}, name="a")
    view = StaticView([namespace_facts("team", [analyse_policy(deny_all()), analyse_policy(web)])])
    other = ingress(
        {"ports": [tcp(32768, 65535)]}, selector={"matchLabels": {"tier": "front"}}, name="b"
    )
    decision = create(other, view)
    assert decision.verdict == "warn"
    assert "opens the pods it selects to every peer" in decision.failed[0].message
    # Selectors no pod can satisfy together are not pooled.
    exclusive = ingress(
        {"ports": [tcp(32768, 65535)]}, selector={"matchLabels": {"app": "db"}}, name="c"
    )
    assert create(exclusive, view).verdict == "allow"


def test_a_policy_over_a_limit_is_denied_naming_the_limit_and_may_shrink() -> None:
    blocks = [{"ipBlock": {"cidr": f"10.{i // 256}.{i % 256}.0/24"}} for i in range(300)]
    big = ingress({"from": blocks}, name="big")
    decision = create(big)
    assert decision.verdict == "deny"
    assert "limits.maxPeersPerRule is 256" in decision.message
    assert create(big, config="limits: {maxPeersPerRule: 1000}").verdict == "allow"
    # An UPDATE that makes an over-limit policy smaller is judged as usual.
    smaller = ingress({"from": blocks[:280]}, name="big")
    review = netpol_review("UPDATE", new=smaller, old=big)
    assert decide(parse(review), FENCED, DEFAULTS).verdict == "allow"


def test_a_null_namespace_selector_is_the_policys_own_namespace() -> None:
    rule = {"from": [{"namespaceSelector": None, "podSelector": {}}]}
    assert create(ingress(rule)).verdict == "allow"  # same-namespace pods, not everyone
