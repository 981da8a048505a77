"""The list/watch loop: one collection of the API server, listed, then watched, into a `Sink`.

The informer (Namespaces, NetworkPolicies) and the drift watch (kubefence's own admission
objects) both run it; what they keep of the objects is their sink's business.

Invariants:
- LIST is consistent (resourceVersion unset; paginated unless `page_size` is None) and its items
  are reduced page by page, so no whole list of raw objects is held; the sink receives the list
  in one synchronous call, with the list's resourceVersion.
- WATCH resumes from the last resourceVersion seen, bookmarks included; every event reaches the
  sink synchronously, between two awaits. An ERROR event raises it as ApiError.
- A 410 Gone re-lists at once (the first time); any other failure, a watch the server ends at
  once, and a stream silent for `idle_timeout` watch again after a capped, jittered backoff.
- `Stream` tells how the collection is doing: `connected` while a watch is open, `healthy_at`
  when it was last known healthy (the moment it closed; for a silent stream, its last line).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import orjson

from webhook.cluster.apiserver import ApiError, Transport, pages

PAGE_SIZE = 500
LIST_TIMEOUT = 60.0  # seconds for one page
WATCH_SECONDS = 300  # each watch asks the server to end it after 1-2x this (client-go's choice)
IDLE_TIMEOUT = 150.0  # no event or bookmark (~1/min) for this long: the stream is dead
EVENTS = ("ADDED", "MODIFIED", "DELETED")

_T = TypeVar("_T")


class Sink(Protocol[_T]):
    """Where a reflector's objects go; every call is synchronous."""

    def reduce(self, obj: Mapping[str, Any]) -> _T:
        """What is kept of one listed object (called as its page arrives)."""
        ...

    def replace(self, items: list[_T], resource_version: str, started: float) -> None:
        """A whole list, reduced; `started` is when listing began (time.monotonic)."""
        ...

    def apply(self, event: str, obj: Mapping[str, Any]) -> None:
        """One ADDED, MODIFIED or DELETED watch event."""
        ...


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
    """One collection's list/watch progress: where to resume, whether it is live, what happened."""

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


@dataclass(frozen=True)
class Collection:
    """What a reflector lists and watches, and how its log lines name it."""

    path: str
    selector: Sequence[tuple[str, str]] = ()  # a fieldSelector, say; sent with LIST and WATCH
    page_size: int | None = PAGE_SIZE  # None: one unpaged LIST (a handful of objects)
    event_prefix: str = "reflector"  # "<prefix>.relist", "<prefix>.retry"
    log_fields: Mapping[str, str] = field(default_factory=dict)  # first fields of those lines


class Reflector(Generic[_T]):
    """Lists, then watches, one collection into a sink, until cancelled."""

    def __init__(
        self,
        transport: Transport,
        collection: Collection,
        sink: Sink[_T],
        stream: Stream,
        *,
        log: Any,
        backoff: Backoff | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.stream = stream
        self._transport = transport
        self._collection = collection
        self._sink = sink
        self._log = log
        self._backoff = backoff or Backoff()
        self._idle_timeout = idle_timeout

    async def run(self) -> None:
        stream = self.stream
        while True:
            try:
                if not stream.resource_version:
                    await self.list()
                await self._watch()
            except Exception as exc:
                expired, delay = stream.failed(exc, self._backoff)
                prefix = self._collection.event_prefix
                self._log.warning(
                    f"{prefix}.relist" if expired else f"{prefix}.retry",
                    **self._collection.log_fields,
                    reason=_describe(exc),
                    retry_in=round(delay, 3),
                )
                await asyncio.sleep(delay)

    async def list(self) -> None:
        """List the collection into the sink; the watch then resumes from the list's version."""
        started = time.monotonic()
        c = self._collection
        items: list[_T] = []
        version = ""
        async for page in pages(
            self._transport, c.path, c.selector, page_size=c.page_size, timeout=LIST_TIMEOUT
        ):
            version = str((page.get("metadata") or {}).get("resourceVersion") or version)
            items.extend(self._sink.reduce(item) for item in page.get("items") or ())
        self._sink.replace(items, version, started)
        self.stream.resource_version = version
        self.stream.lists += 1

    async def _watch(self) -> None:
        stream, c = self.stream, self._collection
        seconds = random.randint(WATCH_SECONDS, 2 * WATCH_SECONDS)  # noqa: S311 - spread, not crypto
        query = [
            *c.selector,
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", stream.resource_version),
            ("timeoutSeconds", str(seconds)),
        ]
        idle = False
        async with self._transport.watch(c.path, query, timeout=seconds + 60.0) as lines:
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
                    self._handle(orjson.loads(line))
            finally:
                stream.connected = False
                if not idle:  # it was open until now; an idle stream was last healthy earlier
                    stream.healthy_at = time.monotonic()

    def _handle(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            raise ApiError(int(obj.get("code") or 500), str(obj.get("message") or "watch error"))
        if kind in EVENTS:
            self._sink.apply(str(kind), obj)
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self.stream.resource_version = str(version)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
