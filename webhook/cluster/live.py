"""The live cluster: the informer's facts for each decision, and a live read before a denial stands.

Invariants:
- `LiveView` answers from the informer's state, without I/O or locks.
- `confirm` reads one namespace consistently from the API server (the Namespace, its
  NetworkPolicies with resourceVersion unset, and whether any Pod in it still runs) within the
  caller's time; concurrent callers for a namespace share one read, and an answer is reused for
  about a second — except by a caller that asks for a read made after a given instant (before a
  fence goes: a remembered read may predate a Pod created since). Those wait together for the
  one read that starts when the one in flight is done: per namespace at most one read in flight
  and one waiting, however many ask. One caller (the peer's address, or its verified client
  certificate) has at most `READS_PER_CALLER` reads of its own started at once; the rest of its
  storm waits for them, not anyone else. A failed or late read yields None, so the denial it
  was to confirm stands.
- `build` puts the informer and the reader over one API client; its owner (`kubefence serve`)
  opens it before serving and closes it after.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import TYPE_CHECKING
from urllib.parse import quote

from webhook.cluster.apiserver import METADATA_ONLY, RUNNING_PODS, ApiError, Transport, pages
from webhook.cluster.informer import Informer
from webhook.cluster.notices import Notices
from webhook.cluster.reflector import Backoff
from webhook.cluster.state import NamespaceRecord, namespace_record
from webhook.cluster.transport import KubeTransport
from webhook.cluster.view import ClusterView, NamespaceFacts, namespace_facts
from webhook.decisionlog import get_logger
from webhook.label_trust import TrustIndex
from webhook.labels import NAMESPACE_NAME_LABEL
from webhook.netpol import DEFAULT_LIMITS, Limits, PolicyFacts, analyse_policy

if TYPE_CHECKING:
    from webhook.cluster.transport import ApiClient

REMEMBER_SECONDS = 1.0  # an answer is reused this long after its read started
READ_TIMEOUT = 5.0  # a shared read gives up after this, whoever still waits for it
READS_PER_CALLER = 8  # reads one caller (a peer address, or a client certificate) may have started


class _CallerReads:
    __slots__ = ("semaphore", "users")

    def __init__(self, limit: int) -> None:
        self.semaphore = asyncio.Semaphore(limit)
        self.users = 0  # waiting for a turn, or with a read of theirs not done: goes with the last


class NamespaceReader:
    """Consistent live reads of one namespace: at most one in flight and one waiting to start
    per namespace, at most `per_caller` started for one caller at once, remembered briefly."""

    def __init__(
        self,
        transport: Transport,
        *,
        remember: float = REMEMBER_SECONDS,
        read_timeout: float = READ_TIMEOUT,
        page_size: int = 500,
        limits: Limits = DEFAULT_LIMITS,
        per_caller: int = READS_PER_CALLER,
    ) -> None:
        self.reads = 0  # reads sent to the API server
        self._limits = limits
        self._transport = transport
        self._remember = remember
        self._read_timeout = read_timeout
        self._page_size = page_size
        self._per_caller = per_caller
        # namespace -> (when the read started, the read)
        self._inflight: dict[str, tuple[float, asyncio.Task[NamespaceFacts]]] = {}
        # namespace -> the read that starts once the one in flight is done (not started yet)
        self._next: dict[str, asyncio.Task[NamespaceFacts]] = {}
        # namespace -> (when the read started, until when it is reused, the answer)
        self._recent: dict[str, tuple[float, float, NamespaceFacts]] = {}
        # caller -> [reads it started that are not done, the turn to start one]
        self._callers: dict[str, _CallerReads] = {}

    async def read(
        self,
        namespace: str,
        timeout: float,
        *,
        not_before: float | None = None,
        caller: str = "",
    ) -> NamespaceFacts:
        """The namespace as the API server has it now; raises when the read fails or is late.

        With `not_before` (a `time.monotonic()` instant), only a read started then or later is
        used: a remembered or in-flight read from before is not; such callers wait for the one
        read that starts after the one in flight, together (it started after all of them came).
        A caller who has `per_caller` reads of its own started and not done waits for one to
        end before it starts another (joining one already there costs it nothing), within
        `timeout` like the rest.
        """
        async with asyncio.timeout(timeout):
            task = self._usable(namespace, not_before)
            if isinstance(task, NamespaceFacts):
                return task
            if task is None:
                turn = self._callers.get(caller)
                if turn is None:
                    turn = self._callers[caller] = _CallerReads(self._per_caller)
                turn.users += 1
                try:
                    await turn.semaphore.acquire()
                except BaseException:
                    self._leave(caller, turn)
                    raise
                task = self._usable(namespace, not_before)  # another may have started it
                if task is not None:
                    turn.semaphore.release()
                    self._leave(caller, turn)
                    if isinstance(task, NamespaceFacts):
                        return task
                else:
                    task = self._start(namespace)
                    task.add_done_callback(lambda _: self._finished(caller, turn))
            return await asyncio.shield(task)

    def _usable(
        self, namespace: str, not_before: float | None
    ) -> NamespaceFacts | asyncio.Task[NamespaceFacts] | None:
        """A read this caller may take the answer of (remembered, in flight, or waiting to
        start), or None."""
        now = time.monotonic()
        oldest = now if not_before is None else not_before
        hit = self._recent.get(namespace)
        if hit is not None and hit[1] > now and (not_before is None or hit[0] >= oldest):
            return hit[2]
        inflight = self._inflight.get(namespace)
        if inflight is not None and (not_before is None or inflight[0] >= oldest):
            return inflight[1]
        return self._next.get(namespace)  # it has not started: it starts after `not_before`

    def _start(self, namespace: str) -> asyncio.Task[NamespaceFacts]:
        """A read of `namespace` now, or once the one in flight is done."""
        inflight = self._inflight.get(namespace)
        if inflight is None:
            return self._fetch_now(namespace)
        task = asyncio.create_task(self._after(namespace, inflight[1]))
        self._next[namespace] = task
        return task

    async def _after(
        self, namespace: str, previous: asyncio.Task[NamespaceFacts]
    ) -> NamespaceFacts:
        await asyncio.wait({previous})  # its outcome is its own callers'
        if self._next.get(namespace) is asyncio.current_task():
            del self._next[namespace]  # from now on it has started: later callers wait anew
        return await self._fetch_now(namespace)

    def _fetch_now(self, namespace: str) -> asyncio.Task[NamespaceFacts]:
        now = time.monotonic()
        self.reads += 1
        task = asyncio.create_task(self._fetch(namespace))
        self._inflight[namespace] = (now, task)
        task.add_done_callback(functools.partial(self._done, namespace, now))
        return task

    def _finished(self, caller: str, turn: _CallerReads) -> None:
        turn.semaphore.release()
        self._leave(caller, turn)

    def _leave(self, caller: str, turn: _CallerReads) -> None:
        turn.users -= 1
        if turn.users == 0 and self._callers.get(caller) is turn:
            del self._callers[caller]

    def _done(self, namespace: str, started: float, task: asyncio.Task[NamespaceFacts]) -> None:
        inflight = self._inflight.get(namespace)
        if inflight is not None and inflight[1] is task:
            del self._inflight[namespace]
        if task.cancelled() or task.exception() is not None:  # retrieved: nobody may be waiting
            return
        now = time.monotonic()
        self._recent = {k: v for k, v in self._recent.items() if v[1] > now}
        latest = self._recent.get(namespace)
        if latest is None or latest[0] <= started:
            self._recent[namespace] = (started, started + self._remember, task.result())

    async def _fetch(self, namespace: str) -> NamespaceFacts:
        async with asyncio.timeout(self._read_timeout), asyncio.TaskGroup() as group:
            record = group.create_task(self._namespace(namespace))
            policies = group.create_task(self._policies(namespace))
            running = group.create_task(self._running_pods(namespace))
        found = record.result()
        return namespace_facts(
            namespace,
            policies.result(),
            labels=found.labels if found else {NAMESPACE_NAME_LABEL: namespace},
            terminating=found.terminating if found else False,
            running_pods=running.result(),
            limits=self._limits,
        )

    async def _namespace(self, namespace: str) -> NamespaceRecord | None:
        try:
            obj = await self._transport.get(
                f"/api/v1/namespaces/{_segment(namespace)}", timeout=self._read_timeout
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return namespace_record(obj)

    async def _policies(self, namespace: str) -> list[PolicyFacts]:
        path = f"/apis/networking.k8s.io/v1/namespaces/{_segment(namespace)}/networkpolicies"
        return [
            analyse_policy(item, self._limits)
            async for page in pages(
                self._transport, path, page_size=self._page_size, timeout=self._read_timeout
            )
            for item in page.get("items") or ()
        ]

    async def _running_pods(self, namespace: str) -> int:
        """0 when no Pod in the namespace may still run, else at least 1 (a one-item list)."""
        page = await self._transport.get(
            f"/api/v1/namespaces/{_segment(namespace)}/pods",
            [("limit", "1"), ("fieldSelector", RUNNING_PODS)],
            timeout=self._read_timeout,
            accept=METADATA_ONLY,
        )
        items = page.get("items") or ()
        remaining = (page.get("metadata") or {}).get("remainingItemCount")
        return len(items) + (remaining if isinstance(remaining, int) else 0)


def _segment(name: str) -> str:
    return quote(name, safe="")


class ConfirmedView:
    """The cached view, but one namespace as just read from the API server."""

    def __init__(self, base: ClusterView, facts: NamespaceFacts) -> None:
        self._base = base
        self._facts = facts

    def namespace(self, name: str) -> NamespaceFacts | None:
        return self._facts if name == self._facts.name else self._base.namespace(name)

    @property
    def synced(self) -> bool:
        return True

    def staleness(self) -> float:
        return 0.0  # the namespace in question was read just now

    def label_trust(self) -> TrustIndex:
        return self._base.label_trust()


class LiveView:
    """A ClusterView over the informer, and the Confirmer that re-reads a namespace live."""

    def __init__(self, informer: Informer, reader: NamespaceReader) -> None:
        self.informer = informer
        self.reader = reader
        self._log = get_logger()

    def namespace(self, name: str) -> NamespaceFacts | None:
        return self.informer.state.get(name)

    @property
    def synced(self) -> bool:
        return self.informer.synced

    def staleness(self) -> float:
        return self.informer.staleness()

    def label_trust(self) -> TrustIndex:
        return self.informer.state.label_trust

    async def confirm(
        self,
        namespace: str,
        timeout: float,
        *,
        not_before: float | None = None,
        caller: str = "",
    ) -> ClusterView | None:
        try:
            facts = await self.reader.read(namespace, timeout, not_before=not_before, caller=caller)
        except Exception as exc:
            while isinstance(exc, ExceptionGroup):  # the TaskGroup's: name the first cause
                exc = exc.exceptions[0]
            reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
            self._log.warning("live_read.failed", namespace=namespace, reason=reason)
            return None
        return ConfirmedView(self, facts)


def build(
    api: ApiClient,
    *,
    backoff: Backoff | None = None,
    limits: Limits = DEFAULT_LIMITS,
    notices: Notices | None = None,
) -> LiveView:
    """An informer and a reader over one client, behind one view; policies analysed under
    `limits` (the config's at start: a changed `limits:` applies from the next start); the
    informer's notices sent through `notices` when given."""
    transport = KubeTransport(api)
    return LiveView(
        Informer(transport, backoff=backoff, limits=limits, notices=notices),
        NamespaceReader(transport, limits=limits),
    )
