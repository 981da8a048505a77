"""NetworkPolicy analysis: API defaulting, what fences a namespace, what neutralises a fence."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from objects import netpol

from webhook.cluster.view import namespace_facts
from webhook.netpol import (
    Direction,
    analyse_policy,
    effective_policy_types,
    fence_for,
    fences_by_definition,
    opens_selected_to_everyone,
    parse_cidr_sloppy,
)

IN, EG = Direction.INGRESS, Direction.EGRESS


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, {IN}),
        ({"egress": []}, {IN}),
        ({"egress": [{}]}, {IN, EG}),
        ({"ingress": [{}], "egress": [{"to": []}]}, {IN, EG}),
        ({"policyTypes": []}, {IN}),  # empty is defaulted like absent
        ({"policyTypes": ["Egress"]}, {EG}),
        ({"policyTypes": ["Egress"], "ingress": [{}]}, {EG}),
        ({"policyTypes": ["Ingress", "Egress"]}, {IN, EG}),
    ],
)
def test_policy_types_are_defaulted_as_the_api_server_does(
    spec: dict[str, Any], expected: set[Direction]
) -> None:
    assert effective_policy_types(spec) == expected


@pytest.mark.parametrize(
    ("selector", "selects_all"),
    [
        (None, True),
        ({}, True),
        ({"matchLabels": {}}, True),
        ({"matchExpressions": []}, True),
        ({"matchLabels": {}, "matchExpressions": []}, True),
        ({"matchLabels": {"app": "web"}}, False),
        ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, False),
    ],
)
def test_empty_pod_selector(selector: dict[str, Any] | None, selects_all: bool) -> None:
    policy = netpol(types=["Ingress"])
    if selector is None:
        del policy["spec"]["podSelector"]
    else:
        policy["spec"]["podSelector"] = selector
    assert analyse_policy(policy).selects_all is selects_all


def missing(*policies: dict[str, Any], strict: bool = False) -> tuple[Direction, ...]:
    """The unfenced directions, through the namespace facts the webhook decides on."""
    facts = namespace_facts("team", [analyse_policy(p) for p in policies])
    return tuple(d for d in (IN, EG) if not facts.fence(d, strict).fenced)


DNS_ONLY = [
    {
        "to": [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                },
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }
        ],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
]


@pytest.mark.parametrize(
    ("policies", "unfenced"),
    [
        pytest.param([], (IN, EG), id="no policy"),
        pytest.param([netpol(types=["Ingress", "Egress"])], (), id="deny all"),
        pytest.param([netpol()], (EG,), id="policyTypes absent: Ingress only"),
        pytest.param(
            [netpol(egress=[])], (EG,), id="absent types, empty egress list: Ingress only"
        ),
        pytest.param(
            [netpol(types=["Ingress"]), netpol("e", types=["Egress"])], (), id="one per direction"
        ),
        pytest.param(
            [netpol(types=["Ingress", "Egress"], egress=DNS_ONLY)],
            (),
            id="deny all but DNS fences Egress",
        ),
        pytest.param([netpol(egress=DNS_ONLY)], (), id="absent types + DNS egress: both isolated"),
        pytest.param(
            [
                netpol(
                    types=["Ingress"],
                    ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "lb"}}}]}],
                ),
                netpol("e", types=["Egress"]),
            ],
            (),
            id="isolating policy with narrow from rules fences",
        ),
        pytest.param(
            [netpol(types=["Ingress", "Egress"], selector={"matchLabels": {"app": "web"}})],
            (IN, EG),
            id="non-empty selector isolates only some pods",
        ),
    ],
)
def test_fenced_is_networkpolicy_default_deny(
    policies: list[dict[str, Any]], unfenced: tuple[Direction, ...]
) -> None:
    assert missing(*policies) == unfenced


def test_strict_definition_requires_a_policy_with_no_rule_for_the_direction() -> None:
    dns = netpol(types=["Ingress", "Egress"], egress=DNS_ONLY)
    assert missing(dns, strict=True) == (EG,)
    assert missing(dns, netpol("pure", types=["Egress"]), strict=True) == ()


EVERYONE_PEERS = [
    pytest.param([{}], id="rule without peers"),
    pytest.param([{"from": []}], id="empty from list"),
    pytest.param([{"from": [{"namespaceSelector": {}}]}], id="namespaceSelector {}"),
    pytest.param(
        [{"from": [{"namespaceSelector": {}, "podSelector": {}}]}],
        id="namespaceSelector {} podSelector {}",
    ),
    pytest.param(
        [
            {
                "from": [
                    {
                        "namespaceSelector": {
                            "matchExpressions": [
                                {"key": "team", "operator": "NotIn", "values": ["x"]}
                            ]
                        }
                    }
                ]
            }
        ],
        id="NotIn: all but a few",
    ),
    pytest.param(
        [
            {
                "from": [
                    {
                        "namespaceSelector": {
                            "matchExpressions": [{"key": "quarantine", "operator": "DoesNotExist"}]
                        }
                    }
                ]
            }
        ],
        id="DoesNotExist",
    ),
    pytest.param(
        [
            {
                "from": [
                    {
                        "namespaceSelector": {
                            "matchExpressions": [
                                {"key": "kubernetes.io/metadata.name", "operator": "Exists"}
                            ]
                        }
                    }
                ]
            }
        ],
        id="metadata.name Exists",
    ),
    pytest.param([{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}], id="0.0.0.0/0"),
    pytest.param([{"from": [{"ipBlock": {"cidr": "::/0"}}]}], id="::/0"),
    pytest.param([{"from": [{"ipBlock": {"cidr": "::0/0"}}]}], id="::0/0"),
    pytest.param([{"from": [{"ipBlock": {"cidr": "10.1.2.3/0"}}]}], id="host bits set (sloppy)"),
    pytest.param(
        [{"from": [{"ipBlock": {"cidr": "::ffff:0.0.0.0/96"}}]}],
        id="IPv4-mapped prefix covers IPv4",
    ),
    pytest.param(
        [{"from": [{"ipBlock": {"cidr": "0.0.0.0/1"}}, {"ipBlock": {"cidr": "128.0.0.0/1"}}]}],
        id="two halves",
    ),
    pytest.param(
        [
            {
                "from": [
                    {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}},
                    {"ipBlock": {"cidr": "10.0.0.0/8"}},
                ]
            }
        ],
        id="except filled by another block",
    ),
    pytest.param([{"ports": [{"protocol": "UDP"}]}], id="every UDP port"),
    pytest.param([{"ports": [{"protocol": "SCTP"}]}], id="every SCTP port"),
    pytest.param([{"ports": [{"port": 1, "endPort": 65535}]}], id="1-65535 range"),
    pytest.param(
        [{"ports": [{"port": 1, "endPort": 30000}, {"port": 30001, "endPort": 65535}]}],
        id="ranges that join",
    ),
    pytest.param([{"ports": []}], id="empty ports list"),
]


@pytest.mark.parametrize("rules", EVERYONE_PEERS)
def test_neutralised_fence_is_not_a_fence(rules: list[dict[str, Any]]) -> None:
    opener = netpol("open", types=["Ingress"], ingress=rules)
    deny = netpol(types=["Ingress", "Egress"])
    fence = fence_for([analyse_policy(deny), analyse_policy(opener)], IN)
    assert fence.neutralised_by == ("open",)
    assert not fence.fenced
    assert missing(deny, opener) == (IN,)


RESTRICTED = [
    pytest.param([{"ports": [{"port": 443}]}], id="one port"),
    pytest.param([{"ports": [{"port": "https"}]}], id="named port"),
    pytest.param([{"ports": [{"port": 1, "endPort": 65534}]}], id="one port short"),
    pytest.param(
        [
            {
                "ports": [
                    {"protocol": "UDP", "port": 1, "endPort": 40000},
                    {"protocol": "TCP", "port": 40001, "endPort": 65535},
                ]
            }
        ],
        id="split across protocols",
    ),
    pytest.param([{"from": [{"podSelector": {}}]}], id="same-namespace pods"),
    pytest.param(
        [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"a": "b"}}}]}],
        id="some pods everywhere",
    ),
    pytest.param(
        [{"from": [{"namespaceSelector": {"matchLabels": {"team": "x"}}}]}],
        id="matchLabels namespace",
    ),
    pytest.param(
        [
            {
                "from": [
                    {
                        "namespaceSelector": {
                            "matchExpressions": [{"key": "team", "operator": "In", "values": ["x"]}]
                        }
                    }
                ]
            }
        ],
        id="In namespace",
    ),
    pytest.param(
        [
            {
                "from": [
                    {
                        "namespaceSelector": {
                            "matchExpressions": [{"key": "team", "operator": "Exists"}]
                        }
                    }
                ]
            }
        ],
        id="Exists on another key",
    ),
    pytest.param(
        [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}],
        id="except leaves a hole",
    ),
    pytest.param([{"from": [{"ipBlock": {"cidr": "0.0.0.0/1"}}]}], id="half the space"),
    pytest.param([{"from": [{"ipBlock": {"cidr": "not-a-cidr"}}]}], id="unparseable CIDR"),
]


@pytest.mark.parametrize("rules", RESTRICTED)
def test_restricted_rules_keep_the_fence(rules: list[dict[str, Any]]) -> None:
    allow = netpol("allow", types=["Ingress"], ingress=rules)
    assert missing(netpol(types=["Ingress", "Egress"]), allow) == ()


def test_halves_in_two_policies_neutralise_together() -> None:
    low = netpol("low", types=["Egress"], egress=[{"to": [{"ipBlock": {"cidr": "0.0.0.0/1"}}]}])
    high = netpol("high", types=["Egress"], egress=[{"to": [{"ipBlock": {"cidr": "128.0.0.0/1"}}]}])
    deny = netpol(types=["Ingress", "Egress"])
    assert missing(deny, low) == ()
    assert missing(deny, low, high) == (EG,)
    assert fence_for([analyse_policy(p) for p in (deny, low, high)], EG).neutralised_by == (
        "high",
        "low",
    )


def test_rules_of_a_direction_not_in_policy_types_are_ignored() -> None:
    # policyTypes [Egress] with ingress rules: the ingress rules have no effect, open nothing.
    odd = netpol("odd", types=["Egress"], ingress=[{}])
    assert missing(netpol(types=["Ingress", "Egress"]), odd) == ()


def test_selected_pods_opened_to_everyone_do_not_neutralise_the_namespace() -> None:
    web = netpol("web", selector={"matchLabels": {"app": "web"}}, types=["Ingress"], ingress=[{}])
    assert missing(netpol(types=["Ingress", "Egress"]), web) == ()
    assert analyse_policy(web).opens_to_everyone(IN)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("010.000.0.0/8", "10.0.0.0/8"),  # leading zeros are decimal
        ("10.1.2.3/8", "10.0.0.0/8"),  # host bits ignored
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
        ("::ffff:010.0.0.0/104", "10.0.0.0/8"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("::0/0", "::/0"),
        ("300.0.0.0/8", None),
        ("10.0.0.0", None),
        ("10.0.0.0/33", None),
        (42, None),
    ],
)
def test_cidrs_are_parsed_sloppily_like_the_api_server(raw: object, expected: str | None) -> None:
    network = parse_cidr_sloppy(raw)
    assert (str(network) if network else None) == expected


def test_malformed_policies_never_raise_and_open_nothing() -> None:
    for spec in (
        {"podSelector": "x"},
        {"ingress": "x"},
        {"ingress": [1]},
        {"egress": {"to": 1}},
        {"policyTypes": ["Bogus"]},
    ):
        facts = analyse_policy({"metadata": {"name": "m"}, "spec": spec})
        assert not facts.opens_to_everyone(IN)


@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)), max_size=6))
def test_ip_blocks_open_everything_exactly_when_they_collapse_to_slash_zero(
    blocks: list[tuple[int, int]],
) -> None:
    nets = [ipaddress.IPv4Network((addr, plen), strict=False) for addr, plen in blocks]
    peers = [{"ipBlock": {"cidr": str(n)}} for n in nets] or [{"podSelector": {}}]
    facts = analyse_policy(netpol(types=["Ingress"], ingress=[{"from": peers}]))
    expected = list(ipaddress.collapse_addresses(nets)) == [ipaddress.IPv4Network("0.0.0.0/0")]
    assert facts.opens_to_everyone(IN) is expected


# --- issue 16: reach as sets, pooled, joint, bounded -----------------------------------------

DENY = netpol(types=["Ingress", "Egress"])
NOBODY_KEY = {"matchExpressions": [{"key": "some-key-nobody-has", "operator": "DoesNotExist"}]}
NOT_DB = {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]}


def ingress_fence(*policies: dict[str, Any]) -> Any:
    return fence_for([analyse_policy(p) for p in (DENY, *policies)], IN)


def ports(start: int, end: int, protocol: str = "TCP") -> list[dict[str, Any]]:
    return [{"protocol": protocol, "port": start, "endPort": end}]


def test_ports_pooled_across_rules_neutralise() -> None:
    split = netpol(
        "split",
        types=["Ingress"],
        ingress=[{"ports": ports(1, 32767)}, {"ports": ports(32768, 65535)}],
    )
    assert ingress_fence(split).neutralised_by == ("split",)
    assert missing(DENY, split) == (IN,)


def test_ports_pooled_across_policies_neutralise() -> None:
    low = netpol("low", types=["Ingress"], ingress=[{"ports": ports(1, 32767)}])
    high = netpol("high", types=["Ingress"], ingress=[{"ports": ports(32768, 65535)}])
    assert missing(DENY, low) == ()
    assert missing(DENY, high) == ()
    assert missing(DENY, low, high) == (IN,)
    assert ingress_fence(low, high).neutralised_by == ("high", "low")


def test_ports_pooled_across_protocols_do_not_neutralise() -> None:
    tcp = netpol("tcp", types=["Ingress"], ingress=[{"ports": ports(1, 32767)}])
    udp = netpol("udp", types=["Ingress"], ingress=[{"ports": ports(32768, 65535, "UDP")}])
    assert missing(DENY, tcp, udp) == ()


@pytest.mark.parametrize("selector", [NOBODY_KEY, NOT_DB], ids=["DoesNotExist", "NotIn"])
def test_a_selector_the_empty_label_set_satisfies_opens_every_pod(selector: dict[str, Any]) -> None:
    opener = netpol("open", selector=selector, types=["Ingress"], ingress=[{}])
    facts = analyse_policy(opener)
    assert facts.opens_all_pods
    assert not facts.selects_all
    assert ingress_fence(opener).neutralised_by == ("open",)


@pytest.mark.parametrize("selector", [NOBODY_KEY, NOT_DB], ids=["DoesNotExist", "NotIn"])
def test_a_deny_all_with_such_a_selector_fences_nothing(selector: dict[str, Any]) -> None:
    # Whoever creates a pod chooses its labels: `app NotIn [db]` leaves `app=db` pods unisolated.
    assert missing(netpol(selector=selector, types=["Ingress", "Egress"])) == (IN, EG)


@pytest.mark.parametrize(
    ("selector", "opens_all"),
    [
        (None, True),
        ({}, True),
        (NOBODY_KEY, True),
        (NOT_DB, True),
        ({"matchLabels": {"app": "web"}}, False),
        ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, False),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}, False),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": []}]}, False),  # invalid
        ("x", False),
    ],
)
def test_the_openings_reading_of_a_pod_selector(selector: Any, opens_all: bool) -> None:
    policy = netpol(types=["Ingress"])
    policy["spec"]["podSelector"] = selector
    assert analyse_policy(policy).opens_all_pods is opens_all


@pytest.mark.parametrize(
    "peer",
    [
        pytest.param({"namespaceSelector": {}, "podSelector": NOBODY_KEY}, id="DoesNotExist pods"),
        pytest.param({"namespaceSelector": {}, "podSelector": NOT_DB}, id="NotIn pods"),
        pytest.param({"namespaceSelector": {}, "podSelector": None}, id="podSelector null"),
        pytest.param(
            {
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "NotIn",
                            "values": ["kube-system"],
                        }
                    ]
                }
            },
            id="all namespaces but one",
        ),
    ],
)
def test_peers_that_count_as_every_peer(peer: dict[str, Any]) -> None:
    opener = netpol("open", types=["Ingress"], ingress=[{"from": [peer]}])
    assert ingress_fence(opener).neutralised_by == ("open",)


@pytest.mark.parametrize(
    "peer",
    [
        pytest.param({"namespaceSelector": None}, id="namespaceSelector null: own namespace"),
        pytest.param(
            {"namespaceSelector": None, "podSelector": {}}, id="null ns, every pod: own namespace"
        ),
        pytest.param({"podSelector": NOBODY_KEY}, id="all pods of the own namespace"),
        pytest.param(
            {
                "namespaceSelector": {
                    "matchExpressions": [
                        {"key": "kubernetes.io/metadata.name", "operator": "DoesNotExist"}
                    ]
                }
            },
            id="no namespace",
        ),
        pytest.param(None, id="null peer: the empty peer, matches nothing"),
        pytest.param({}, id="empty peer"),
    ],
)
def test_peers_that_do_not(peer: Any) -> None:
    opener = netpol("open", types=["Ingress"], ingress=[{"from": [peer]}])
    assert not ingress_fence(opener).neutralised
    assert missing(DENY, opener) == ()


@pytest.mark.parametrize(
    "rule",
    [
        pytest.param({"from": None}, id="from null"),
        pytest.param({"ports": None}, id="ports null"),
        pytest.param({"ports": [None]}, id="a null port entry: every TCP port"),
        pytest.param({"ports": [{"protocol": None, "port": None}]}, id="protocol and port null"),
        pytest.param(
            {"ports": [{"port": 1, "endPort": None}, {"port": 2, "endPort": 65535}]},
            id="endPort null",
        ),
        pytest.param(
            {"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": None}}]}, id="except null"
        ),
        pytest.param(None, id="a null rule is {}"),
    ],
)
def test_null_is_absent(rule: Any) -> None:
    opener = netpol("open", types=["Ingress"], ingress=[rule])
    assert ingress_fence(opener).neutralised_by == ("open",)


def test_null_policy_types_are_defaulted() -> None:
    facts = analyse_policy(
        {"metadata": {"name": "n"}, "spec": {"policyTypes": None, "egress": [{}]}}
    )
    assert facts.types == {IN, EG}


@pytest.mark.parametrize(
    ("rules", "left_out"),
    [
        pytest.param(
            [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["192.0.2.1/32"]}}]}],
            "TCP, UDP, SCTP: every port open to all but 1 IPv4 address",
            id="0.0.0.0/0 except one address",
        ),
        pytest.param(
            [{"ports": ports(1, 65534)}],
            "TCP: every port but 65535 open to every peer",
            id="ports 1-65534",
        ),
        pytest.param(
            [{"ports": ports(1, 64511)}, {"ports": ports(64513, 65535)}],
            "TCP: every port but 64512 open to every peer",
            id="one port left between two rules",
        ),
        pytest.param(
            [{"ports": ports(1, 64511)}],
            "TCP: every port but 64512-65535 open to every peer",
            id="1,024 dynamic ports short",
        ),
        pytest.param(
            [{"ports": ports(1024, 65535)}],
            "TCP: every port but 1-1023 open to every peer",
            id="1,023 ports short",
        ),
        pytest.param(
            [
                {
                    "from": [{"ipBlock": {"cidr": "::/0", "except": ["2001:db8::/49"]}}],
                    "ports": ports(1, 65535, "UDP"),
                }
            ],
            "UDP: every port open to all but about 2^79 IPv6 addresses",
            id="all IPv6 but less than a /48",
        ),
    ],
)
def test_near_total_openings_are_reported_but_keep_the_fence(
    rules: list[Any], left_out: str
) -> None:
    opener = netpol("open", types=["Ingress"], ingress=rules)
    fence = ingress_fence(opener)
    assert fence.fenced
    assert fence.nearly_all_by == ("open",)
    assert fence.nearly_all == left_out


@pytest.mark.parametrize(
    "rules",
    [
        pytest.param(
            [
                {
                    "from": [
                        {
                            "ipBlock": {
                                "cidr": "0.0.0.0/0",
                                "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
                            }
                        }
                    ]
                }
            ],
            id="the internet but the private ranges",
        ),
        pytest.param([{"ports": ports(1025, 65535)}], id="1,024 ports short"),
        pytest.param([{"ports": ports(1, 49150)}], id="the dynamic range and 49151 short"),
        pytest.param(
            [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.10.0.0/16"]}}]}],
            id="a /16 left out",
        ),
        pytest.param(
            [{"from": [{"ipBlock": {"cidr": "::/0", "except": ["2001:db8::/48"]}}]}],
            id="a /48 left out",
        ),
    ],
)
def test_openings_that_leave_out_enough_stay_silent(rules: list[Any]) -> None:
    fence = ingress_fence(netpol("open", types=["Ingress"], ingress=rules))
    assert fence.fenced
    assert fence.nearly_all_by == ()


def test_editing_the_oldest_fence_into_a_near_total_opening_is_reported() -> None:
    edited = netpol(types=["Ingress", "Egress"], ingress=[{"ports": ports(1, 65534)}])
    fence = fence_for([analyse_policy(edited)], IN)
    assert fence.fencing == ("default-deny",)
    assert fence.nearly_all_by == ("default-deny",)


def test_excepts_re_added_by_another_policy_neutralise() -> None:
    holed = netpol(
        "holed",
        types=["Egress"],
        egress=[{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}],
    )
    filler = netpol(
        "filler", types=["Egress"], egress=[{"to": [{"ipBlock": {"cidr": "::ffff:10.0.0.0/104"}}]}]
    )
    assert missing(DENY, holed) == ()
    assert missing(DENY, holed, filler) == (EG,)


def test_selected_pods_open_to_everyone_pool_with_the_policies_they_meet() -> None:
    web = analyse_policy(
        netpol(
            "web",
            selector={"matchLabels": {"app": "web"}},
            types=["Ingress"],
            ingress=[{"ports": ports(1, 32767)}],
        )
    )
    rest = analyse_policy(
        netpol("rest", selector=NOT_DB, types=["Ingress"], ingress=[{"ports": ports(32768, 65535)}])
    )
    db = analyse_policy(
        netpol(
            "db",
            selector={"matchLabels": {"app": "db"}},
            types=["Ingress"],
            ingress=[{"ports": ports(32768, 65535)}],
        )
    )
    assert not web.opens_to_everyone(IN)
    assert opens_selected_to_everyone(web, [web, rest], IN)  # app=web pods meet `app NotIn [db]`
    assert not opens_selected_to_everyone(web, [web, db], IN)  # no pod is both web and db
    assert not opens_selected_to_everyone(web, [web, rest], EG)


def test_both_definitions_at_once_are_fence_for_under_each() -> None:
    policies = [
        analyse_policy(p)
        for p in (
            netpol(types=["Ingress", "Egress"], egress=DNS_ONLY),
            netpol("open", types=["Ingress"], ingress=[{"ports": ports(1, 65534)}]),
        )
    ]
    for direction in (IN, EG):
        both = fences_by_definition(policies, direction)
        assert both[False] == fence_for(policies, direction)
        assert both[True] == fence_for(policies, direction, strict=True)
    assert fences_by_definition(policies, EG)[False].fenced
    assert not fences_by_definition(policies, EG)[True].fenced
