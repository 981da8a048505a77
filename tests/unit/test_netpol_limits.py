"""Cost bounds of the NetworkPolicy analysis: limits, refusal (fail-closed), size, robustness."""

from __future__ import annotations

import ipaddress
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from objects import netpol

from webhook.netpol import (
    DEFAULT_LIMITS,
    DIRECTIONS,
    Direction,
    Limits,
    PolicySize,
    analyse_policy,
    fence_for,
    opens_selected_to_everyone,
    parse_cidr_sloppy,
)
from webhook.netpol_limits import CONFIG_KEYS
from webhook.netpol_read import cidr_interval

IN, EG = Direction.INGRESS, Direction.EGRESS
RAISED = Limits(**dict.fromkeys(CONFIG_KEYS, 10**9))  # every bound, the peer space as default


def scattered(count: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [str(ipaddress.IPv4Address(rng.randrange(1, 2**32))) + "/32" for _ in range(count)]


def hostile_excepts() -> dict[str, Any]:
    block = {"ipBlock": {"cidr": "0.0.0.0/0", "except": scattered(20_000)}}
    return netpol("hostile", types=["Ingress"], ingress=[{"from": [block]}])


def hostile_rules() -> dict[str, Any]:
    rules = [
        {"from": [{"ipBlock": {"cidr": f"10.{i % 250}.{j}.0/24"}} for j in range(5)]}
        for i in range(8_000)
    ]
    return netpol("hostile", types=["Ingress"], ingress=rules)


def test_config_keys_of_the_limits() -> None:
    assert dict(CONFIG_KEYS) == {
        "max_rules_per_policy": "maxRulesPerPolicy",
        "max_peers_per_rule": "maxPeersPerRule",
        "max_ports_per_rule": "maxPortsPerRule",
        "max_excepts_per_block": "maxExceptsPerBlock",
        "max_entries_per_policy": "maxEntriesPerPolicy",
        "max_policies_per_namespace": "maxPoliciesPerNamespace",
        "max_entries_per_namespace": "maxEntriesPerNamespace",
    }


@pytest.mark.parametrize(
    ("policy", "refused"),
    [
        pytest.param(
            hostile_excepts(),
            "limits.maxExceptsPerBlock is 256; spec.ingress[0].from[0].ipBlock.except has 20000",
            id="20,000 excepts",
        ),
        pytest.param(
            hostile_rules(),
            "limits.maxRulesPerPolicy is 256; spec.ingress and spec.egress have 8000",
            id="8,000 rules",
        ),
        pytest.param(
            netpol(types=["Egress"], egress=[{}, {"to": [{"podSelector": {}}] * 300}]),
            "limits.maxPeersPerRule is 256; spec.egress[1].to has 300",
            id="300 peers",
        ),
        pytest.param(
            netpol(types=["Ingress"], ingress=[{"ports": [{"port": p} for p in range(1, 301)]}]),
            "limits.maxPortsPerRule is 256; spec.ingress[0].ports has 300",
            id="300 ports",
        ),
        pytest.param(
            netpol(
                types=["Ingress"],
                ingress=[
                    {
                        "ports": [{"port": p} for p in range(1, 201)],
                        "from": [{"ipBlock": {"cidr": f"10.0.{i}.0/24"}} for i in range(30)],
                    }
                ],
            ),
            "limits.maxEntriesPerPolicy is 4096; the policy has 6000"
            " (per rule ports x (peers + excepts), plus selector terms)",
            id="200 ports x 30 peers",
        ),
    ],
)
def test_over_a_limit_the_analysis_is_refused_with_a_line_naming_it(
    policy: dict[str, Any], refused: str
) -> None:
    facts = analyse_policy(policy)
    assert facts.refused == refused
    assert facts.name == policy["metadata"]["name"]
    assert facts.uid
    assert facts.reach == {}


def test_a_refused_policy_neutralises_every_direction_of_its_types() -> None:
    refused = analyse_policy(hostile_excepts())  # policyTypes [Ingress]
    deny = analyse_policy(netpol("deny", types=["Ingress", "Egress"]))
    ingress, egress = fence_for([deny, refused], IN), fence_for([deny, refused], EG)
    assert refused.types == {IN}
    assert ingress.refused == ("hostile",)
    assert ingress.neutralised
    assert not ingress.fenced
    assert egress.fenced
    assert egress.refused == ()
    assert refused.opens_to_everyone(IN)
    assert not refused.opens_to_everyone(EG)


def test_a_refused_policy_opens_the_selected_pods_it_meets() -> None:
    refused = analyse_policy(hostile_excepts())
    web = analyse_policy(
        netpol(
            "web",
            selector={"matchLabels": {"app": "web"}},
            types=["Ingress"],
            ingress=[{"ports": [{"port": 80}]}],
        )
    )
    assert opens_selected_to_everyone(web, [web, refused], IN)
    assert not opens_selected_to_everyone(web, [web], IN)


@pytest.mark.parametrize(
    "make", [hostile_excepts, hostile_rules], ids=["20,000 excepts", "8,000 rules"]
)
def test_hostile_policies_are_analysed_when_the_limits_allow_them(make: Any) -> None:
    facts = analyse_policy(make(), RAISED)
    assert facts.refused == ""
    assert not facts.opens_to_everyone(IN)
    fence = fence_for([facts], IN, limits=RAISED)
    assert fence.fenced


def test_twenty_thousand_excepts_leave_out_little_enough_to_be_nearly_all() -> None:
    fence = fence_for([analyse_policy(hostile_excepts(), RAISED)], IN, limits=RAISED)
    assert fence.nearly_all_by == ("hostile",)


def test_the_size_of_a_policy() -> None:
    spec_rules = [
        {
            "from": [
                {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "192.168.0.0/16"]}},
                {"podSelector": {"matchLabels": {"a": "b"}}},
            ],
            "ports": [{"port": 1}, {"port": 2}],
        },
        {},
    ]
    facts = analyse_policy(netpol(types=["Ingress"], ingress=spec_rules))
    # rule 0: 2 ports x (2 peers + 2 excepts) + 1 selector term; rule 1: 1
    assert facts.size == PolicySize(rules=2, peers=2, ports=2, excepts=2, entries=10)


