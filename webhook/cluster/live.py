"""The live cluster: the informer's facts for each decision, and a live read before a denial stands.

Invariants:
- `LiveView` answers from the informer's state, without I/O or locks.
- `confirm` reads one namespace consistently from the API server (the Namespace, its
  NetworkPolicies with resourceVersion unset, and whether any Pod in it still runs) within the
  caller's time; concurrent callers for a namespace share one read, and an answer is reused for
  about a second — except by a caller that asks for a read made after a given instant (before a
  fence goes: a remembered read may predate a Pod created since). A failed or late read yields
  None, so the denial it was to confirm stands.
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


class NamespaceReader:
    """Consistent live reads of one namespace: one in flight per namespace, remembered briefly."""

    def __init__(
        self,
        transport: Transport,
        *,
        remember: float = REMEMBER_SECONDS,
        read_timeout: float = READ_TIMEOUT,
        page_size: int = 500,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.reads = 0  # reads sent to the API server
        self._limits = limits
        self._transport = transport
        self._remember = remember
        self._read_timeout = read_timeout
        self._page_size = page_size
        # namespace -> (when the read started, the read)
        self._inflight: dict[str, tuple[float, asyncio.Task[NamespaceFacts]]] = {}
        # namespace -> (when the read started, until when it is reused, the answer)
        self._recent: dict[str, tuple[float, float, NamespaceFacts]] = {}

    async def read(
        self, namespace: str, timeout: float, *, not_before: float | None = None
    ) -> NamespaceFacts:
        """The namespace as the API server has it now; raises when the read fails or is late.

        With `not_before` (a `time.monotonic()` instant), only a read started then or later is
        used: a remembered or in-flight read from before is not.
        """
        now = time.monotonic()
        oldest = now if not_before is None else not_before
        hit = self._recent.get(namespace)
        if hit is not None and hit[1] > now and (not_before is None or hit[0] >= oldest):
            return hit[2]
        inflight = self._inflight.get(namespace)
        if inflight is not None and (not_before is None or inflight[0] >= oldest):
            task = inflight[1]
        else:
            self.reads += 1
            task = asyncio.create_task(self._fetch(namespace))
            self._inflight[namespace] = (now, task)
            task.add_done_callback(functools.partial(self._done, namespace, now))
        async with asyncio.timeout(timeout):
            return await asyncio.shield(task)

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
        self, namespace: str, timeout: float, *, not_before: float | None = None
    ) -> ClusterView | None:
        try:
            facts = await self.reader.read(namespace, timeout, not_before=not_before)
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
