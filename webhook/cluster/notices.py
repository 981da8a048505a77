"""One notifier per cluster: the informer's and the drift watch's notices, sent by the leader only.

A notice is one log line (`fence.lost`, `fence.restored`, `webhook.drift`,
`webhook.drift_resolved`) and its event counter. Every replica observes the same cluster; with
leader election (`webhook.cluster.leaderelection`) only the Lease's holder sends, so a notice
appears once per cluster, not once per replica or worker. What a replica *knows* (its view, its
gauges) is its own on every replica; only the notices are elected.

Invariants:
- `emit` is synchronous (the informer calls it between two awaits) and never does I/O.
- Without an elector every notice is sent. With one, a notice is sent only while `leading`, both
  when observed and when sent. A follower keeps what it observed for `KEEP_SECONDS`; on becoming
  leader it sends those observed since the previous holder may have stopped leading, less the
  time the pipeline takes, marked `replayed: true`: a handover may repeat a notice of its last
  seconds, never drop one.
- The pipeline is bounded: with a lister, a notice is sent (or kept, if this process no longer
  leads) at most `settle + LIST_TIMEOUT` after it was observed, the wait for a turn to list
  included; so a leader that stops may leave unsent only what it observed that long before.
- With a workload lister, a `fence.lost` names the workloads left in that namespace: listed live
  (metadata only, at most `WORKLOAD_NAMES` names, within `LIST_TIMEOUT`) `SETTLE_SECONDS` after
  the fence went. A workload another replica admitted while the fence went (the cross-replica
  window) is persisted after that replica's answer, which can be after this replica saw the
  fence go: the settle covers that and replicas' informers lagging each other by up to it. A
  failed list is said (`workloads_error`), never waited on.
- Notices are sent in the order observed: their lists run concurrently (at most `LISTS_AT_ONCE`
  namespaces), one consumer sends them in turn.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

from webhook.cluster.apiserver import METADATA_ONLY, RUNNING_PODS, Getter
from webhook.workloads import WORKLOAD_TEMPLATES

KEEP_SECONDS = 60.0  # a follower's memory of what it did not send: several lease durations
KEEP_MAX = 10_000
WORKLOAD_NAMES = 20  # named in one fence.lost; the rest are counted
LIST_TIMEOUT = 5.0
SETTLE_SECONDS = 2.0
LISTS_AT_ONCE = 8

_KINDS = {
    "pods": "Pod",
    "replicationcontrollers": "ReplicationController",
    "deployments": "Deployment",
    "replicasets": "ReplicaSet",
    "statefulsets": "StatefulSet",
    "daemonsets": "DaemonSet",
    "jobs": "Job",
    "cronjobs": "CronJob",
}


@dataclass(frozen=True)
class Notice:
    event: str
    fields: Mapping[str, Any]
    warning: bool = False
    count: Callable[[], None] | None = None  # its event counter, counted when sent
    workloads_of: str | None = None  # a namespace whose workloads the line names
    replayed: bool = False


@dataclass
class _Kept:
    observed_at: float
    notice: Notice


@dataclass
class Notices:
    """Sends notices while this process leads (always, without an elector)."""

    log: Any
    lister: Getter | None = None  # lists the workloads a fence.lost names
    clock: Callable[[], float] = time.monotonic
    leading: Callable[[], bool] = lambda: True
    settle: float = SETTLE_SECONDS
    sent: int = 0
    _kept: deque[_Kept] = field(default_factory=deque)
    _queue: asyncio.Queue[asyncio.Future[Notice]] = field(default_factory=asyncio.Queue)
    _lists: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(LISTS_AT_ONCE))

    def emit(self, notice: Notice) -> None:
        if not self.leading():
            self._keep(notice)
        elif self.lister is None:
            self._send(notice)
        elif notice.workloads_of is None:
            ready: asyncio.Future[Notice] = asyncio.get_running_loop().create_future()
            ready.set_result(notice)
            self._queue.put_nowait(ready)
        else:
            self._queue.put_nowait(
                asyncio.ensure_future(self._named(notice, self.lister, notice.workloads_of))
            )

    def leadership_changed(self, leading: bool, since: float) -> None:
        """The elector's listener: on taking over, send what the previous leader may not have:
        it stopped leading from `since`, and was still listing for what it observed up to one
        pipeline earlier (its queue is cancelled when it stops)."""
        if not leading:
            return
        start = since - self.pipeline_seconds()
        kept, self._kept = self._kept, deque()
        for item in kept:
            if item.observed_at >= start:
                self.emit(replace(item.notice, replayed=True))

    async def run(self, host: object = None) -> None:
        """Send queued notices in order, each fence.lost with its workloads, until cancelled."""
        try:
            while True:
                notice = await (await self._queue.get())
                if self.leading():
                    self._send(notice)
                else:
                    self._keep(notice)
        finally:  # shutting down: the lists still to come are not waited for
            while not self._queue.empty():
                self._queue.get_nowait().cancel()

    def pipeline_seconds(self) -> float:
        """The longest a notice takes from observed to sent: the settle and the list."""
        return self.settle + LIST_TIMEOUT if self.lister is not None else 0.0

    async def _named(self, notice: Notice, lister: Getter, namespace: str) -> Notice:
        await asyncio.sleep(self.settle)
        try:  # the wait for a turn counts in the list's time: the pipeline's bound
            async with asyncio.timeout(LIST_TIMEOUT), self._lists:
                named = await workloads(lister, namespace)
        except TimeoutError as exc:
            named = {"workloads_error": type(exc).__name__}
        return replace(notice, fields={**notice.fields, **named})

    def _send(self, notice: Notice) -> None:
        self.sent += 1
        if notice.count is not None:
            notice.count()
        fields = {**notice.fields, "replayed": True} if notice.replayed else notice.fields
        (self.log.warning if notice.warning else self.log.info)(notice.event, **fields)

    def _keep(self, notice: Notice) -> None:
        now = self.clock()
        self._kept.append(_Kept(now, notice))
        while self._kept and (
            len(self._kept) > KEEP_MAX or self._kept[0].observed_at < now - KEEP_SECONDS
        ):
            self._kept.popleft()


async def workloads(
    getter: Getter, namespace: str, *, limit: int = WORKLOAD_NAMES, timeout: float = LIST_TIMEOUT
) -> dict[str, Any]:
    """The workloads in a namespace as log fields: `workloads` (Kind/name, at most `limit`),
    `workloads_more` (how many more), or `workloads_error` when the lists failed or were late."""
    segment = quote(namespace, safe="")

    async def one(group: str, resource: str) -> tuple[list[str], int]:
        base = f"/apis/{group}/v1" if group else "/api/v1"
        query = [("limit", str(limit))]
        if resource == "pods":
            query.append(("fieldSelector", RUNNING_PODS))  # ended Pods reach nothing
        page = await getter.get(
            f"{base}/namespaces/{segment}/{resource}", query, timeout=timeout, accept=METADATA_ONLY
        )
        names = [
            f"{_KINDS[resource]}/{(item.get('metadata') or {}).get('name', '')}"
            for item in page.get("items") or ()
        ]
        remaining = (page.get("metadata") or {}).get("remainingItemCount")
        return names, remaining if isinstance(remaining, int) else 0

    try:
        async with asyncio.timeout(timeout), asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(g, r)) for g, r in WORKLOAD_TEMPLATES]
    except Exception as exc:
        while isinstance(exc, ExceptionGroup):  # the TaskGroup's: name the first cause
            exc = exc.exceptions[0]
        return {"workloads_error": f"{type(exc).__name__}: {exc}".rstrip(": ")}
    names = [name for task in tasks for name in task.result()[0]]
    more = sum(task.result()[1] for task in tasks) + max(0, len(names) - limit)
    return {"workloads": names[:limit], "workloads_more": more}