def test_growing_and_shrinking_sizes() -> None:
    small = PolicySize(rules=2, peers=1, ports=1, excepts=0, entries=3)
    assert PolicySize(3, 1, 1, 0, 3).grows(small)
    assert PolicySize(2, 1, 1, 5, 3).grows(small)
    assert not PolicySize(1, 1, 1, 0, 2).grows(small)
    assert not small.grows(small)


def test_more_policies_than_a_namespace_may_have_fail_closed() -> None:
    policies = [
        analyse_policy(netpol(f"p{i}", types=["Ingress", "Egress"]))
        for i in range(DEFAULT_LIMITS.max_policies_per_namespace + 1)
    ]
    for direction in DIRECTIONS:
        fence = fence_for(policies, direction)
        assert (
            fence.over_limit
            == "limits.maxPoliciesPerNamespace is 500; the namespace has 501 NetworkPolicies"
        )
        assert fence.neutralised
        assert not fence.fenced
    assert fence_for(policies[:-1], IN).fenced


def test_more_entries_than_a_namespace_may_pool_fail_closed() -> None:
    big = [
        {
            "ports": [{"port": p} for p in range(1, 101)],
            "from": [{"ipBlock": {"cidr": f"10.0.{i}.0/24"}} for i in range(30)],
        }
    ]
    opened = [analyse_policy(netpol(f"all-{i}", types=["Ingress"], ingress=big)) for i in range(3)]
    selected = [
        analyse_policy(
            netpol(
                f"web-{i}", selector={"matchLabels": {"app": "web"}}, types=["Ingress"], ingress=big
            )
        )
        for i in range(3)
    ]
    deny = analyse_policy(netpol(types=["Ingress", "Egress"]))
    assert opened[0].size.entries == 3000
    assert fence_for([deny, *opened[:2], *selected], IN).fenced  # selected pods are not pooled
    fence = fence_for([deny, *opened], IN)
    assert (
        fence.over_limit
        == "limits.maxEntriesPerNamespace is 8192; the namespace's NetworkPolicies for all pods have 9000"
    )
    assert not fence.fenced
    assert fence_for([deny, *opened], IN, limits=RAISED).fenced


