"""The reach model agrees with a brute-force NetworkPolicy reference on generated policy sets.

Two laws per verdict (neutralised, fenced, nearly open, selected pods open to everyone):
- with every documented choice applied, the reference computes exactly the model's verdict;
- against the literal semantics the model may only differ on the side that denies (or warns)
  more, and each such difference is explained by a documented choice, named.
The generators build the adversarial shapes on purpose: port ranges split over rules and
policies, selectors that select every pod without being `{}`, mixed and unknown protocols, named
ports, excepts re-added by another block, IPv4-mapped IPv6, addresses that are never peers or
that only some clusters use (multicast, class E: `defaultDeny.peerRanges`), nulls everywhere.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from netpol_reference import MODEL, STRICT, Reference, Relax

from webhook.netpol import (
    DEFAULT_LIMITS,
    DIRECTIONS,
    Direction,
    analyse_policy,
    fence_for,
    opens_selected_to_everyone,
)
from webhook.reach import PEER_RANGES, peer_space

NAME = "kubernetes.io/metadata.name"
ABSENT = object()  # a key left out (None is JSON null)

# The documented choices, by the name the README gives them, and the reference switch for each.
CHOICES: dict[str, str] = {
    "one-family-covers": "one_family",
    "every-pod-is-every-peer": "pods_everyone",
    "all-but-a-few-namespaces": "few_namespaces",
    "empty-labels-stand-for-all-pods": "all_pods",
    "isolation-needs-empty-selector": "isolation_empty",
    "pairwise-pooling": "pairwise",
    "unused-special-ranges": "unused_ranges",
}
PEER_CHOICES = (
    "unused-special-ranges",
    "one-family-covers",
    "every-pod-is-every-peer",
    "all-but-a-few-namespaces",
    "empty-labels-stand-for-all-pods",
)

PROPERTY_SETTINGS = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def documented_choice(
    verdict: Callable[[Relax], bool], model: bool, names: tuple[str, ...]
) -> str | None:
    """The fewest documented choices under which the reference gives the model's verdict."""
    for size in range(1, len(names) + 1):
        for combo in itertools.combinations(names, size):
            if verdict(Relax(**{CHOICES[n]: True for n in combo})) == model:
                return "+".join(combo)
    return None


# --- generators -------------------------------------------------------------------------------


def _object(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not ABSENT}


ALL_PODS = [
    ABSENT,
    None,
    {},
    {"matchLabels": None},
    {"matchLabels": {}, "matchExpressions": None},
    {"matchExpressions": [{"key": "nobody", "operator": "DoesNotExist"}]},
    {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]},
]
SOME_PODS = [
    {"matchLabels": {"app": "web"}},
    {"matchLabels": {"app": "db"}},
    {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]},
    {"matchExpressions": [{"key": "tier", "operator": "Exists"}]},
    {
        "matchExpressions": [
            {"key": "app", "operator": "NotIn", "values": ["db"]},
            {"key": "tier", "operator": "Exists"},
        ]
    },
]
NAMESPACES = [
    ABSENT,
    None,
    {},
    {"matchLabels": {NAME: "kube-system"}},
    {"matchLabels": {NAME: "team"}},
    {"matchExpressions": [{"key": NAME, "operator": "Exists"}]},
    {"matchExpressions": [{"key": NAME, "operator": "NotIn", "values": ["kube-system"]}]},
    {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]},
    {"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]},
    {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}]},
    {"matchLabels": {"team": "a"}},
    {"matchExpressions": [{"key": "team", "operator": "Exists"}]},
]
V4 = [
    "0.0.0.0/0",
    "0.0.0.0/1",
    "128.0.0.0/1",
    "10.0.0.0/8",
    "192.168.0.0/16",
    "255.255.255.255/32",
    "0.0.0.0/16",
    "128.0.0.0/2",
    "192.0.0.0/2",
    "127.0.0.0/8",
    "224.0.0.0/3",
    "240.0.0.0/4",
    "169.254.0.0/16",
]
V6 = [
    "::/0",
    "::/1",
    "8000::/1",
    "2001:db8::/32",
    "::ffff:0:0/96",
    "::ffff:10.0.0.0/104",
    "::ffff:0:0/97",
    "::ffff:128.0.0.0/97",
    "fc00::/7",
    "::fffe:0:0/96",
    "ff00::/8",
    "fe80::/10",
    "::1/128",
]
EXCEPTS = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "255.255.255.255/32",
    "0.0.0.0/2",
    "192.168.0.0/16",
    "::ffff:10.0.0.0/104",
    "2001:db8::/48",
    "fc00::/8",
    "::/1",
    "8000::/2",
    "::ffff:0:0/95",
    "255.255.128.0/17",
    "1.2.3.4/32",
    "2001:db8::/49",
    "127.0.0.0/8",
    "126.0.0.0/8",
    "0.0.0.0/8",
    "224.0.0.0/4",
    "224.0.0.0/3",
    "240.0.0.0/4",
    "169.254.169.254/32",
    "ff00::/8",
    "::1/128",
    "::/128",
    "fe80::/10",
]
PORTS = [
    *(1, 2, 53, 80, 1000, 1001, 1023, 1024, 1025, 32767, 32768),
    *(49150, 49151, 49152, 49153, 64511, 64512, 65534, 65535),
]

