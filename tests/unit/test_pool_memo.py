"""A namespace's pooled verdict is computed once per policy set and shared by every request,
keyed on what it is a function of (the specs), never on what a forged review chooses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from objects import deny_all, netpol, netpol_review, parse

from webhook import netpol as netpol_module
from webhook.cluster.view import StaticView, namespace_facts
from webhook.config import parse_settings
from webhook.decide import decide
from webhook.netpol import Direction, analyse_policy, fence_for
from webhook.rules import fence_guard


def opener(name: str, cidr: str, port: int | None, **meta: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"from": [{"ipBlock": {"cidr": cidr}}]}
    if port is not None:
        rule["ports"] = [{"port": port}]
    policy = netpol(name, types=["Ingress"], ingress=[rule])
    policy["metadata"].update(meta)
    return policy


@pytest.fixture
def sweeps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The joint sweeps run (one per protocol of a pool of two or more openers)."""
    calls: list[str] = []
    real: Callable[..., Any] = netpol_module._joint

    def counting(reaches: Any, protocol: str, space: Any) -> Any:
        calls.append(protocol)
        return real(reaches, protocol, space)

    monkeypatch.setattr(netpol_module, "_joint", counting)
    netpol_module._POOLS.clear()
    return calls


def test_the_same_policy_set_is_swept_once_whatever_its_uids_and_versions(
    sweeps: list[str],
) -> None:
    a = opener("a", "10.0.0.0/8", 80, uid="u1", resourceVersion="1")
    b = opener("b", "0.0.0.0/1", 443, uid="u2", resourceVersion="2")
    first = fence_for([analyse_policy(a), analyse_policy(b)], Direction.INGRESS)
    assert len(sweeps) == 1
    # A forged review names other uids and versions (a CREATE names none): same specs, no sweep.
    forged = [
        analyse_policy(opener("a", "10.0.0.0/8", 80, uid="x", resourceVersion="99")),
        analyse_policy(opener("b", "0.0.0.0/1", 443)),
    ]
    assert fence_for(list(reversed(forged)), Direction.INGRESS) == first
    assert len(sweeps) == 1
    # One port more is another spec: swept anew, and judged as what it is.
    wider = analyse_policy(opener("b", "128.0.0.0/1", 443))
    fence_for([analyse_policy(a), analyse_policy(b), wider], Direction.INGRESS)
    assert len(sweeps) == 2


def test_a_remembered_verdict_is_the_one_computed_afresh(sweeps: list[str]) -> None:
    halves = [
        analyse_policy(opener("low", "0.0.0.0/1", None)),
        analyse_policy(opener("high", "128.0.0.0/1", None)),
        analyse_policy(deny_all()),
    ]
    remembered = fence_for(halves, Direction.INGRESS)
    netpol_module._POOLS.clear()
    assert fence_for(halves, Direction.INGRESS) == remembered
    assert remembered.neutralised  # 0.0.0.0/0 on every port, pooled over two policies
    assert remembered.openers == ("high", "low")


def test_a_spec_without_a_canonical_digest_is_judged_every_time(sweeps: list[str]) -> None:
    odd = opener("odd", "10.0.0.0/8", 80)
    odd["spec"]["x-unknown"] = 2**70  # an integer past 64 bits: no canonical encoding
    policies = [analyse_policy(odd), analyse_policy(opener("b", "0.0.0.0/1", 80))]
    assert policies[0].spec_digest == b""
    fence_for(policies, Direction.INGRESS)
    fence_for(policies, Direction.INGRESS)
    assert len(sweeps) == 2


def test_the_limits_are_part_of_the_key(sweeps: list[str]) -> None:
    text = "limits: {maxEntriesPerNamespace: 9000}"
    raised = parse_settings(text, "config.yaml", Path()).limits
    policies = [
        analyse_policy(opener("a", "10.0.0.0/8", 80)),
        analyse_policy(opener("b", "0.0.0.0/1", 80)),
    ]
    fence_for(policies, Direction.INGRESS)
    fence_for(policies, Direction.INGRESS, limits=raised)
    assert len(sweeps) == 2


def test_a_dry_run_pools_nothing_for_the_annotation_it_never_carries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    real = fence_guard._lost

    def counting(*args: Any) -> Any:
        calls.append("lost")
        return real(*args)

    monkeypatch.setattr(fence_guard, "_lost", counting)
    fence = deny_all()
    view = StaticView([namespace_facts("team", [analyse_policy(fence)], running_pods=0)])
    settings = parse_settings("", "config.yaml", Path())
    dry = decide(parse(netpol_review("DELETE", old=fence, dry_run=True)), view, settings)
    assert dry.verdict == "allow"  # teardown: no Pods
    assert "fence-lost" not in dry.annotations
    assert calls == []
    real_delete = decide(parse(netpol_review("DELETE", old=fence)), view, settings)
    assert real_delete.annotations["fence-lost"] == "Ingress,Egress"
    assert calls == ["lost"]


def test_a_create_pools_only_the_namespace_after_it(sweeps: list[str]) -> None:
    """The pool before a CREATE is the namespace's own: its fences were computed when it changed
    (even with the memo emptied since), and allow-all and `fence-lost` share the pool after."""
    openers = [opener("a", "10.0.0.0/8", None), opener("b", "11.0.0.0/8", None), deny_all()]
    view = StaticView([namespace_facts("team", [analyse_policy(p) for p in openers])])
    netpol_module._POOLS.clear()
    sweeps.clear()
    settings = parse_settings("", "config.yaml", Path())
    third = opener("c", "12.0.0.0/8", None)
    decision = decide(parse(netpol_review("CREATE", new=third)), view, settings)
    assert decision.verdict == "allow"
    assert sweeps == ["TCP", "UDP", "SCTP"]  # one pool (each protocol): the namespace with "c"
