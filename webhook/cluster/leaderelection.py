"""Leader election on a coordination.k8s.io/v1 Lease: which replica notifies for the cluster.

Every replica (and every `--workers` process) serves reviews and keeps its own cluster view; only
the holder of the Lease emits the cluster's notices (`fence.lost`, `webhook.drift`, ...), so they
appear once per cluster. The algorithm is client-go's (k8s.io/client-go@v0.37.2,
tools/leaderelection/leaderelection.go, `tryAcquireOrRenew`, `acquire`, `renew`, `release`;
the Lease's fields in `webhook.cluster.lease`), with its defaults.

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
  which is later than the write was sent). With `lead_when_refused`, also while the API server
  refuses this process the Lease (403; 404 for the namespace): every replica then notifies.
- `on_change` hears every change of `leading`, checked at each attempt, and a leader's attempts
  are never later than its renew deadline: a renewal answered after that deadline is a lapse
  (lost, then acquired), since notices were kept meanwhile.
- No request's failure ends `run`: whatever an attempt raises (ApiError, a dropped connection, a
  garbled answer) is a failed attempt, logged by type (and the Status message), never a body.
- A Lease deleted while another held it, as last seen here, is waited out as an unexpired one:
  its holder creates it again at its next renewal, and no candidate that saw it held leads
  beside it. One that never saw the Lease creates it at once, and the old holder leads on until
  its next renewal finds it taken: at most a retry period (client-go's window for all).
- On shutdown the leader releases the Lease (holder emptied, leaseDurationSeconds 1), as
  client-go's ReleaseOnCancel does, so a follower takes over at its next retry: on a fresh read,
  retried once on 409, and only while the Lease read names this process.
- No decision here reads the wall clock except for the two timestamps written; tests give a
  fake `Clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import quote

from webhook.cluster.apiserver import ApiError
from webhook.cluster.lease import LeaseApi, Record, micro_time

LEASE_DURATION = 15.0  # seconds; client-go's defaults (and kube-controller-manager's)
RENEW_DEADLINE = 10.0
RETRY_PERIOD = 2.0
JITTER_FACTOR = 1.2  # leaderelection.go's JitterFactor: a candidate waits retry * [1, 2.2)
DEFAULT_LEASE_NAME = "kubefence-notifier"
_GROUP = "/apis/coordination.k8s.io/v1"


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
class Timing:
    lease_duration: float = LEASE_DURATION
    renew_deadline: float = RENEW_DEADLINE
    retry_period: float = RETRY_PERIOD

    def __post_init__(self) -> None:  # leaderelection.go's NewLeaderElector checks
        if not self.lease_duration > self.renew_deadline > JITTER_FACTOR * self.retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > 1.2 * retry_period > 0")


# (leading now; on taking over, the monotonic moment from which the previous holder may have
# stopped leading: a listener whose notices take time to go out subtracts that time as well)
Listener = Callable[[bool, float], None]


class Elector:
    """Contends for one Lease until cancelled; `leading` says whether to notify now.

    `lead_when_refused`: while the API server refuses this process the Lease (403, or 404 for
    the namespace: RBAC or the namespace missing), lead anyway. Every replica then leads:
    duplicates rather than silence.
    """

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
        lead_when_refused: bool = False,
    ) -> None:
        self.namespace, self.name, self.identity = namespace, name, identity
        self.timing = timing or Timing()
        self._api = api
        self._clock = clock or SystemClock()
        self._log = log
        self.on_change = on_change
        self.lead_when_refused = lead_when_refused
        self._path = f"{_GROUP}/namespaces/{quote(namespace, safe='')}/leases"
        self._lease: dict[str, Any] | None = None  # as last read or written: its resourceVersion
        self.observed = Record()
        self.observed_at = float("-inf")  # monotonic: when `observed` last changed here
        self._held = False  # what `on_change` was last told
        self._renewed_sent = float("-inf")  # monotonic: when the last successful write was sent
        self._reported_holder = ""
        self._other_seen = float("-inf")  # monotonic: another holder's record last seen changing
        self.refusal: str | None = None  # why the API server refuses the Lease, while it does

    @property
    def leading(self) -> bool:
        if self.lead_when_refused and self.refusal is not None:
            return True
        lapses_at = self._lapses_at()
        return lapses_at is not None and self._clock.monotonic() < lapses_at

    def _lapses_at(self) -> float | None:
        """When holding stops counting as leading unless renewed: renew_deadline after the last
        successful write was sent (None: not the holder)."""
        return self._renewed_sent + self.timing.renew_deadline if self._is_holder() else None

    # --- one attempt (tryAcquireOrRenew) ----------------------------------------------------------

    async def try_acquire_or_renew(self) -> bool:
        """One attempt to take or keep the Lease; True when this process holds it now.

        Every change of `leading` is reported to `on_change` here, a lapse included: a renewal
        answered after the renew deadline leaves `leading` True again, but it was False meanwhile
        (notices were kept), so it is reported lost and then acquired (they are sent). A renewal
        is given only the time left before that deadline (client-go's renew context)."""
        self._follow_leading()  # a lapse while no attempt ran (a stalled loop) is told first
        sent = self._clock.monotonic()
        lapses_at = self._lapses_at() if self._held else None
        timeout = self.timing.renew_deadline if lapses_at is None else lapses_at - sent
        held = await self._attempt(sent, timeout)
        self._follow_leading(lapsed=lapses_at is not None and self._clock.monotonic() >= lapses_at)
        return held

    async def _attempt(self, sent: float, timeout: float) -> bool:
        now = micro_time(self._clock.wall())
        desired = Record(self.identity, int(self.timing.lease_duration), now, now, 0)
        if self._is_holder() and self._valid(sent) and self._lease is not None:
            # The fast path: renew on the version held, without reading first; any failure falls
            # back to reading (client-go's "falling back to slow path").
            kept = replace(
                desired,
                acquire_time=self.observed.acquire_time,
                transitions=self.observed.transitions,
            )
            with contextlib.suppress(Exception):
                return await self._write("PUT", kept, sent, timeout)
        try:
            lease: dict[str, Any] | None = await self._api.get(
                f"{self._path}/{quote(self.name, safe='')}", timeout=timeout
            )
        except ApiError as exc:
            if exc.status != 404:
                return self._failed("get", exc)
            lease = None
        except Exception as exc:  # a dropped connection, a garbled answer: the reflector's rule
            return self._failed("get", exc)
        if lease is None:
            return await self._create(desired, sent, timeout)
        self._lease = lease
        record = Record.of(lease)
        if record != self.observed:
            self._observe(record)
        if record.holder and self._valid(sent) and not self._is_holder():
            self._accepted()  # another leads: this process need not
            return False  # held by another, not expired
        if self._is_holder():
            desired = replace(
                desired, acquire_time=record.acquire_time, transitions=record.transitions
            )
        else:
            desired = replace(desired, transitions=record.transitions + 1)
        try:
            return await self._write("PUT", desired, sent, timeout)
        except Exception as exc:
            return self._failed("update", exc)

    async def _create(self, desired: Record, sent: float, timeout: float) -> bool:
        if self.observed.holder and not self._is_holder() and self._valid(sent):
            # Deleted while another held it as last seen here: that one may lead until its next
            # renewal, which creates the Lease again; this process waits the lease out as if the
            # Lease were still there. (client-go creates at once: two leaders for a retry period.)
            return False
        self._lease = None
        try:
            return await self._write("POST", desired, sent, timeout)
        except Exception as exc:
            return self._failed("create", exc)

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
        self._accepted()
        return True

    def _failed(self, step: str, exc: Exception) -> bool:
        if isinstance(exc, ApiError) and (
            exc.status == 403 or (exc.status == 404 and step == "create")
        ):
            self._refused(step, exc)
        else:
            self._info("leader.attempt_failed", step=step, reason=describe(exc))
        return False

    def _refused(self, step: str, exc: ApiError) -> None:
        """The Lease cannot be had for want of RBAC or of its namespace: said once per change."""
        lease = f"{self.namespace}/{self.name}"
        if exc.status == 403:
            need = (
                f"grant this process's service account get, create and update on"
                f" leases.coordination.k8s.io in namespace {self.namespace}"
            )
        else:
            need = f"create namespace {self.namespace}, or give --leader-election-namespace"
        reason = f"{step} of Lease {lease} refused ({exc}): {need}"
        if reason != self.refusal:
            self.refusal = reason
            self._warning("leader.lease_refused", lease=lease, reason=reason, leading=self.leading)

    def _accepted(self) -> None:
        if self.refusal is not None:
            self.refusal = None
            self._info("leader.lease_accepted", lease=f"{self.namespace}/{self.name}")

    # --- the loop (acquire, renew, release) ------------------------------------------------------

    async def run(self) -> None:
        """Contend until cancelled (it never returns otherwise): acquire, renew while able,
        contend again; release on exit. Nothing an attempt or a listener raises ends it."""
        try:
            while True:
                try:
                    held = await self.try_acquire_or_renew()
                except Exception as exc:  # a listener's: the election must outlive it
                    self._warning("leader.listener_failed", reason=describe(exc))
                    held = False
                await self._clock.sleep(self._pause(held))
        finally:
            await self._release()

    def _pause(self, renewed: bool) -> float:
        """Until the next attempt. A leader renews every retry period, but never so late that the
        renewal has no time left: after a slow renewal, halfway to the renew deadline; after a
        failed one, at the deadline at the latest, so the lapse is told when it happens. A
        candidate waits a jittered retry period (leaderelection.go's JitterUntil)."""
        retry = self.timing.retry_period
        lapses_at = self._lapses_at()
        if self._held and lapses_at is not None:
            left = max(0.0, lapses_at - self._clock.monotonic())
            return min(retry, left / 2 if renewed else left)
        return retry * (1.0 + random.random() * JITTER_FACTOR)  # noqa: S311 - spread, not crypto

    async def _release(self) -> None:
        """client-go's tryRelease: read the Lease and, if this process holds it as read, write it
        released on the version read; a 409 (a renewal the cancel interrupted landed after all)
        is retried once on a fresh read. client-go trusts its last observation of the holder;
        this reads it, so a Lease another took meanwhile is left alone."""
        self._set_held(False, since=self._clock.monotonic())
        if not self._is_holder():
            return
        timeout = self.timing.renew_deadline
        for last in (False, True):
            try:
                self._lease = await self._api.get(
                    f"{self._path}/{quote(self.name, safe='')}", timeout=timeout
                )
            except Exception as exc:
                self._failed("release", exc)
                return
            record = Record.of(self._lease)
            if record.holder != self.identity:
                return
            now = micro_time(self._clock.wall())
            released = Record("", 1, now, now, record.transitions)
            try:
                await self._write("PUT", released, self._clock.monotonic(), timeout)
            except ApiError as exc:
                if last or exc.status != 409:
                    self._failed("release", exc)
                    return
                continue
            except Exception as exc:
                self._failed("release", exc)
                return
            self._info("leader.released")
            return

    def _handover_since(self) -> float:
        """From when notices may have gone unsent: another holder was last seen renewing then (its
        write up to one jittered retry earlier), and may have stopped leading right after. With
        no other holder seen since this process last led, that is before its own lapse began."""
        return self._other_seen - self.timing.retry_period * (1.0 + JITTER_FACTOR)

    def _follow_leading(self, *, lapsed: bool = False) -> None:
        """Tell `on_change` what `leading` did: lost when it is False, or was False at some moment
        since the last attempt (`lapsed`); acquired when it is True (again)."""
        leading = self.leading
        if self._held and (lapsed or not leading):
            self._set_held(False, since=self._clock.monotonic())
        if leading and not self._held:
            self._set_held(True, since=self._handover_since())

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

    def _warning(self, event: str, **fields: Any) -> None:
        if self._log is not None:
            self._log.warning(event, identity=self.identity, **fields)


def describe(exc: Exception) -> str:
    """An error as a log field: its type, and its text only where that is ours or the OS's (an
    ApiError's status and the Status message, a socket's error), never an answer's body."""
    text = str(exc) if isinstance(exc, (ApiError, OSError, TimeoutError)) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