pod_selector = st.sampled_from(ALL_PODS * 2 + SOME_PODS)  # all-pods shapes twice as often
ip_block = st.builds(
    lambda cidr, holes: {"ipBlock": _object(cidr=cidr, **{"except": holes})},
    st.sampled_from(V4 + V6),
    st.one_of(st.just(ABSENT), st.none(), st.lists(st.sampled_from(EXCEPTS), max_size=2)),
)
selector_peer = st.builds(
    lambda ns, pods: _object(namespaceSelector=ns, podSelector=pods),
    st.sampled_from(NAMESPACES),
    st.sampled_from([ABSENT, None, {}, ALL_PODS[5], ALL_PODS[6], SOME_PODS[0]]),
)
peer = st.one_of(
    ip_block,
    selector_peer,
    st.sampled_from([None, {}]),
    st.builds(lambda a, b: {**a, **b}, ip_block, selector_peer),  # invalid: read as the union
)
port_entry = st.one_of(
    st.none(),
    st.builds(
        lambda protocol, port, end: _object(protocol=protocol, port=port, endPort=end),
        st.sampled_from([ABSENT, None, "TCP", "UDP", "SCTP", "ICMP"]),
        st.one_of(st.sampled_from([ABSENT, None, "http", "80", "65535"]), st.sampled_from(PORTS)),
        st.one_of(st.sampled_from([ABSENT, None]), st.sampled_from(PORTS)),
    ),
)
peers_field = st.one_of(st.sampled_from([ABSENT, None, []]), st.lists(peer, min_size=1, max_size=3))
ports_field = st.one_of(
    st.sampled_from([ABSENT, None, []]), st.lists(port_entry, min_size=1, max_size=3)
)


def rule(peers_key: str) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.builds(
            lambda peers, ports: _object(**{peers_key: peers, "ports": ports}),
            peers_field,
            ports_field,
        ),
    )


types_field = st.sampled_from([ABSENT, None, [], ["Ingress"], ["Egress"], ["Ingress", "Egress"]])
rules_field = {
    key: st.one_of(
        st.sampled_from([ABSENT, None, []]), st.lists(rule(peers_key), min_size=1, max_size=3)
    )
    for key, peers_key in (("ingress", "from"), ("egress", "to"))
}


def netpol(index: int, spec: dict[str, Any]) -> dict[str, Any]:
    meta = {
        "name": f"p{index}",
        "namespace": "team",
        "uid": f"u{index}",
        "creationTimestamp": f"2026-01-0{index + 1}T00:00:00Z",
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": spec,
    }


policy_spec = st.builds(
    lambda selector, types, ingress, egress: _object(
        podSelector=selector, policyTypes=types, ingress=ingress, egress=egress
    ),
    pod_selector,
    types_field,
    rules_field["ingress"],
    rules_field["egress"],
)
policy_sets = st.lists(policy_spec, min_size=1, max_size=4).map(
    lambda specs: [netpol(i, s) for i, s in enumerate(specs)]
)


