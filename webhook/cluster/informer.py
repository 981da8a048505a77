"""The informer: Namespaces and NetworkPolicies, listed then watched, into a `ClusterState`.

Invariants:
- What is kept, and how readers see it, is `webhook.cluster.state`'s; every list and event is
  applied to it synchronously, between two awaits.
- LIST is paginated and consistent (resourceVersion unset); WATCH resumes from the last
  resourceVersion seen, bookmarks included. A 410 Gone re-lists that resource; any other failure
  re-watches after a capped, jittered backoff. The state is synced once both have been listed.
- The state's transitions are reported as `fence.lost` / `fence.restored` log lines and counted in
  `kubefence_fence_transitions_total`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from webhook.cluster.apiserver import ApiError, Transport
from webhook.cluster.state import (
    ClusterState,
    NamespaceRecord,
    Resource,
    Transition,
    namespace_record,
)
from webhook.config import Settings
from webhook.decisionlog import get_logger
from webhook.metrics import Metrics
from webhook.netpol import PolicyFacts

PAGE_SIZE = 500
LIST_TIMEOUT = 60.0  # seconds for one page
WATCH_SECONDS = 300  # each watch asks the server to end it after 1-2x this (client-go's choice)
IDLE_TIMEOUT = 150.0  # no event or bookmark (~1/min) for this long: the stream is dead


PATHS = {
    Resource.NAMESPACES: "/api/v1/namespaces",
    Resource.NETWORK_POLICIES: "/apis/networking.k8s.io/v1/networkpolicies",
}


# --- the list/watch loops ------------------------------------------------------------------------


class Host(Protocol):
    """What the informer reads from the running server (`webhook.server.Runtime` is one)."""

    settings: Settings
    metrics: Metrics


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter: a delay in [base/2, base], base = initial * 2^n."""

    initial: float = 0.5
    cap: float = 30.0

    def delay(self, failures: int) -> float:
        base = min(self.cap, self.initial * 2.0 ** min(failures, 32))
        return base * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography


@dataclass
class Stream:
    """One resource's list/watch progress: where to resume, whether it is live, what happened."""

    resource_version: str = ""
    connected: bool = False
    healthy_at: float = field(default_factory=time.monotonic)
    failures: int = 0  # consecutive, for the backoff
    lists: int = 0
    expired: int = 0  # 410 Gone answers that forced a re-list
    errors: int = 0

    def failed(self, exc: BaseException, backoff: Backoff) -> tuple[bool, float]:
        """Record a failed list or watch: (410 Gone, so re-list; seconds to wait first).

        A first 410 re-lists at once; anything else, and repeated failures, back off.
        """
        self.connected = False
        expired = isinstance(exc, ApiError) and exc.expired
        if expired:
            self.resource_version = ""
            self.expired += 1
        else:
            self.errors += 1
        delay = 0.0 if expired and not self.failures else backoff.delay(self.failures)
        self.failures += 1
        return expired, delay


class ShortWatch(Exception):
    """The server ended a watch at once; re-watching at once would spin."""


class Informer:
    """Lists and watches Namespaces and NetworkPolicies into a `ClusterState`."""

    def __init__(
        self,
        transport: Transport,
        *,
        page_size: int = PAGE_SIZE,
        backoff: Backoff | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.state = ClusterState()
        self.streams = {resource: Stream() for resource in Resource}
        self._transport = transport
        self._page_size = page_size
        self._backoff = backoff or Backoff()
        self._idle_timeout = idle_timeout
        self._log = get_logger()

    @property
    def synced(self) -> bool:
        return self.state.synced

    def staleness(self) -> float:
        """Seconds since every watch was last known healthy (open); 0 while all are."""
        now = time.monotonic()
        return max(0.0 if s.connected else now - s.healthy_at for s in self.streams.values())

    async def run(self, host: Host) -> None:
        """List and watch both resources until cancelled."""
        async with asyncio.TaskGroup() as group:
            for resource in Resource:
                group.create_task(self._reflect(resource, host))

    async def _reflect(self, resource: Resource, host: Host) -> None:
        stream = self.streams[resource]
        while True:
            try:
                if not stream.resource_version:
                    await self._list(resource, host)
                await self._watch(resource, host)
            except Exception as exc:
                expired, delay = stream.failed(exc, self._backoff)
                self._log.warning(
                    "informer.relist" if expired else "informer.retry",
                    resource=resource.value,
                    reason=_describe(exc),
                    retry_in=round(delay, 3),
                )
                await asyncio.sleep(delay)

    async def _list(self, resource: Resource, host: Host) -> None:
        started = time.monotonic()
        records: list[NamespaceRecord] = []
        policies: list[PolicyFacts] = []
        version, token = "", ""
        while True:
            query = [("limit", str(self._page_size))]
            if token:
                query.append(("continue", token))
            page = await self._transport.get(PATHS[resource], query, timeout=LIST_TIMEOUT)
            meta = page.get("metadata") or {}
            version = str(meta.get("resourceVersion") or version)
            for item in page.get("items") or ():
                if resource is Resource.NAMESPACES:
                    records.append(namespace_record(item))
                else:
                    policies.append(self.state.policy(item))
            token = str(meta.get("continue") or "")
            if not token:
                break
        settings = host.settings
        if resource is Resource.NAMESPACES:
            transitions = self.state.replace_namespaces(records, version, settings)
        else:
            transitions = self.state.replace_policies(policies, version, settings)
        stream = self.streams[resource]
        stream.resource_version = version
        stream.lists += 1
        self._log.info(
            "informer.listed",
            resource=resource.value,
            items=len(records) + len(policies),
            resource_version=version,
            seconds=round(time.monotonic() - started, 3),
        )
        self._report(transitions, host)

    async def _watch(self, resource: Resource, host: Host) -> None:
        stream = self.streams[resource]
        seconds = random.randint(WATCH_SECONDS, 2 * WATCH_SECONDS)  # noqa: S311 - spread, not crypto
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", stream.resource_version),
            ("timeoutSeconds", str(seconds)),
        ]
        idle = False
        async with self._transport.watch(PATHS[resource], query, timeout=seconds + 60.0) as lines:
            opened = stream.healthy_at = time.monotonic()
            stream.connected, stream.failures = True, 0
            try:
                while True:
                    try:
                        async with asyncio.timeout(self._idle_timeout):
                            line = await lines.readline()
                    except TimeoutError:
                        idle = True
                        raise
                    if not line:
                        if time.monotonic() - opened < 1.0:
                            raise ShortWatch("the server ended the watch at once")
                        return  # the server's timeoutSeconds: watch again from here
                    stream.healthy_at = time.monotonic()
                    self._handle(resource, orjson.loads(line), host)
            finally:
                stream.connected = False
                if not idle:  # it was open until now; an idle stream was last healthy earlier
                    stream.healthy_at = time.monotonic()

    def _handle(self, resource: Resource, event: Mapping[str, Any], host: Host) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            raise ApiError(int(obj.get("code") or 500), str(obj.get("message") or "watch error"))
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self._report(self.state.apply(resource, str(kind), obj, host.settings), host)
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self.streams[resource].resource_version = str(version)

    def _report(self, transitions: Iterable[Transition], host: Host) -> None:
        for t in transitions:
            host.metrics.fence_transitions.labels(t.event, t.direction.value).inc()
            emit = self._log.warning if t.event == "lost" else self._log.info
            emit(
                f"fence.{t.event}",
                namespace=t.namespace,
                direction=t.direction.value,
                policy=t.policy,
                resource_version=t.resource_version,
            )


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
