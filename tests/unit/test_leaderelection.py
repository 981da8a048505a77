"""Leader election on a Lease, with a fake clock and a scripted API server: who holds it, what is
written, when another may take over, and that a leader that cannot renew stops notifying first."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from scripted_api import ScriptedLeases

from webhook.cluster.leaderelection import Elector, Timing, micro_time

NS, NAME = "kubefence", "kubefence-notifier"
EPOCH = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


class FakeClock:
    """Time moves only when told, or when a loop sleeps (instantly, yielding once)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t

    def wall(self) -> dt.datetime:
        return EPOCH + dt.timedelta(seconds=self.t)

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await asyncio.sleep(0)


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))

    def events(self) -> list[str]:
        return [event for event, _ in self.lines]


def candidate(api: ScriptedLeases, clock: FakeClock, who: str, log: Log | None = None) -> Elector:
    return Elector(api, NS, NAME, who, clock=clock, log=log)


async def test_the_first_candidate_creates_the_lease_as_client_go_writes_it() -> None:
    api, clock = ScriptedLeases(), FakeClock()
    a = candidate(api, clock, "a")
    assert await a.try_acquire_or_renew()
    spec = api.lease()["spec"]
    now = micro_time(clock.wall())
    assert spec == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "acquireTime": now,
        "renewTime": now,
        "leaseTransitions": 0,
    }
    assert now.endswith("Z")
    assert len(now.split(".")[1]) == 7  # six digits and Z: a MicroTime
    assert api.writes == [("POST", "a")]
    assert a.leading


async def test_a_renewal_keeps_acquire_time_and_transitions_and_moves_renew_time() -> None:
    api, clock = ScriptedLeases(), FakeClock()
    a = candidate(api, clock, "a")
    await a.try_acquire_or_renew()
    acquired = api.lease()["spec"]["acquireTime"]
    clock.t += 2
    assert await a.try_acquire_or_renew()
    spec = api.lease()["spec"]
    assert (spec["acquireTime"], spec["leaseTransitions"]) == (acquired, 0)
    assert spec["renewTime"] == micro_time(clock.wall()) != acquired
    assert api.writes == [("POST", "a"), ("PUT", "a")]  # renewed on the version held: no read


async def test_a_held_lease_is_taken_a_lease_duration_after_this_process_saw_it_change() -> None:
    api, clock = ScriptedLeases(), FakeClock()
    a, b = candidate(api, clock, "a"), candidate(api, clock, "b")
    await a.try_acquire_or_renew()
    # The holder's renewTime is another machine's clock: one far in the past changes nothing.
    api.lease()["spec"]["renewTime"] = "2001-01-01T00:00:00.000000Z"
    assert not await b.try_acquire_or_renew()  # b sees the record for the first time now
    seen = clock.t
    assert not b.leading
    clock.t = seen + 14.9
    assert not await b.try_acquire_or_renew()
    assert api.writes == [("POST", "a")]
    clock.t = seen + 15.1
    assert await b.try_acquire_or_renew()
    spec = api.lease()["spec"]
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("b", 1)
    assert spec["acquireTime"] == spec["renewTime"] == micro_time(clock.wall())
    assert b.leading
    assert not a.leading  # long past its renew deadline
    assert not await a.try_acquire_or_renew()  # its fast path meets a 409, then sees b's lease
    assert not a.leading


async def test_two_candidates_writing_the_same_version_cannot_both_win() -> None:
    api, clock = ScriptedLeases(), FakeClock()
    a, b, c = (candidate(api, clock, x) for x in "abc")
    await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    assert not await c.try_acquire_or_renew()
    clock.t += 16
    api.pause = True  # both read the same resourceVersion before either writes
    won = await asyncio.gather(b.try_acquire_or_renew(), c.try_acquire_or_renew())
    assert sorted(won) == [False, True]
    assert api.lease()["spec"]["leaseTransitions"] == 1
    assert [b.leading, c.leading] == won


async def test_a_leader_that_cannot_renew_stops_leading_before_its_renew_deadline() -> None:
    api, clock, log = ScriptedLeases(), FakeClock(), Log()
    a = candidate(api, clock, "a", log)
    changes: list[tuple[bool, float]] = []
    a.on_change = lambda leading, since: changes.append((leading, clock.t))
    task = asyncio.create_task(a.run())
    for _ in range(100):
        await asyncio.sleep(0)
        if changes:
            break
    assert [leading for leading, _ in changes] == [True]
    renewed_at = changes[0][1]
    api.fail = True
    for _ in range(1000):
        await asyncio.sleep(0)
        if len(changes) == 2:
            break
    assert changes[1][0] is False
    assert changes[1][1] - renewed_at <= Timing().renew_deadline
    assert not a.leading
    assert "leader.lost" in log.events()
    # Meanwhile a follower could not have taken over: it needs 15 s from its own observation.
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_leading_ends_at_the_renew_deadline_even_if_the_loop_never_ran() -> None:
    """A stalled event loop (a stopped process) must not leave a stale leader notifying."""
    api, clock = ScriptedLeases(), FakeClock()
    a = candidate(api, clock, "a")
    await a.try_acquire_or_renew()
    clock.t += 9.9
    assert a.leading
    clock.t += 0.2
    assert not a.leading


async def test_the_leader_releases_on_shutdown_and_a_follower_takes_over_at_its_next_try() -> None:
    api, clock, log = ScriptedLeases(), FakeClock(), Log()
    a, b = candidate(api, clock, "a", log), candidate(api, clock, "b")
    task = asyncio.create_task(a.run())
    for _ in range(100):
        await asyncio.sleep(0)
        if a.leading:
            break
    assert a.leading
    assert not await b.try_acquire_or_renew()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    spec = api.lease()["spec"]
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"]) == ("", 1)
    assert "leader.released" in log.events()
    assert await b.try_acquire_or_renew()  # no wait for the lease duration
    assert api.lease()["spec"]["leaseTransitions"] == 1


async def test_a_failed_read_or_create_is_a_failed_attempt_not_an_exception() -> None:
    api, clock, log = ScriptedLeases(), FakeClock(), Log()
    a = candidate(api, clock, "a", log)
    api.fail = True
    assert not await a.try_acquire_or_renew()
    assert (
        "leader.attempt_failed",
        {"identity": "a", "step": "get", "reason": "ApiError: HTTP 500: scripted failure"},
    ) in log.lines
    assert not a.leading


def test_timing_must_leave_a_follower_time_after_the_renew_deadline() -> None:
    Timing()  # client-go's defaults: 15, 10, 2
    with pytest.raises(ValueError, match="lease_duration > renew_deadline"):
        Timing(lease_duration=10, renew_deadline=10)
    with pytest.raises(ValueError, match=r"1\.2"):
        Timing(renew_deadline=2.4, retry_period=2)