@st.composite
def split_ports(draw: st.DrawFn) -> list[dict[str, Any]]:
    """1-65535 cut into ranges spread over rules of up to three all-pods policies, each range
    opened to a peer set that is every peer on its own or only with its neighbours; sometimes a
    range is dropped or a port short."""
    cuts = sorted(
        set(
            draw(st.lists(st.one_of(st.sampled_from(PORTS[1:]), st.integers(2, 65535)), max_size=4))
        )
    )
    bounds = [1, *cuts, 65536]
    ranges = [(bounds[i], bounds[i + 1] - 1) for i in range(len(bounds) - 1)]
    if draw(st.booleans()) and len(ranges) > 1:
        del ranges[draw(st.integers(0, len(ranges) - 1))]
    protocol = draw(st.sampled_from(["TCP", "UDP", "SCTP", ABSENT]))
    everyone = st.sampled_from(
        [
            ABSENT,
            [{"namespaceSelector": {}}],
            [
                {
                    "namespaceSelector": {
                        "matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]
                    },
                    "podSelector": ALL_PODS[6],
                }
            ],
            [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
            [{"ipBlock": {"cidr": "0.0.0.0/1"}}, {"ipBlock": {"cidr": "128.0.0.0/1"}}],
            [
                {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}},
                {"ipBlock": {"cidr": "10.0.0.0/8"}},
            ],
            [{"ipBlock": {"cidr": "0.0.0.0/1"}}],
            [{"ipBlock": {"cidr": "::ffff:0:0/97"}}, {"ipBlock": {"cidr": "128.0.0.0/1"}}],
            [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["255.255.255.255/32"]}}],
            [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["127.0.0.0/8", "0.0.0.0/8"]}}],
            [
                {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["224.0.0.0/3"]}},
                {"ipBlock": {"cidr": "::/0", "except": ["ff00::/8"]}},
            ],
            [{"ipBlock": {"cidr": "::/0", "except": ["::1/128", "::/128"]}}],
            # all of IPv6 but ::ffff:0:0/96, which holds no IPv6 peer: every IPv6 peer
            [
                {"ipBlock": {"cidr": "::/0", "except": ["::ffff:0:0/95"]}},
                {"ipBlock": {"cidr": "::fffe:0:0/96"}},
            ],
            [{"podSelector": {}}],
        ]
    )
    count = draw(st.integers(1, 3))
    specs: list[dict[str, Any]] = [
        {"podSelector": draw(st.sampled_from(ALL_PODS)), "policyTypes": ["Ingress"], "ingress": []}
        for _ in range(count)
    ]
    for start, end in ranges:
        for _ in range(draw(st.integers(1, 2))):  # the same ports, maybe twice with other peers
            entry = _object(protocol=protocol, port=start, endPort=end if end > start else ABSENT)
            target = specs[draw(st.integers(0, count - 1))]
            target["ingress"].append(_object(**{"from": draw(everyone), "ports": [entry]}))
    return [netpol(i, s) for i, s in enumerate(specs)]


ADDRESS_HEAVY = [
    [{"ipBlock": {"cidr": "0.0.0.0/1"}}],
    [{"ipBlock": {"cidr": "128.0.0.0/1"}}],
    [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}],
    [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
    [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["255.255.255.255/32", "1.2.3.4/32"]}}],
    [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["255.255.128.0/17"]}}],
    [{"ipBlock": {"cidr": "255.255.0.0/16"}}],
    [{"ipBlock": {"cidr": "0.0.0.0/2"}}, {"ipBlock": {"cidr": "192.0.0.0/2"}}],
    [{"ipBlock": {"cidr": "64.0.0.0/2", "except": ["64.0.0.0/24"]}}],
    [{"ipBlock": {"cidr": "::/1"}}],
    [{"ipBlock": {"cidr": "8000::/1", "except": ["8000::/49"]}}],
    [{"ipBlock": {"cidr": "::/0", "except": ["2001:db8::/48"]}}],
    [{"ipBlock": {"cidr": "::ffff:0:0/97"}}],
    [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["127.0.0.0/8", "224.0.0.0/4"]}}],
    [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["240.0.0.0/4", "169.254.169.254/32"]}}],
    [{"ipBlock": {"cidr": "224.0.0.0/3"}}],
    [{"ipBlock": {"cidr": "::/0", "except": ["ff00::/8", "::1/128"]}}],
    [{"ipBlock": {"cidr": "ff00::/8"}}],
]


