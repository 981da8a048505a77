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


class LiveRead:
    """A confirmer whose live read, after `delay`, shows `view`; it keeps the timeouts asked."""

    def __init__(self, view: StaticView, delay: float = 0.0) -> None:
        self.view = view
        self.delay = delay
        self.timeouts: list[float] = []

    async def confirm(
        self, namespace: str, timeout: float, *, not_before: float | None = None, caller: str = ""
    ) -> StaticView:
        self.timeouts.append(timeout)
        await asyncio.sleep(self.delay)
        return self.view


async def run(offloop: OffLoop, key: str, wait: float, work: Any, caller: str = "api") -> Any:
    async with offloop.turn(key, caller, wait) as turn:
        return await turn.run(work)


async def test_one_key_runs_one_at_a_time_and_others_pass_it() -> None:
    offloop = OffLoop(workers=2, per_key=1)
    release = threading.Event()
    started: list[str] = []

    def blocking(name: str) -> str:
        started.append(name)
        release.wait(10)
        return name

    first = asyncio.create_task(run(offloop, "team", 5, lambda: blocking("team-1")))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(run(offloop, "team", 5, lambda: blocking("team-2")))
    other = await run(offloop, "other", 5, lambda: "other")  # not queued behind team
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
    holder = asyncio.create_task(run(offloop, "team", 5, lambda: release.wait(10)))
    await asyncio.sleep(0.05)
    with pytest.raises(Busy):
        await run(offloop, "team", 0.1, lambda: "late")
    assert offloop.busy == 1
    # The caller goes away; its thread still runs, and still holds the namespace's turn.
    holder.cancel()
    with pytest.raises(Busy):
        await run(offloop, "team", 0.1, lambda: "still late")
    release.set()
    assert await run(offloop, "team", 5, lambda: "next") == "next"
    offloop.close()


async def test_waiting_for_a_worker_comes_out_of_the_wait_too() -> None:
    # Both workers are taken by other namespaces: a third namespace's turn is busy past its
    # wait, not late past the API server's timeout.
    offloop = OffLoop(workers=2, per_key=1)
    release = threading.Event()
    held = [
        asyncio.create_task(run(offloop, f"ns-{i}", 5, lambda: release.wait(10))) for i in range(2)
    ]
    await asyncio.sleep(0.05)
    with pytest.raises(Busy):
        await run(offloop, "billing", 0.1, lambda: "late")
    release.set()
    await asyncio.gather(*held)
    assert await run(offloop, "billing", 1, lambda: "now") == "now"
    offloop.close()


async def test_turns_are_granted_by_namespace_then_by_caller_in_rotation() -> None:
    offloop = OffLoop(workers=1, per_key=1)
    release = threading.Event()
    order: list[str] = []
    first = asyncio.create_task(run(offloop, "storm-0", 5, lambda: release.wait(10)))
    await asyncio.sleep(0.05)
    queued = []
    # A storm across namespaces, and a forger's storm in prod, arrive before prod's real review.
    for i in range(1, 6):
        queued.append(
            asyncio.create_task(
                run(offloop, f"storm-{i}", 5, lambda i=i: order.append(f"storm-{i}"))
            )
        )
    for i in range(5):
        queued.append(
            asyncio.create_task(
                run(offloop, "prod", 5, lambda i=i: order.append(f"forged-{i}"), caller="forger")
            )
        )
    await asyncio.sleep(0.01)
    queued.append(
        asyncio.create_task(run(offloop, "prod", 5, lambda: order.append("real"), caller="api"))
    )
    await asyncio.sleep(0.01)
    release.set()
    await first
    await asyncio.gather(*queued)
    # Each waiting namespace gets one turn in rotation (prod's after the five that came first),
    # and within prod each caller one: the real review goes after one forged one, not five.
    assert order == [
        *(f"storm-{i}" for i in range(1, 6)),
        "forged-0",
        "real",
        *(f"forged-{i}" for i in range(1, 5)),
    ]
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
    live = LiveRead(cluster)
    settings = parse_settings("", "config.yaml", Path())
    runtime = Runtime(settings=settings, cluster=cluster, confirmer=live)
    client = await aiohttp_client(build_app(runtime))
    # The last fence's DELETE is denied and re-checked live; the API server gave 2 s (1 s of it
    # to wait in), and 0.4 s went before the read.
    answer = await post(client, netpol_review("DELETE", old=fence), "?timeout=2s")
    assert answer["allowed"] is False
    (timeout,) = live.timeouts
    assert 0.1 <= timeout <= 0.6


async def test_two_halves_of_every_address_sent_at_once_are_judged_together(
    aiohttp_client: Callable[..., Any],
) -> None:
    # Each half alone leaves the fence standing; the second, judged after the first's approval
    # in the namespace's next turn, neutralises it.
    cluster = StaticView([namespace_facts("team", [analyse_policy(deny_all())], running_pods=3)])
    runtime = Runtime(settings=parse_settings("", "config.yaml", Path()), cluster=cluster)
    client = await aiohttp_client(build_app(runtime))
    halves = [
        netpol(name, types=["Ingress"], ingress=[{"from": [{"ipBlock": {"cidr": cidr}}]}])
        for name, cidr in (("lower", "0.0.0.0/1"), ("upper", "128.0.0.0/1"))
    ]
    answers = await asyncio.gather(
        *(post(client, netpol_review("CREATE", new=half)) for half in halves)
    )
    assert sorted(a["allowed"] for a in answers) == [False, True]
    (denied,) = (a for a in answers if not a["allowed"])
    assert "would neutralise the default-deny" in denied["status"]["message"]


async def test_two_fences_deleted_at_once_do_not_both_go(
    aiohttp_client: Callable[..., Any],
) -> None:
    old = deny_all("a-old", created="2026-01-01T00:00:00Z")
    new = deny_all("b-new", created="2026-02-01T00:00:00Z")
    cluster = StaticView(
        [namespace_facts("team", [analyse_policy(old), analyse_policy(new)], running_pods=3)]
    )

    live = LiveRead(cluster, delay=0.01)  # the writes have not happened yet: both fences stay
    runtime = Runtime(
        settings=parse_settings("", "config.yaml", Path()), cluster=cluster, confirmer=live
    )
    client = await aiohttp_client(build_app(runtime))
    answers = await asyncio.gather(
        post(client, netpol_review("DELETE", old=new)),
        post(client, netpol_review("DELETE", old=old)),
    )
    assert [a["allowed"] for a in answers] == [True, False]  # only the newer may go