def test_selected_pods_fail_closed_when_the_pool_exceeds_the_namespace_limit() -> None:
    big = [
        {
            "ports": [{"port": p} for p in range(1, 101)],
            "from": [{"ipBlock": {"cidr": f"10.0.{i}.0/24"}} for i in range(30)],
        }
    ]
    web = [
        analyse_policy(
            netpol(
                f"web-{i}", selector={"matchLabels": {"app": "web"}}, types=["Ingress"], ingress=big
            )
        )
        for i in range(3)
    ]
    assert opens_selected_to_everyone(web[0], web, IN)
    assert not opens_selected_to_everyone(web[0], web, IN, limits=RAISED)


# --- robustness ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 70000)
    | st.sampled_from(["", "x", "80", "TCP", "UDP", "0.0.0.0/0", "::/0", "In", "NotIn", "²"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "podSelector",
                    "namespaceSelector",
                    "ipBlock",
                    "cidr",
                    "except",
                    "ports",
                    "port",
                    "endPort",
                    "protocol",
                    "from",
                    "to",
                    "matchLabels",
                    "matchExpressions",
                    "key",
                    "operator",
                    "values",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.dictionaries(
        st.sampled_from(["podSelector", "policyTypes", "ingress", "egress"]), json_values
    )
)
def test_malformed_specs_never_raise(spec: dict[str, Any]) -> None:
    facts = analyse_policy({"metadata": {"name": "m"}, "spec": spec})
    for direction in DIRECTIONS:
        fence_for([facts], direction)
        opens_selected_to_everyone(facts, [facts], direction)


cidr_text = st.one_of(
    st.builds(
        lambda octets, zeros, bits: (
            ".".join("0" * z + str(o) for o, z in zip(octets, zeros, strict=True)) + f"/{bits}"
        ),
        st.lists(st.integers(0, 300), min_size=4, max_size=4),
        st.lists(st.integers(0, 2), min_size=4, max_size=4),
        st.integers(0, 40),
    ),
    st.builds(
        lambda n, bits: f"{ipaddress.IPv6Address(n)}/{bits}",
        st.integers(0, 2**128 - 1),
        st.integers(0, 130),
    ),
    st.builds(
        lambda n, bits: f"{ipaddress.IPv6Address(n).exploded}/{bits}",
        st.integers(0, 2**128 - 1),
        st.integers(0, 130),
    ),
    st.builds(
        lambda n, bits: f"::ffff:{ipaddress.IPv4Address(n)}/{bits}",
        st.integers(0, 2**32 - 1),
        st.integers(90, 128),
    ),
    st.builds(
        lambda n, bits: f"::ffff:{n >> 16:x}:{n & 0xFFFF:x}/{bits}",
        st.integers(0, 2**32 - 1),
        st.integers(90, 128),
    ),
    st.text(alphabet="0123456789abcdef:./²", max_size=20),
)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(cidr_text)
def test_the_fast_cidr_reader_agrees_with_parse_cidr_sloppy(text: str) -> None:
    network = parse_cidr_sloppy(text)
    expected = (
        None
        if network is None
        else (network.version, (int(network.network_address), int(network.broadcast_address)))
    )
    assert cidr_interval(text) == expected
