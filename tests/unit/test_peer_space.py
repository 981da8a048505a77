"""Addresses that can be peers (issue 23): a pool covering every address that can be a peer of a
Pod's traffic is every peer, as a user meets it — denied under `allow-all`, `fence-lost` on an
allowed change, listed by `scan` — and `defaultDeny.peerRanges` says which special ranges the
cluster's network uses. Also the near-total reading's port edges: the dynamic range."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from objects import deny_all, netpol, netpol_review, parse

from webhook.cli import main
from webhook.cluster.state import ClusterState, Resource, namespace_record
from webhook.cluster.static import load_state
from webhook.cluster.view import StaticView, namespace_facts
from webhook.config import parse_settings
from webhook.decide import Decision, decide
from webhook.errors import ConfigError
from webhook.findings.judge import scan
from webhook.netpol import Direction, analyse_policy, fence_for
from webhook.settings import Settings

IN = Direction.INGRESS
FENCE = deny_all()
BOTH = ["Ingress", "Egress"]
USES_BOTH = "defaultDeny: {peerRanges: [multicast, classE]}"


def settings(text: str = "") -> Settings:
    return parse_settings(text, "config.yaml", Path())


def blocks(*specs: tuple[str, list[str]]) -> list[dict[str, Any]]:
    return [{"ipBlock": {"cidr": cidr, "except": holes}} for cidr, holes in specs]


def everyone_but(*specs: tuple[str, list[str]], name: str = "open") -> dict[str, Any]:
    """An all-pods policy open to the given blocks on every port, for Ingress and Egress."""
    peers = blocks(*specs)
    return netpol(name, types=BOTH, ingress=[{"from": peers}], egress=[{"to": peers}])


LOOPBACK_OUT = everyone_but(("0.0.0.0/0", ["127.0.0.0/8"]))
SPECIALS_OUT = everyone_but(("0.0.0.0/0", ["224.0.0.0/3"]), ("::/0", ["ff00::/8"]))


def create(policy: dict[str, Any], config: str = "") -> Decision:
    view = StaticView([namespace_facts("team", [analyse_policy(FENCE)], running_pods=2)])
    return decide(parse(netpol_review("CREATE", new=policy)), view, settings(config))


# --- never a peer, whatever the config -----------------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param(LOOPBACK_OUT, id="0.0.0.0/0 except 127.0.0.0/8"),
        pytest.param(everyone_but(("0.0.0.0/0", ["0.0.0.0/8"])), id="except 0.0.0.0/8"),
        pytest.param(
            everyone_but(("::/0", ["::1/128", "::/128"])), id="::/0 except ::1 and :: (IPv6)"
        ),
    ],
)
def test_excepting_addresses_that_are_never_peers_is_denied(policy: dict[str, Any]) -> None:
    for config in ("", USES_BOTH):
        decision = create(policy, config)
        assert decision.verdict == "deny"
        assert "would neutralise the default-deny" in decision.message


def test_excepting_a_range_of_peers_next_to_loopback_stays_silent() -> None:
    # 126.0.0.0/8 holds 2^24 peers: far more than a near-total opening leaves out.
    decision = create(everyone_but(("0.0.0.0/0", ["126.0.0.0/8"])))
    assert decision.verdict == "allow"
    assert not decision.failed


def test_link_local_stays_a_peer() -> None:
    # Cloud metadata endpoints (169.254.169.254) live there: leaving one out leaves out a peer.
    decision = create(everyone_but(("0.0.0.0/0", ["127.0.0.0/8", "169.254.169.254/32"])))
    assert decision.verdict == "warn"
    assert "all but 1 IPv4 address" in decision.failed[0].message
    assert "nearly neutralises the default-deny" in decision.failed[0].message


# --- multicast and class E: not peers unless the config says the cluster uses them -------------


def test_excepting_multicast_and_class_e_is_denied_by_default() -> None:
    decision = create(SPECIALS_OUT)
    assert decision.verdict == "deny"
    assert "would neutralise the default-deny" in decision.message


@pytest.mark.parametrize(
    ("config", "verdict"),
    [
        pytest.param("defaultDeny: {peerRanges: []}", "deny", id="none used"),
        pytest.param("defaultDeny: {peerRanges: [multicast]}", "allow", id="multicast used"),
        # IPv6 but ff00::/8 is still every IPv6 peer where multicast is not used.
        pytest.param("defaultDeny: {peerRanges: [classE]}", "deny", id="class E used"),
        pytest.param(USES_BOTH, "allow", id="both used"),
    ],
)
def test_peer_ranges_say_which_special_ranges_hold_peers(config: str, verdict: str) -> None:
    # 224.0.0.0/3 is multicast (224/4) and class E (240/4): 2^28 peers each when used.
    assert create(SPECIALS_OUT, config).verdict == verdict


def test_multicast_alone_excepted_is_every_peer_only_where_it_is_not_used() -> None:
    multicast = everyone_but(("0.0.0.0/0", ["224.0.0.0/4"]), ("::/0", ["ff00::/8"]))
    assert create(multicast).verdict == "deny"
    assert create(multicast, "defaultDeny: {peerRanges: [classE]}").verdict == "deny"
    assert create(multicast, "defaultDeny: {peerRanges: [multicast]}").verdict == "allow"


def test_class_e_alone_excepted_is_every_peer_only_where_it_is_not_used() -> None:
    class_e = everyone_but(("0.0.0.0/0", ["240.0.0.0/4"]))
    assert create(class_e).verdict == "deny"
    assert create(class_e, "defaultDeny: {peerRanges: [multicast]}").verdict == "deny"
    assert create(class_e, "defaultDeny: {peerRanges: [classE]}").verdict == "allow"


def test_the_old_near_total_example_is_every_peer_unless_class_e_is_used() -> None:
    # 255.255.255.255 lies in 240.0.0.0/4: not a peer by default, one address short with classE.
    policy = everyone_but(("0.0.0.0/0", ["255.255.255.255/32"]))
    assert create(policy).verdict == "deny"
    decision = create(policy, "defaultDeny: {peerRanges: [classE]}")
    assert decision.verdict == "warn"
    assert "all but 1 IPv4 address" in decision.failed[0].message


def test_editing_the_fence_itself_in_place_is_denied() -> None:
    edited = everyone_but(("0.0.0.0/0", ["127.0.0.0/8"]), name="default-deny")
    view = StaticView([namespace_facts("team", [analyse_policy(FENCE)], running_pods=2)])
    review = netpol_review("UPDATE", new=edited, old=FENCE)
    decision = decide(parse(review), view, settings())
    assert decision.verdict == "deny"


def test_an_allowed_change_to_such_a_pool_is_annotated_fence_lost() -> None:
    decision = create(LOOPBACK_OUT, "defaultDeny: {allowAll: warn}")
    assert decision.verdict == "warn"
    assert decision.response().audit_annotations.get("fence-lost") == "Ingress,Egress"


def test_scan_lists_the_pool_as_neutralising_and_exits_1(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir()
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}
    (folder / "cluster.yaml").write_text(yaml.safe_dump_all([namespace, FENCE, SPECIALS_OUT]))
    view = load_state(folder)
    facts = [f for f in (view.namespace(n) for n in view.names()) if f is not None]
    report = scan(facts, view, settings())
    assert [(p.policy, p.directions) for p in report.neutralising] == [
        ("open", (Direction.INGRESS, Direction.EGRESS))
    ]
    # No workload there: an advisory finding, exit 1 only with --strict.
    assert main(["scan", "--state", str(folder), "--strict"]) == 1
    # Where the cluster uses both ranges, the pool leaves out 2^29 peers: nothing to list.
    config = tmp_path / "kubefence.yaml"
    config.write_text(USES_BOTH + "\n")
    assert main(["scan", "--state", str(folder), "--config", str(config), "--strict"]) == 0


def test_the_informers_state_analyses_in_the_configured_peer_space() -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}
    for config, fenced in (("", False), (USES_BOTH, True)):
        configured = settings(config)
        state = ClusterState(configured.limits)
        state.replace_namespaces([namespace_record(namespace)], "1", configured)
        state.replace_policies([], "1", configured)
        for policy in (FENCE, SPECIALS_OUT):
            state.apply(Resource.NETWORK_POLICIES, "ADDED", policy, configured)
        facts = state.get("team")
        assert facts is not None
        assert facts.fence(IN, False).fenced is fenced, config


def test_peer_ranges_unknown_or_not_a_list_name_the_file_and_field() -> None:
    with pytest.raises(ConfigError) as caught:
        settings("defaultDeny: {peerRanges: [multicast, anycast]}")
    assert str(caught.value).startswith(
        "config.yaml: defaultDeny.peerRanges[1]: must be one of multicast, classE"
    )
    with pytest.raises(ConfigError) as caught:
        settings("defaultDeny: {peerRanges: multicast}")
    assert str(caught.value).startswith("config.yaml: defaultDeny.peerRanges: must be a list")


def test_peer_ranges_change_the_policy_revision() -> None:
    assert settings().revision != settings("defaultDeny: {peerRanges: [multicast]}").revision


# --- the near-total reading at its port edges -----------------------------------------------------


def tcp_udp_sctp(start: int, end: int) -> list[dict[str, Any]]:
    return [{"protocol": p, "port": start, "endPort": end} for p in ("TCP", "UDP", "SCTP")]


@pytest.mark.parametrize(
    ("end", "verdict"),
    [
        pytest.param(64511, "warn", id="1-64511: 1,024 dynamic ports short"),
        pytest.param(64512, "warn", id="1-64512: 1,023 ports short"),
        pytest.param(49151, "warn", id="1-49151: only the dynamic range short"),
        pytest.param(49150, "allow", id="1-49150: 49151 short too, and 16,385 ports"),
    ],
)
def test_an_opening_short_only_of_dynamic_ports_is_near_total(end: int, verdict: str) -> None:
    decision = create(netpol("open", types=["Ingress"], ingress=[{"ports": tcp_udp_sctp(1, end)}]))
    assert decision.verdict == verdict
    if verdict == "warn":
        assert "nearly neutralises the default-deny" in decision.failed[0].message


def test_a_short_port_below_the_dynamic_range_among_dynamic_ones_is_not_near_total() -> None:
    # Every port but 8080 and 49152-65535: 16,385 ports short, one of them a common service port.
    rules = [{"ports": tcp_udp_sctp(1, 8079)}, {"ports": tcp_udp_sctp(8081, 49151)}]
    fence = fence_for([analyse_policy(netpol("open", types=["Ingress"], ingress=rules))], IN)
    assert fence.fenced
    assert fence.nearly_all_by == ()
    # ... and opening 8080 too (more open, never less warned) makes it near-total.
    rules.append({"ports": tcp_udp_sctp(8080, 8080)})
    fence = fence_for([analyse_policy(netpol("open", types=["Ingress"], ingress=rules))], IN)
    assert fence.nearly_all_by == ("open",)
    assert fence.nearly_all == "TCP, UDP, SCTP: every port but 49152-65535 open to every peer"
