"""Leader election on a coordination.k8s.io/v1 Lease: which replica notifies for the cluster.

Every replica (and every `--workers` process) serves reviews and keeps its own cluster view; only
the holder of the Lease emits the cluster's notices (`fence.lost`, `webhook.drift`, ...), so they
appear once per cluster. The algorithm is client-go's (k8s.io/client-go@v0.37.2,
tools/leaderelection/leaderelection.go, `tryAcquireOrRenew`, `acquire`, `renew`, `release`;
resourcelock/leaselock.go for the Lease's fields), with its defaults.

Invariants:
- Writes are optimistic: an UPDATE carries the resourceVersion last read, so of two candidates
  writing the same version one gets 409 Conflict and stays a follower.
- A Lease held by another is taken only once it has not changed for its `leaseDurationSeconds`
  as *this* process observed it (the time its record last changed here, on the monotonic clock;
  never the holder's `renewTime`, which is another machine's wall clock).
- `acquireTime` is set when the holder changes and kept by renewals; `renewTime` on every write;
  `leaseTransitions` grows by one when the holder changes; `holderIdentity` is the holder.
- `leading` is True only while this process is the holder it last wrote or read, and that
  write was *sent* less than `renew_deadline` ago: a leader that cannot renew stops notifying at
  once, well before another can take over (`lease_duration` after it last observed a change,
  which is later than the write was sent).
- On shutdown the leader releases the Lease (holder emptied, leaseDurationSeconds 1), as
  client-go's ReleaseOnCancel does, so a follower takes over at its next retry.
- No decision here reads the wall clock except for the two timestamps written; tests give a
  fake `Clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import quote

from webhook.cluster.apiserver import JSON, ApiError

LEASE_DURATION = 15.0  # seconds; client-go's defaults (and kube-controller-manager's)
RENEW_DEADLINE = 10.0
RETRY_PERIOD = 2.0
JITTER_FACTOR = 1.2  # leaderelection.go's JitterFactor: a candidate waits retry * [1, 2.2)
DEFAULT_LEASE_NAME = "kubefence-notifier"
_GROUP = "/apis/coordination.k8s.io/v1"


class LeaseApi(Protocol):
    """The API server's reads and writes the elector needs (`transport.KubeTransport` is one)."""

    async def get(
        self,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        *,
        timeout: float | None,
        accept: str = JSON,
    ) -> dict[str, Any]: ...

    async def send(
        self, method: str, path: str, body: Mapping[str, Any], *, timeout: float | None
    ) -> dict[str, Any]:
        """POST or PUT a JSON object; the answer parsed; any other status raises ApiError."""
        ...


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall(self) -> dt.datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True)
class Record:
    """A Lease's spec as the election reads it (client-go's LeaderElectionRecord)."""

    holder: str = ""
    lease_seconds: int = 0
    acquire_time: str = ""
    renew_time: str = ""
    transitions: int = 0

    @classmethod
    def of(cls, lease: Mapping[str, Any]) -> Record:
        spec = lease.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            lease_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=str(spec.get("acquireTime") or ""),
            renew_time=str(spec.get("renewTime") or ""),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def spec(self) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.lease_seconds,
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.transitions,
        }


