"""Live reads before a fence goes or a denial stands: shared per namespace however many ask
(freshness kept exact), and bounded per caller, so one forger's storm waits for itself.

The API server here is a stand-in that counts reads and holds them until told: concurrency is
the fault to show, and a real API server answers too fast to hold a read open on demand."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest

from webhook.cluster.live import NamespaceReader


class HeldApi:
    """GETs answered once `open` is set for their namespace; reads counted as they start."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.started: list[tuple[str, float]] = []  # (namespace, when its Namespace GET began)
        self.in_flight = 0
        self.most_in_flight = 0

    def gate(self, namespace: str) -> asyncio.Event:
        return self.gates.setdefault(namespace, asyncio.Event())

    async def get(
        self,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        *,
        timeout: float | None = None,
        accept: str = "",
    ) -> dict[str, Any]:
        namespace = path.split("/namespaces/")[1].split("/", maxsplit=1)[0]
        first = path == f"/api/v1/namespaces/{namespace}"
        if first:
            self.started.append((namespace, time.monotonic()))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.gate(namespace).wait()
        finally:
            if first:
                self.in_flight -= 1
        if first:
            return {"metadata": {"name": namespace, "labels": {}}, "status": {"phase": "Active"}}
        return {"metadata": {}, "items": []}

    def watch(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


def open_all(api: HeldApi) -> None:
    for gate in api.gates.values():
        gate.set()


async def test_a_storm_for_one_namespace_shares_two_reads_and_each_is_fresh_enough() -> None:
    api = HeldApi()
    reader = NamespaceReader(api)
    early = asyncio.create_task(reader.read("team", 5, not_before=time.monotonic()))
    await asyncio.sleep(0.01)
    # 300 callers arrive while that read is in flight, each wanting a read made after it came.
    arrivals: list[float] = []
    storm = []
    for _ in range(300):
        arrivals.append(time.monotonic())
        storm.append(asyncio.create_task(reader.read("team", 5, not_before=arrivals[-1])))
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    assert reader.reads == 1  # the later ones wait for the next read; none starts beside it
    open_all(api)
    await early
    await asyncio.gather(*storm)
    assert reader.reads == 2
    assert api.most_in_flight == 1
    second_started = api.started[1][1]
    assert second_started >= max(arrivals)  # started after every caller it serves arrived


async def test_one_caller_across_namespaces_waits_for_itself_not_for_others() -> None:
    api = HeldApi()
    reader = NamespaceReader(api, per_caller=8)
    forged = [
        asyncio.create_task(reader.read(f"ns-{i}", 5, caller="peer:10.0.0.66")) for i in range(500)
    ]
    await asyncio.sleep(0.05)
    assert api.in_flight == 8  # the forger's own bound
    # The API server's real request meanwhile starts at once and is answered.
    real = asyncio.create_task(reader.read("billing", 5, caller="peer:10.0.0.1"))
    await asyncio.sleep(0.01)
    assert api.in_flight == 9
    api.gate("billing").set()
    assert (await real).name == "billing"
    open_all(api)
    for i in range(500):
        api.gate(f"ns-{i}").set()
    await asyncio.gather(*forged)
    assert reader.reads == 501
    assert api.most_in_flight == 9


async def test_a_caller_waiting_past_its_time_gives_up_and_frees_its_turn() -> None:
    api = HeldApi()
    reader = NamespaceReader(api, per_caller=1)
    held = asyncio.create_task(reader.read("a", 5, caller="peer:x"))
    await asyncio.sleep(0.01)
    with pytest.raises(TimeoutError):
        await reader.read("b", 0.05, caller="peer:x")  # its one turn is taken: it waits, then fails
    api.gate("a").set()
    await held
    api.gate("b").set()
    assert (await reader.read("b", 1, caller="peer:x")).name == "b"
    assert reader._callers == {}  # nothing kept for callers with nothing under way
