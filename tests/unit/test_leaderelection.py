"""Leader election on a Lease, with a fake clock and a scripted API server: who holds it, what is
written, when another may take over, and that a leader that cannot renew stops notifying first."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest
from scripted_api import ScriptedLeases

from webhook.cluster.apiserver import ApiError
from webhook.cluster.leaderelection import Elector, Timing, micro_time
from webhook.cluster.notices import Notice, Notices

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
        self.warned: list[str] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))
        self.warned.append(event)

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


class Slow(ScriptedLeases):
    """Leases whose next PUT is answered only after `then` ran (it moves the clock, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.then: Callable[[], None] | None = None
        self.timeouts: list[float | None] = []

    async def send(
        self, method: str, path: str, body: Any, *, timeout: float | None
    ) -> dict[str, Any]:
        self.timeouts.append(timeout)
        if method == "PUT" and self.then is not None:
            then, self.then = self.then, None
            then()
        return await super().send(method, path, body, timeout=timeout)


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never met")


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_renewal_answered_after_its_deadline_is_a_lapse_and_loses_no_notice() -> None:
    """Notices observed while the slow renewal was pending were kept (not leading); the renewal's
    success makes the process lead again, and what it kept meanwhile is sent then."""
    api, clock, log = Slow(), FakeClock(), Log()
    notices = Notices(log=log, clock=clock.monotonic)
    a = candidate(api, clock, "a")
    notices.leading = lambda: a.leading
    changes: list[bool] = []

    def changed(leading: bool, since: float) -> None:
        changes.append(leading)
        notices.leadership_changed(leading, since)

    a.on_change = changed
    task = asyncio.create_task(a.run())
    await until(lambda: changes == [True])

    def hang() -> None:  # the renewal is answered 11 s after its predecessor was sent
        clock.t += 9.0
        notices.emit(Notice("fence.lost", {"namespace": "prod"}))

    api.then = hang
    await until(lambda: api.then is None and a.leading)
    await until(lambda: bool(log.lines))
    assert changes == [True, False, True]
    assert log.lines == [("fence.lost", {"namespace": "prod", "replayed": True})]
    await stop(task)


async def test_a_renewal_is_given_only_the_time_left_before_its_deadline() -> None:
    api, clock = Slow(), FakeClock()
    a = candidate(api, clock, "a")
    task = asyncio.create_task(a.run())
    await until(lambda: len(api.timeouts) == 1)
    api.fail = True
    await until(lambda: len(api.timeouts) >= 3)
    await stop(task)
    assert api.timeouts[0] == Timing().renew_deadline  # contending: the whole deadline
    assert api.timeouts[1] == Timing().renew_deadline - 2.0  # renewing 2 s after the write
    assert api.timeouts[2] == Timing().renew_deadline - 4.0


class Broken(ScriptedLeases):
    """Leases whose next requests raise what a broken connection or a garbled answer raises."""

    def __init__(self, errors: list[Exception]) -> None:
        super().__init__()
        self.errors = errors

    async def get(
        self, path: str, query: Any = (), *, timeout: float | None, accept: str = ""
    ) -> dict[str, Any]:
        if self.errors:
            raise self.errors.pop(0)
        return await super().get(path, query, timeout=timeout, accept=accept)

    async def send(
        self, method: str, path: str, body: Any, *, timeout: float | None
    ) -> dict[str, Any]:
        if self.errors:
            raise self.errors.pop(0)
        return await super().send(method, path, body, timeout=timeout)


async def test_any_error_of_a_request_is_a_failed_attempt_and_the_election_goes_on() -> None:
    errors: list[Exception] = [
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("Response payload is not completed"),
        orjson.JSONDecodeError("unexpected character", "<html>secret</html>", 0),
    ]
    api, clock, log = Broken(errors), FakeClock(), Log()
    a = candidate(api, clock, "a", log)
    task = asyncio.create_task(a.run())
    await until(lambda: a.leading)
    assert not task.done()
    failed = [fields for event, fields in log.lines if event == "leader.attempt_failed"]
    assert [f["reason"] for f in failed] == [
        "ServerDisconnectedError",
        "ClientPayloadError",
        "JSONDecodeError",  # its type only: the answer's text is never logged
    ]
    await stop(task)


async def test_a_listener_that_raises_does_not_end_the_election() -> None:
    api, clock, log = ScriptedLeases(), FakeClock(), Log()
    a = candidate(api, clock, "a", log)
    calls: list[bool] = []

    def changed(leading: bool, since: float) -> None:
        calls.append(leading)
        if len(calls) == 1:
            raise RuntimeError("listener bug")

    a.on_change = changed
    task = asyncio.create_task(a.run())
    await until(lambda: len(api.writes) >= 3)  # renewing on
    assert not task.done()
    assert a.leading
    await stop(task)


class Forbidden(ScriptedLeases):
    """Leases the service account may not touch while `forbid`; `no_namespace` answers a create
    as the API server does when the namespace does not exist."""

    def __init__(self) -> None:
        super().__init__()
        self.forbid = True
        self.no_namespace = False

    async def get(
        self, path: str, query: Any = (), *, timeout: float | None, accept: str = ""
    ) -> dict[str, Any]:
        if self.forbid:
            raise ApiError(403, 'leases.coordination.k8s.io "kubefence-notifier" is forbidden')
        return await super().get(path, query, timeout=timeout, accept=accept)

    async def send(
        self, method: str, path: str, body: Any, *, timeout: float | None
    ) -> dict[str, Any]:
        if self.no_namespace:
            raise ApiError(404, 'namespaces "kubefence" not found')
        return await super().send(method, path, body, timeout=timeout)


async def test_a_lease_refused_to_the_process_is_warned_once_and_it_notifies_itself() -> None:
    api, clock, log = Forbidden(), FakeClock(), Log()
    a = Elector(api, NS, NAME, "a", clock=clock, log=log, lead_when_refused=True)
    changes: list[bool] = []
    a.on_change = lambda leading, since: changes.append(leading)
    task = asyncio.create_task(a.run())
    await until(lambda: clock.t > 1030)  # a dozen refused attempts
    assert a.leading
    assert changes == [True]
    assert log.warned == ["leader.lease_refused"]
    reason = next(f["reason"] for e, f in log.lines if e == "leader.lease_refused")
    assert "kubefence/kubefence-notifier" in reason
    assert "get, create and update on leases.coordination.k8s.io" in reason
    assert "leader.attempt_failed" not in log.events()  # said once, as a warning
    api.forbid = False  # the Role is granted: back to the election, which it wins
    await until(lambda: api.writes != [])
    assert api.lease()["spec"]["holderIdentity"] == "a"
    assert a.leading
    assert changes == [True]
    assert "leader.lease_accepted" in log.events()
    await stop(task)


async def test_a_refused_process_steps_back_once_another_holds_the_lease() -> None:
    api, clock, log = Forbidden(), FakeClock(), Log()
    a = Elector(api, NS, NAME, "a", clock=clock, log=log, lead_when_refused=True)
    b = candidate(api, clock, "b")
    assert not await a.try_acquire_or_renew()
    assert a.leading
    api.forbid = False
    assert await b.try_acquire_or_renew()
    assert not await a.try_acquire_or_renew()
    assert not a.leading


async def test_a_missing_namespace_is_a_refusal_that_names_it() -> None:
    api, clock, log = Forbidden(), FakeClock(), Log()
    api.forbid, api.no_namespace = False, True
    a = candidate(api, clock, "a", log)  # without lead_when_refused: warned, not leading
    assert not await a.try_acquire_or_renew()
    assert not await a.try_acquire_or_renew()
    assert not a.leading
    assert log.warned == ["leader.lease_refused"]
    reason = next(f["reason"] for e, f in log.lines if e == "leader.lease_refused")
    assert 'namespaces "kubefence" not found' in reason


class Racing(ScriptedLeases):
    """Leases where a write lands right after the next `race` reads: a renewal in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.race = 0

    async def get(
        self, path: str, query: Any = (), *, timeout: float | None, accept: str = ""
    ) -> dict[str, Any]:
        read = await super().get(path, query, timeout=timeout, accept=accept)
        if self.race:
            self.race -= 1
            self.version += 1
            self.leases[path]["metadata"]["resourceVersion"] = str(self.version)
        return read


async def test_a_release_refused_by_a_racing_renewal_is_retried_on_the_fresh_version() -> None:
    api, clock, log = Racing(), FakeClock(), Log()
    a, b = candidate(api, clock, "a", log), candidate(api, clock, "b")
    task = asyncio.create_task(a.run())
    await until(lambda: a.leading)
    # A renewal the shutdown interrupted reached the API server (the version a holds is stale),
    # and another lands between the release's read and its write.
    api.version += 1
    api.lease()["metadata"]["resourceVersion"] = str(api.version)
    api.race = 1
    await stop(task)
    spec = api.lease()["spec"]
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"]) == ("", 1)
    assert "leader.released" in log.events()
    assert await b.try_acquire_or_renew()  # at once, not a lease duration later


async def test_a_release_leaves_alone_a_lease_another_took_meanwhile() -> None:
    api, clock = ScriptedLeases(), FakeClock()
    a = candidate(api, clock, "a")
    task = asyncio.create_task(a.run())
    await until(lambda: a.leading)
    api.lease()["spec"]["holderIdentity"] = "b"
    await stop(task)
    assert api.lease()["spec"]["holderIdentity"] == "b"


async def test_a_deleted_lease_is_recreated_by_its_holder_and_no_second_leader_appears() -> None:
    api, clock = ScriptedLeases(), FakeClock()
    a, b = candidate(api, clock, "a"), candidate(api, clock, "b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    seen = clock.t
    api.leases.clear()  # kubectl delete lease
    clock.t += 0.1
    assert not await b.try_acquire_or_renew()  # a leads as far as b knows: b waits that out
    assert a.leading
    assert not b.leading
    clock.t += 1.9
    assert await a.try_acquire_or_renew()  # a's next renewal creates it again
    assert api.lease()["spec"]["holderIdentity"] == "a"
    # With the holder gone as well, a deleted Lease is taken as an expired one is.
    api.leases.clear()
    clock.t = seen + 14.9
    assert not await b.try_acquire_or_renew()
    clock.t = seen + 15.1
    assert await b.try_acquire_or_renew()
    assert b.leading