def micro_time(moment: dt.datetime) -> str:
    """metav1.MicroTime as the API server writes it: RFC 3339, UTC, six fractional digits."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Timing:
    lease_duration: float = LEASE_DURATION
    renew_deadline: float = RENEW_DEADLINE
    retry_period: float = RETRY_PERIOD

    def __post_init__(self) -> None:  # leaderelection.go's NewLeaderElector checks
        if not self.lease_duration > self.renew_deadline > JITTER_FACTOR * self.retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > 1.2 * retry_period > 0")


Listener = Callable[[bool, float], None]  # (leading now, since when a handover may have lost)


class Elector:
    """Contends for one Lease until cancelled; `leading` says whether to notify now."""

    def __init__(
        self,
        api: LeaseApi,
        namespace: str,
        name: str,
        identity: str,
        *,
        timing: Timing | None = None,
        clock: Clock | None = None,
        log: Any = None,
        on_change: Listener | None = None,
    ) -> None:
        self.namespace, self.name, self.identity = namespace, name, identity
        self.timing = timing or Timing()
        self._api = api
        self._clock = clock or SystemClock()
        self._log = log
        self.on_change = on_change
        self._path = f"{_GROUP}/namespaces/{quote(namespace, safe='')}/leases"
        self._lease: dict[str, Any] | None = None  # as last read or written: its resourceVersion
        self.observed = Record()
        self.observed_at = float("-inf")  # monotonic: when `observed` last changed here
        self._held = False
        self._renewed_sent = float("-inf")  # monotonic: when the last successful write was sent
        self._reported_holder = ""
        self._other_seen = float("-inf")  # monotonic: another holder's record last seen changing

    @property
    def leading(self) -> bool:
        return (
            self._is_holder()
            and self._clock.monotonic() - self._renewed_sent < self.timing.renew_deadline
        )

    # --- one attempt (tryAcquireOrRenew) ----------------------------------------------------------

    async def try_acquire_or_renew(self) -> bool:
        """One attempt to take or keep the Lease; True when this process holds it now."""
        sent = self._clock.monotonic()
        now = micro_time(self._clock.wall())
        timeout = self.timing.renew_deadline
        desired = Record(self.identity, int(self.timing.lease_duration), now, now, 0)
        if self._is_holder() and self._valid(sent) and self._lease is not None:
            # The fast path: renew on the version held, without reading first.
            kept = replace(
                desired,
                acquire_time=self.observed.acquire_time,
                transitions=self.observed.transitions,
            )
            with contextlib.suppress(ApiError, OSError, TimeoutError):
                return await self._write("PUT", kept, sent, timeout)
        try:
            lease = await self._api.get(
                f"{self._path}/{quote(self.name, safe='')}", timeout=timeout
            )
        except ApiError as exc:
            if exc.status != 404:
                return self._failed("get", exc)
            self._lease = None
            try:
                return await self._write("POST", desired, sent, timeout)
            except (ApiError, OSError, TimeoutError) as err:
                return self._failed("create", err)
        except (OSError, TimeoutError) as exc:
            return self._failed("get", exc)
        self._lease = lease
        record = Record.of(lease)
        if record != self.observed:
            self._observe(record)
        if record.holder and self._valid(sent) and not self._is_holder():
            return False  # held by another, not expired
        if self._is_holder():
            desired = replace(
                desired, acquire_time=record.acquire_time, transitions=record.transitions
            )
        else:
            desired = replace(desired, transitions=record.transitions + 1)
        try:
            return await self._write("PUT", desired, sent, timeout)
        except (ApiError, OSError, TimeoutError) as exc:
            return self._failed("update", exc)

    def _is_holder(self) -> bool:
        return self.observed.holder == self.identity

    def _valid(self, now: float) -> bool:
        return self.observed_at + self.observed.lease_seconds > now

    def _observe(self, record: Record) -> None:
        self.observed, self.observed_at = record, self._clock.monotonic()
        if record.holder and record.holder != self.identity:
            self._other_seen = self.observed_at
        if record.holder != self._reported_holder:  # client-go's OnNewLeader
            self._reported_holder = record.holder
            self._info("leader.observed", holder=record.holder or None)

    async def _write(self, method: str, record: Record, sent: float, timeout: float) -> bool:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if method == "PUT" and self._lease is not None:
            metadata = dict(self._lease.get("metadata") or metadata)  # resourceVersion included
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": record.spec(),
        }
        path = self._path if method == "POST" else f"{self._path}/{quote(self.name, safe='')}"
        self._lease = await self._api.send(method, path, body, timeout=timeout)
        self._observe(record)
        self._renewed_sent = sent
        return True

    def _failed(self, step: str, exc: BaseException) -> bool:
        self._info("leader.attempt_failed", step=step, reason=f"{type(exc).__name__}: {exc}")
        return False

    # --- the loops (acquire, renew, release) -----------------------------------------------------

    async def run(self) -> None:
        """Contend until cancelled: acquire, renew while able, contend again; release on exit."""
        try:
            while True:
                await self._acquire()
                await self._renew()
        finally:
            await self._release()

    async def _acquire(self) -> None:
        while not await self.try_acquire_or_renew():
            retry = self.timing.retry_period
            await self._clock.sleep(retry * (1.0 + random.random() * JITTER_FACTOR))  # noqa: S311
        self._set_held(True, since=self._handover_since())

    async def _renew(self) -> None:
        """Renew every retry period; a renewal that has not succeeded by the deadline ends it."""
        timing = self.timing
        while True:
            deadline = self._renewed_sent + timing.renew_deadline
            while not await self.try_acquire_or_renew():
                if self._clock.monotonic() + timing.retry_period >= deadline:
                    self._set_held(False, since=self._clock.monotonic())
                    return
                await self._clock.sleep(timing.retry_period)
            await self._clock.sleep(timing.retry_period)

    async def _release(self) -> None:
        if not self._held or not self._is_holder():
            self._set_held(False, since=self._clock.monotonic())
            return
        self._set_held(False, since=self._clock.monotonic())
        now = micro_time(self._clock.wall())
        released = Record("", 1, now, now, self.observed.transitions)
        with contextlib.suppress(ApiError, OSError, TimeoutError):
            await self._write("PUT", released, self._clock.monotonic(), self.timing.renew_deadline)
            self._info("leader.released")

    def _handover_since(self) -> float:
        """From when notices may have gone unsent: another holder was last seen renewing then (its
        write up to one jittered retry earlier), and may have stopped notifying right after."""
        return self._other_seen - self.timing.retry_period * (1.0 + JITTER_FACTOR)

    def _set_held(self, held: bool, *, since: float) -> None:
        if held == self._held:
            return
        self._held = held
        self._info(
            "leader.acquired" if held else "leader.lost", lease=f"{self.namespace}/{self.name}"
        )
        if self.on_change is not None:
            self.on_change(held, since)

    def _info(self, event: str, **fields: Any) -> None:
        if self._log is not None:
            self._log.info(event, identity=self.identity, **fields)
