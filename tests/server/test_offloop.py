"""NetworkPolicy decisions off the event loop, one namespace at a time: a storm in one namespace
waits behind itself, past its bound it is denied, and every other namespace is answered."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from objects import deny_all, netpol, netpol_review, workload_review

from webhook.cluster.approvals import RecentApprovals
from webhook.cluster.view import StaticView, namespace_facts
from webhook.config import parse_settings
from webhook.netpol import analyse_policy
from webhook.offloop import Busy, OffLoop
from webhook.server import Runtime, build_app


async def test_one_key_runs_one_at_a_time_and_others_pass_it() -> None:
    offloop = OffLoop(workers=2, per_key=1)
    release = threading.Event()
    started: list[str] = []

    def blocking(name: str) -> str:
        started.append(name)
        release.wait(10)
        return name

    first = asyncio.create_task(offloop.run("team", 5, lambda: blocking("team-1")))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(offloop.run("team", 5, lambda: blocking("team-2")))
    other = await offloop.run("other", 5, lambda: "other")  # not queued behind team
    assert other == "other"
    assert started == ["team-1"]  # team-2 waits for team's turn
    assert offloop.waiting == 1
    release.set()
    assert await first == "team-1"
    assert await second == "team-2"
    offloop.close()


async def test_waiting_past_the_bound_is_busy_and_a_gone_caller_keeps_its_turn() -> None:
    offloop = OffLoop(workers=2, per_key=1)
    release = threading.Event()
    holder = asyncio.create_task(offloop.run("team", 5, lambda: release.wait(10)))
    await asyncio.sleep(0.05)
    with pytest.raises(Busy):
        await offloop.run("team", 0.1, lambda: "late")
    assert offloop.busy == 1
    # The caller goes away; its thread still runs, and still holds the namespace's turn.
    holder.cancel()
    with pytest.raises(Busy):
        await offloop.run("team", 0.1, lambda: "still late")
    release.set()
    assert await offloop.run("team", 5, lambda: "next") == "next"
    offloop.close()


@pytest.fixture
def blocked(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """NetworkPolicy decisions of namespace `team` hold their worker until the event is set."""
    release = threading.Event()
    from webhook import server

    real = server.decide

    def slow(review: Any, *args: Any, **kwargs: Any) -> Any:
        if review.namespace == "team" and review.resource.resource == "networkpolicies":
            release.wait(10)
        return real(review, *args, **kwargs)

    monkeypatch.setattr(server, "decide", slow)
    return release


async def post(
    client: TestClient[Any, Any], review: dict[str, Any], query: str = ""
) -> dict[str, Any]:
    async with client.post(f"/validate{query}", json=review) as answer:
        assert answer.status == 200
        body: dict[str, Any] = await answer.json()
        return body["response"]


async def test_a_storm_in_one_namespace_is_denied_past_its_bound_and_others_are_answered(
    aiohttp_client: Callable[..., Any], blocked: threading.Event
) -> None:
    fenced = [analyse_policy(deny_all())]
    other = [analyse_policy(deny_all(namespace="other"))]
    cluster = StaticView([namespace_facts("team", fenced), namespace_facts("other", other)])
    settings = parse_settings("", "config.yaml", Path())
    runtime = Runtime(settings=settings, cluster=cluster)
    client = await aiohttp_client(build_app(runtime))
    opener = netpol("open", types=["Ingress"], ingress=[{"ports": [{"port": 80}]}])
    first = asyncio.create_task(post(client, netpol_review("CREATE", new=opener, dry_run=True)))
    await asyncio.sleep(0.1)
    # Behind it in team's queue, with the API server's budget of 1 s (half of it to wait):
    late = await post(client, netpol_review("CREATE", new=opener, dry_run=True), "?timeout=1s")
    assert late["allowed"] is False
    assert late["status"]["message"] == (
        'kubefence is still judging earlier NetworkPolicy changes of namespace "team" and '
        "could not judge this one in time; retry"
    )
    assert late["auditAnnotations"]["rules"] == "internal-error"
    # Meanwhile another namespace's Pod and NetworkPolicy are answered.
    pod = await post(client, workload_review("Pod", namespace="other"))
    assert pod["allowed"] is True
    elsewhere = netpol("open", "other", types=["Ingress"], ingress=[{"ports": [{"port": 80}]}])
    assert (await post(client, netpol_review("CREATE", new=elsewhere)))["allowed"] is True
    blocked.set()
    assert (await first)["allowed"] is True
    metrics = await (await client.get("/metrics")).text()
    assert "kubefence_analyses_busy_total 1.0" in metrics


def test_a_frozen_namespace_of_approvals_does_not_move_with_later_records() -> None:
    approvals = RecentApprovals()
    fence = analyse_policy(deny_all())
    base = StaticView([namespace_facts("team", [fence], running_pods=3)])
    approvals.record("team", fence, None)  # the fence approved to go
    frozen = approvals.of_namespace("team")
    approvals.record("team", None, analyse_policy(netpol("open", ingress=[{}])))
    approvals.settle("team", None)
    removed = frozen.removals(base).namespace("team")
    added = frozen.additions(base).namespace("team")
    assert removed is not None
    assert added is not None
    assert not removed.policies[0].selects_all  # gone as a fence, as when it was frozen
    assert [p.name for p in added.policies] == ["default-deny"]  # the later opener is not there
    assert frozen.removals(base).namespace("other") is None  # other namespaces: the base's


async def test_the_live_read_gets_what_the_wait_for_its_turn_left_of_the_budget(
    aiohttp_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from webhook import server

    real = server.decide

    def slow(review: Any, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.4)  # a costly pool, or the namespace's turn
        return real(review, *args, **kwargs)

    monkeypatch.setattr(server, "decide", slow)
    fence = deny_all()
    cluster = StaticView([namespace_facts("team", [analyse_policy(fence)], running_pods=3)])
    timeouts: list[float] = []

    class Confirmer:
        async def confirm(
            self,
            namespace: str,
            timeout: float,
            *,
            not_before: float | None = None,
            caller: str = "",
        ) -> StaticView:
            timeouts.append(timeout)
            return cluster

    settings = parse_settings("", "config.yaml", Path())
    runtime = Runtime(settings=settings, cluster=cluster, confirmer=Confirmer())
    client = await aiohttp_client(build_app(runtime))
    # The last fence's DELETE is denied and re-checked live; the API server gave 2 s (1 s of it
    # to wait in), and 0.4 s went before the read.
    answer = await post(client, netpol_review("DELETE", old=fence), "?timeout=2s")
    assert answer["allowed"] is False
    (timeout,) = timeouts
    assert 0.1 <= timeout <= 0.6
