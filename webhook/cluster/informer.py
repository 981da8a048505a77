"""The informer: Namespaces and NetworkPolicies, listed then watched, into a `ClusterState`.

Invariants:
- What is kept, and how readers see it, is `webhook.cluster.state`'s; every list and event is
  applied to it synchronously, between two awaits.
- Listing and watching are `webhook.cluster.reflector`'s: consistent paginated LISTs, WATCH from
  the last resourceVersion with bookmarks, a 410 Gone re-lists that resource, any other failure
  re-watches after a capped, jittered backoff. The state is synced once both have been listed.
- The state's transitions are reported as `fence.lost` / `fence.restored` log lines and counted in
  `kubefence_fence_transitions_total`; given `notices` (`webhook.cluster.notices`), through them:
  only the leader of the replicas sends and counts them, each `fence.lost` naming the workloads
  left in its namespace. The state itself is every replica's.
- After every list the heap is frozen (`gc.freeze`): the state just built is long-lived, and the
  collector's full passes, which walked all of it and stalled the loop for hundreds of ms during
  a re-list, skip it from then on. Frozen objects are still freed when no longer referenced; only
  garbage in reference cycles at that instant is never collected, and the state holds no cycles.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from webhook.cluster.apiserver import Transport
from webhook.cluster.notices import Notice, Notices
from webhook.cluster.reflector import (
    IDLE_TIMEOUT,
    PAGE_SIZE,
    Backoff,
    Collection,
    Reflector,
    Sink,
    Stream,
)
from webhook.cluster.state import (
    ClusterState,
    NamespaceRecord,
    Resource,
    Transition,
    namespace_record,
)
from webhook.decisionlog import get_logger
from webhook.metrics import Metrics
from webhook.netpol import DEFAULT_LIMITS, Limits, PolicyFacts
from webhook.settings import Settings

PATHS = {
    Resource.NAMESPACES: "/api/v1/namespaces",
    Resource.NETWORK_POLICIES: "/apis/networking.k8s.io/v1/networkpolicies",
}
_T = TypeVar("_T")


class Host(Protocol):
    """What the informer reads from the running server (`webhook.server.Runtime` is one)."""

    settings: Settings
    metrics: Metrics


class Informer:
    """Lists and watches Namespaces and NetworkPolicies into a `ClusterState`."""

    def __init__(
        self,
        transport: Transport,
        *,
        page_size: int = PAGE_SIZE,
        backoff: Backoff | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
        limits: Limits = DEFAULT_LIMITS,
        notices: Notices | None = None,
    ) -> None:
        self.state = ClusterState(limits)
        self.notices = notices
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
                group.create_task(self._reflector(resource, host).run())

    async def relist(self, host: Host) -> None:
        """List both resources again now, as a 410 Gone would (what that costs is benchmarked)."""
        for resource in Resource:
            await self._reflector(resource, host).list()

    def _reflector(
        self, resource: Resource, host: Host
    ) -> Reflector[NamespaceRecord] | Reflector[PolicyFacts]:
        state = self.state
        if resource is Resource.NAMESPACES:
            records = _Facts(self, resource, host, namespace_record, state.replace_namespaces)
            return self._over(resource, records)
        policies = _Facts(self, resource, host, state.policy, state.replace_policies)
        return self._over(resource, policies)

    def _over(self, resource: Resource, sink: Sink[_T]) -> Reflector[_T]:
        collection = Collection(
            PATHS[resource],
            page_size=self._page_size,
            event_prefix="informer",
            log_fields={"resource": resource.value},
        )
        return Reflector(
            self._transport,
            collection,
            sink,
            self.streams[resource],
            log=self._log,
            backoff=self._backoff,
            idle_timeout=self._idle_timeout,
        )

    def _report(self, transitions: Iterable[Transition], host: Host) -> None:
        for policy in self.state.drain_refused():
            host.metrics.policies_refused.inc()
            self._log.warning(
                "policy.refused",
                namespace=policy.namespace,
                name=policy.name,
                reason=policy.refused,
                directions=sorted(policy.types),
            )
        for t in transitions:
            counter = host.metrics.fence_transitions.labels(t.event, t.direction.value)
            fields = {
                "namespace": t.namespace,
                "direction": t.direction.value,
                "policy": t.policy,
                "resource_version": t.resource_version,
            }
            if self.notices is not None:
                lost = t.event == "lost"
                self.notices.emit(
                    Notice(
                        f"fence.{t.event}",
                        fields,
                        warning=lost,
                        count=counter.inc,
                        workloads_of=t.namespace if lost else None,
                    )
                )
                continue
            counter.inc()
            (self._log.warning if t.event == "lost" else self._log.info)(
                f"fence.{t.event}", **fields
            )


class _Facts(Generic[_T]):
    """One resource's lists and events: applied to the informer's state, transitions reported."""

    def __init__(
        self,
        informer: Informer,
        resource: Resource,
        host: Host,
        reduce: Callable[[Mapping[str, Any]], _T],
        replace: Callable[[list[_T], str, Settings], list[Transition]],
    ) -> None:
        self.reduce = reduce
        self._informer = informer
        self._resource = resource
        self._host = host
        self._replace = replace

    def replace(self, items: list[_T], resource_version: str, started: float) -> None:
        transitions = self._replace(items, resource_version, self._host.settings)
        self._informer._log.info(
            "informer.listed",
            resource=self._resource.value,
            items=len(items),
            resource_version=resource_version,
            seconds=round(time.monotonic() - started, 3),
        )
        self._informer._report(transitions, self._host)
        gc.freeze()  # see the module docstring: the next full collections skip this state

    def apply(self, event: str, obj: Mapping[str, Any]) -> None:
        informer, settings = self._informer, self._host.settings
        informer._report(informer.state.apply(self._resource, event, obj, settings), self._host)