@st.composite
def overlapping_openings(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Address-heavy rules on overlapping port ranges, so that several nearly-full openings are
    open on one segment at once (only an exact union can decide there)."""
    count = draw(st.integers(1, 2))
    specs: list[dict[str, Any]] = [
        {"podSelector": draw(st.sampled_from(ALL_PODS)), "policyTypes": ["Egress"], "egress": []}
        for _ in range(count)
    ]
    for _ in range(draw(st.integers(2, 6))):
        start, end = sorted(draw(st.lists(st.sampled_from(PORTS), min_size=2, max_size=2)))
        port: Any = draw(st.sampled_from([start, str(start)]))  # a digit string is the number
        entry = _object(port=port, endPort=end if end > start else ABSENT)
        ports = draw(
            st.sampled_from([[entry], ABSENT, [entry, {"port": draw(st.sampled_from(PORTS))}]])
        )
        target = specs[draw(st.integers(0, count - 1))]
        target["egress"].append(_object(to=draw(st.sampled_from(ADDRESS_HEAVY)), ports=ports))
    return [netpol(i, s) for i, s in enumerate(specs)]


# --- the laws ---------------------------------------------------------------------------------


def check(policies: list[dict[str, Any]], peer_ranges: tuple[str, ...] = ()) -> list[str]:
    """Assert both laws for every verdict, in a cluster whose network uses `peer_ranges`; return
    the documented choices that explained a gap."""
    limits = dataclasses.replace(DEFAULT_LIMITS, peer_space=peer_space(peer_ranges))
    facts = [analyse_policy(p, limits) for p in policies]
    reference = Reference(policies, "team", peer_ranges)
    explained: list[str] = []

    def against(
        what: str,
        model: bool,
        verdict: Callable[[Relax], bool],
        deny_more: bool,
        names: tuple[str, ...],
    ) -> None:
        assert model == verdict(MODEL), f"{what}: the model is not its documented reading"
        if model == verdict(STRICT):
            return
        assert model == deny_more, f"{what}: the model is more permissive than the semantics"
        name = documented_choice(verdict, model, names)
        assert name is not None, f"{what}: a difference no documented choice explains"
        explained.append(name)
        if currently_in_test_context():
            event(f"{what}: {name}")

    for direction in DIRECTIONS:
        d = direction.value
        fence = fence_for(facts, direction, limits=limits)
        against(
            f"{d} neutralised",
            fence.neutralised,
            lambda r, d=d: reference.neutralised(d, r),
            True,
            PEER_CHOICES,
        )
        against(
            f"{d} fenced",
            fence.fenced,
            lambda r, d=d: reference.fenced(d, r),
            False,
            (*PEER_CHOICES, "isolation-needs-empty-selector"),
        )
        assert bool(fence.nearly_all_by) == reference.nearly_open(d), f"{d} nearly open"
        assert not (fence.nearly_all_by and fence.neutralised)
        for i, subject in enumerate(facts):
            against(
                f"{d} selected {subject.name}",
                opens_selected_to_everyone(subject, facts, direction, limits=limits),
                lambda r, i=i, d=d: reference.selected_open(i, d, r),
                True,
                (*PEER_CHOICES, "pairwise-pooling"),
            )
            assert subject.opens_to_everyone(direction) == (
                direction in subject.types
                and Reference([policies[i]], "team", peer_ranges).judge_alone(d)
            ), f"{d} {subject.name} alone"
    return explained


@PROPERTY_SETTINGS
@given(policy_sets)
def test_generated_policy_sets_agree_with_the_reference(policies: list[dict[str, Any]]) -> None:
    check(policies)


@PROPERTY_SETTINGS
@given(split_ports())
def test_ports_split_over_rules_and_policies_agree_with_the_reference(
    policies: list[dict[str, Any]],
) -> None:
    check(policies)


# --- each documented choice, by name ------------------------------------------------------------

DENY = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def _open(peers: Any, selector: Any = ABSENT, ports: Any = ABSENT) -> dict[str, Any]:
    return _object(
        podSelector=selector,
        policyTypes=["Ingress"],
        ingress=[_object(**{"from": peers, "ports": ports})],
    )


@pytest.mark.parametrize(
    ("spec", "choice"),
    [
        pytest.param(
            _open([{"ipBlock": {"cidr": "0.0.0.0/0"}}]), "one-family-covers", id="all IPv4 only"
        ),
        pytest.param(
            _open([{"ipBlock": {"cidr": "::/0"}}]), "one-family-covers", id="all IPv6 only"
        ),
        pytest.param(
            _open([{"namespaceSelector": {}}]),
            "every-pod-is-every-peer",
            id="every pod, no address",
        ),
        pytest.param(
            _open(
                [
                    {
                        "namespaceSelector": {
                            "matchExpressions": [
                                {"key": "team", "operator": "NotIn", "values": ["a"]}
                            ]
                        }
                    }
                ]
            ),
            "every-pod-is-every-peer+all-but-a-few-namespaces",
            id="NotIn namespaces",
        ),
        pytest.param(
            _open(
                [
                    {
                        "namespaceSelector": {
                            "matchExpressions": [{"key": NAME, "operator": "Exists"}]
                        },
                        "podSelector": ALL_PODS[5],
                    }
                ]
            ),
            "every-pod-is-every-peer+empty-labels-stand-for-all-pods",
            id="DoesNotExist pods in every namespace",
        ),
        pytest.param(
            _open(
                [
                    {
                        "namespaceSelector": {
                            "matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]
                        },
                        "podSelector": ALL_PODS[6],
                    }
                ]
            ),
            "every-pod-is-every-peer+all-but-a-few-namespaces+empty-labels-stand-for-all-pods",
            id="all but a few pods of all but a few namespaces",
        ),
    ],
)
def test_each_peer_choice_explains_its_own_case(spec: dict[str, Any], choice: str) -> None:
    policies = [netpol(0, DENY), netpol(1, spec)]
    reference = Reference(policies, "team")
    fence = fence_for([analyse_policy(p) for p in policies], Direction.INGRESS)
    assert fence.neutralised
    assert not reference.neutralised("Ingress")
    assert (
        documented_choice(lambda r: reference.neutralised("Ingress", r), True, PEER_CHOICES)
        == choice
    )
    assert check(policies)


def test_isolation_by_a_union_of_selectors_is_a_documented_choice() -> None:
    # app In [db] and app NotIn [db] together isolate every pod; the model wants one `{}`.
    web = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db"]}]}
    rest = {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]}
    policies = [
        netpol(0, {"podSelector": web, "policyTypes": ["Ingress"]}),
        netpol(1, {"podSelector": rest, "policyTypes": ["Ingress"]}),
    ]
    reference = Reference(policies, "team")
    assert reference.fenced("Ingress")
    assert not fence_for([analyse_policy(p) for p in policies], Direction.INGRESS).fenced
    assert "isolation-needs-empty-selector" in check(policies)


def test_pooling_selected_policies_pairwise_is_a_documented_choice() -> None:
    # p1 (tier=x) meets p2 (app=web) and p3 (app=db), never both; pairwise pooling joins all.
    low = {"ports": [{"port": 1, "endPort": 32767}]}
    high = {"ports": [{"port": 32768, "endPort": 65535}]}
    specs = [
        {"podSelector": {"matchLabels": {"tier": "x"}}, "policyTypes": ["Ingress"]},
        {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [low]},
        {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [high]},
    ]
    policies = [netpol(i, s) for i, s in enumerate(specs)]
    facts = [analyse_policy(p) for p in policies]
    assert opens_selected_to_everyone(facts[0], facts, Direction.INGRESS)
    assert not Reference(policies, "team").selected_open(0, "Ingress")
    assert "pairwise-pooling" in check(policies)


@pytest.mark.parametrize(
    ("rules", "neutralised"),
    [
        pytest.param(
            [
                {
                    "from": [
                        {"ipBlock": {"cidr": "0.0.0.0/1"}},
                        {"ipBlock": {"cidr": "128.0.0.0/1"}},
                    ],
                    "ports": [{"port": 1, "endPort": 1000}],
                },
                {
                    "from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
                    "ports": [{"port": 1001, "endPort": 65535}],
                },
            ],
            True,
            id="halves on 1-1000, all on 1001-65535",
        ),
        pytest.param(
            [
                {
                    "from": [{"ipBlock": {"cidr": "0.0.0.0/1"}}],
                    "ports": [{"port": 1, "endPort": 1000}],
                },
                {
                    "from": [{"ipBlock": {"cidr": "128.0.0.0/1"}}],
                    "ports": [{"port": 1, "endPort": 65535}],
                },
                {
                    "from": [{"ipBlock": {"cidr": "0.0.0.0/1"}}],
                    "ports": [{"port": 1001, "endPort": 65535}],
                },
            ],
            True,
            id="halves pooled on every segment",
        ),
        pytest.param(
            [
                {
                    "from": [{"ipBlock": {"cidr": "0.0.0.0/1"}}],
                    "ports": [{"port": 1, "endPort": 1000}],
                },
                {
                    "from": [{"ipBlock": {"cidr": "128.0.0.0/1"}}],
                    "ports": [{"port": 1001, "endPort": 65535}],
                },
                {
                    "from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
                    "ports": [{"port": 1, "endPort": 500}],
                },
            ],
            False,
            id="ports and peers pooled separately, not jointly",
        ),
    ],
)
def test_joint_ports_and_peers(rules: list[dict[str, Any]], neutralised: bool) -> None:
    policies = [
        netpol(0, DENY),
        netpol(1, {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": rules}),
    ]
    fence = fence_for([analyse_policy(p) for p in policies], Direction.INGRESS)
    assert fence.neutralised is neutralised
    check(policies)


@PROPERTY_SETTINGS
@given(overlapping_openings())
def test_overlapping_address_openings_agree_with_the_reference(
    policies: list[dict[str, Any]],
) -> None:
    check(policies)


# --- the peer space: what the cluster's network uses ---------------------------------------------

peer_ranges = st.sampled_from([(), ("multicast",), ("classE",), tuple(PEER_RANGES)])


@PROPERTY_SETTINGS
@given(st.one_of(policy_sets, split_ports(), overlapping_openings()), peer_ranges)
def test_every_peer_space_agrees_with_the_reference(
    policies: list[dict[str, Any]], ranges: tuple[str, ...]
) -> None:
    check(policies, ranges)


@pytest.mark.parametrize(
    ("excepts", "ranges", "choice"),
    [
        pytest.param(
            ["224.0.0.0/3"],
            (),
            "unused-special-ranges+one-family-covers",
            id="multicast and class E unused",
        ),
        pytest.param(
            ["240.0.0.0/4"],
            ("multicast",),
            "unused-special-ranges+one-family-covers",
            id="class E unused",
        ),
        pytest.param(["224.0.0.0/3"], ("multicast", "classE"), None, id="both used"),
        pytest.param(
            ["127.0.0.0/8", "0.0.0.0/8"], (), "one-family-covers", id="never peers: no new choice"
        ),
    ],
)
def test_unused_special_ranges_are_a_documented_choice(
    excepts: list[str], ranges: tuple[str, ...], choice: str | None
) -> None:
    everyone_but = [{"ipBlock": {"cidr": "0.0.0.0/0", "except": excepts}}]
    policies = [netpol(0, DENY), netpol(1, _open(everyone_but))]
    limits = dataclasses.replace(DEFAULT_LIMITS, peer_space=peer_space(ranges))
    facts = [analyse_policy(p, limits) for p in policies]
    fence = fence_for(facts, Direction.INGRESS, limits=limits)
    reference = Reference(policies, "team", ranges)
    assert fence.neutralised is (choice is not None)  # None: not every peer, in any reading
    assert not reference.neutralised("Ingress")
    if choice is not None:
        assert (
            documented_choice(lambda r: reference.neutralised("Ingress", r), True, PEER_CHOICES)
            == choice
        )
    check(policies, ranges)


@PROPERTY_SETTINGS
@given(st.one_of(split_ports(), overlapping_openings()), policy_spec, peer_ranges)
def test_opening_more_never_turns_a_near_total_warning_silent(
    policies: list[dict[str, Any]], extra: dict[str, Any], ranges: tuple[str, ...]
) -> None:
    limits = dataclasses.replace(DEFAULT_LIMITS, peer_space=peer_space(ranges))
    before = [analyse_policy(p, limits) for p in policies]
    after = [*before, analyse_policy(netpol(len(policies), extra), limits)]
    for direction in DIRECTIONS:
        old = fence_for(before, direction, limits=limits)
        new = fence_for(after, direction, limits=limits)
        if old.neutralised:
            assert new.neutralised, f"{direction}: more openings, no longer every peer"
        elif old.nearly_all_by:
            assert new.neutralised or new.nearly_all_by, f"{direction}: the warning went silent"
