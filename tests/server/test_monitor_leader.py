"""Two `kubefence monitor` replicas on one Lease (a scripted API server), over real TLS in-process:
only the holder is Ready and takes batches, a follower answers 503 so the API server re-sends,
and the replica that takes over judges what comes next whole. Waits poll with a deadline."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import structlog
from correlate_kit import real_event
from monitor_kit import Monitor, event_list
from scripted_api import ScriptedLeases

from webhook.cluster.leaderelection import Elector, Timing
from webhook.monitor.canary import send_canaries
from webhook.monitor.server import run_monitor

NS, LEASE = "kubefence", "kubefence-monitor"
FAST = Timing(lease_duration=0.8, renew_deadline=0.5, retry_period=0.1)
WAIT = 10.0


@dataclass
class Replica:
    name: str
    monitor: Monitor
    elector: Elector
    stop: asyncio.Event
    task: asyncio.Task[int]

    async def get(self, path: str) -> tuple[int, str]:
        connector = aiohttp.TCPConnector(ssl=self.monitor.context())
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(f"https://127.0.0.1:{self.monitor.port}{path}") as response,
        ):
            return response.status, await response.text()

    async def ready(self) -> bool:
        return (await self.get("/readyz"))[0] == 200

    async def gauge(self) -> float:
        text = (await self.get("/metrics"))[1]
        (line,) = [x for x in text.splitlines() if x.startswith("kubefence_monitor_leader ")]
        return float(line.split()[1])


async def start(tmp: Path, api: ScriptedLeases, name: str) -> Replica:
    (tmp / name).mkdir()
    m = Monitor(tmp / name, mtls=True)
    runtime = m.runtime
    runtime.lease = f"{NS}/{LEASE}"
    elector = Elector(
        api,
        NS,
        LEASE,
        name,
        timing=FAST,
        on_change=lambda leading, since: runtime.took_over() if leading else None,
    )
    runtime.leading = lambda: elector.leading

    async def elect(rt: Any) -> None:
        await elector.run()

    stop, started = asyncio.Event(), asyncio.Event()

    def on_start(port: int) -> None:
        m.port = port
        started.set()

    task = asyncio.create_task(
        run_monitor(m.options, runtime, background=[elect], started=on_start, stop=stop)
    )
    await asyncio.wait_for(started.wait(), WAIT)
    return Replica(name, m, elector, stop, task)


async def until(condition: Callable[[], Awaitable[Any]], what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + WAIT
    while asyncio.get_running_loop().time() < deadline:
        if found := await condition():
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {what} within {WAIT}s")


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[ScriptedLeases, list[Replica]]]:
    api = ScriptedLeases()
    replicas = [await start(tmp_path, api, "monitor-a"), await start(tmp_path, api, "monitor-b")]
    yield api, replicas
    for r in replicas:
        r.stop.set()
    for r in replicas:
        assert await asyncio.wait_for(r.task, WAIT) == 0


async def the_leader(replicas: list[Replica]) -> tuple[Replica, Replica]:
    async def one_ready() -> tuple[Replica, Replica] | None:
        ready = [r for r in replicas if not r.task.done() and await r.ready()]
        if len(ready) != 1:
            return None
        (follower,) = [r for r in replicas if r is not ready[0]]
        return ready[0], follower

    found: tuple[Replica, Replica] = await until(one_ready, "single Ready replica")
    return found


def denials(first: int, count: int) -> list[bytes]:
    """Distinct denials of one authenticated user (kubefence-admin) by the webhook."""
    denial = real_event(b"91b078e3-9bf8-45a7-a48e-92073fd413e0")
    return [orjson.dumps({**denial, "auditID": f"probe-{first + i}"}) for i in range(count)]


async def test_only_the_holder_is_ready_and_a_follower_refuses_batches_for_a_retry(
    pair: tuple[ScriptedLeases, list[Replica]],
) -> None:
    api, replicas = pair
    leader, follower = await the_leader(replicas)
    assert api.lease(NS, LEASE)["spec"]["holderIdentity"] == leader.name
    assert (await follower.get("/readyz")) == (503, f"not the leader of Lease {NS}/{LEASE}\n")
    assert await leader.gauge() == 1.0
    assert await follower.gauge() == 0.0
    batch = event_list(denials(0, 10))
    with structlog.testing.capture_logs() as logs:
        connector = aiohttp.TCPConnector(ssl=follower.monitor.context())
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post(f"https://127.0.0.1:{follower.monitor.port}/audit", data=batch) as answer,
        ):
            assert answer.status == 503  # a 5xx: the API server sends the batch again
            assert answer.headers["Retry-After"] == "1"
            assert answer.headers["Connection"] == "close"  # the retry dials, the Service routes
            assert "not the leader" in orjson.loads(await answer.read())["error"]
        assert follower.monitor.runtime.received == 0
        assert not [e for e in logs if e["event"].startswith("evasion.")]
        assert (await leader.monitor.post(batch))[0] == 200  # the retry, reaching the holder
    (probing,) = [e for e in logs if e["event"] == "evasion.probing"]
    assert probing["denials"] == 10
    assert [e["events"] for e in logs if e["event"] == "monitor.batch_refused"] == [None]
    assert 'kubefence_monitor_batches_total{code="503"} 1.0' in await follower.monitor.metrics()


async def test_the_follower_takes_over_when_the_holder_stops_and_judges_whole_batches(
    pair: tuple[ScriptedLeases, list[Replica]],
) -> None:
    api, replicas = pair
    leader, follower = await the_leader(replicas)
    assert (await leader.monitor.post(event_list(denials(0, 9))))[0] == 200
    leader.stop.set()
    assert await asyncio.wait_for(leader.task, WAIT) == 0
    assert api.lease(NS, LEASE)["spec"]["holderIdentity"] == ""  # released on the way out
    await until(follower.ready, "takeover")
    assert await follower.gauge() == 1.0
    with structlog.testing.capture_logs() as logs:
        # The new holder starts with empty probing windows: the old holder's 9 are not carried.
        assert (await follower.monitor.post(event_list(denials(9, 1))))[0] == 200
        assert not [e for e in logs if e["event"] == "evasion.probing"]
        assert (await follower.monitor.post(event_list(denials(10, 9))))[0] == 200
    (probing,) = [e for e in logs if e["event"] == "evasion.probing"]
    assert probing["denials"] == 10


async def test_a_holder_that_cannot_renew_stops_taking_batches(
    pair: tuple[ScriptedLeases, list[Replica]],
) -> None:
    api, replicas = pair
    leader, follower = await the_leader(replicas)
    api.fail = True  # the API server unreachable: nobody can renew or take the Lease
    await until(lambda: _not(leader.ready), "holder turning unready")
    status, _ = await leader.monitor.post(event_list(denials(0, 1)))
    assert status == 503
    assert not await follower.ready()
    api.fail = False
    await the_leader(replicas)


async def _not(check: Callable[[], Awaitable[bool]]) -> bool:
    return not await check()


class CountingApi:
    def __init__(self) -> None:
        self.user_agent = ""
        self.agents: list[str] = []


async def test_a_follower_sends_no_canaries(monkeypatch: pytest.MonkeyPatch) -> None:
    from webhook.cluster import transport
    from webhook.monitor.canary import CanaryWatch

    api = CountingApi()

    class Recording:
        def __init__(self, client: CountingApi) -> None:
            self.client = client

        async def get(self, path: str, **_: Any) -> dict[str, Any]:
            self.client.agents.append(self.client.user_agent)
            return {}

    monkeypatch.setattr(transport, "KubeTransport", Recording)
    watch = CanaryWatch(60.0)
    leading = False
    task = asyncio.create_task(
        send_canaries(
            api, lambda: watch, ("ns", "cm"), interval=0.01, log=None, leading=lambda: leading
        )
    )
    try:
        for _ in range(20):
            await asyncio.sleep(0.01)  # give it turns while following; it must send nothing
        assert api.agents == []
        leading = True
        await until(lambda: _true(len(api.agents) >= 2), "canaries once leading")
        assert watch.check(0.0) is None  # recorded in the current watch: pending, not overdue
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _true(value: bool) -> bool:
    return value


def test_election_without_cluster_credentials_is_refused(tmp_path: Path) -> None:
    m = Monitor(tmp_path, mtls=True)
    assert m.options.client_ca is not None
    args = ["--cert", str(m.cert), "--key", str(m.key), "--client-ca", str(m.options.client_ca)]
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "monitor", *args, "--leader-election-namespace", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "--leader-election-namespace needs cluster credentials" in result.stderr
