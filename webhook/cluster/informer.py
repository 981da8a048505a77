"""The informer: Namespaces and NetworkPolicies, listed then watched, kept as per-namespace facts.

Invariants:
- Only the facts decisions read are kept: per namespace its labels and whether it is terminating,
  per NetworkPolicy its `PolicyFacts` keyed by uid; never whole objects.
- Readers (the request path) call `ClusterState.get` without locks and never see half an update:
  a watch event swaps one immutable `NamespaceFacts` value, a (re-)list builds a whole new dict and
  swaps the reference, and every change is applied synchronously, between two awaits.
- LIST is paginated and consistent (resourceVersion unset); WATCH resumes from the last
  resourceVersion seen, bookmarks included. A 410 Gone re-lists that resource; any other failure
  re-watches after a capped, jittered backoff. The state is synced once both have been listed.
- `fence.lost` / `fence.restored` are reported for changes seen after the first full sync, never
  for the initial lists; `restored` only follows a `lost` this process saw, and a namespace being
  torn down (terminating, deleted) loses its fence silently.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Hashable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TypeVar

import orjson

from webhook.cluster.view import NamespaceFacts, namespace_facts
from webhook.decisionlog import get_logger
from webhook.labels import NAMESPACE_NAME_LABEL
from webhook.metrics import Metrics
from webhook.netpol import Direction, PolicyFacts, analyse_policy
from webhook.settings import Settings

PAGE_SIZE = 500
LIST_TIMEOUT = 60.0  # seconds for one page
WATCH_SECONDS = 300  # each watch asks the server to end it after 1-2x this (client-go's choice)
IDLE_TIMEOUT = 150.0  # no event or bookmark (~1/min) for this long: the stream is dead
JSON = "application/json"
_T = TypeVar("_T")


class Resource(StrEnum):
    NAMESPACES = "namespaces"
    NETWORK_POLICIES = "networkpolicies"


PATHS = {
    Resource.NAMESPACES: "/api/v1/namespaces",
    Resource.NETWORK_POLICIES: "/apis/networking.k8s.io/v1/networkpolicies",
}


# --- the API server, as the informer needs it --------------------------------------------------


class ApiError(Exception):
    """The API server answered with an error status, or sent an ERROR watch event."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status

    @property
    def expired(self) -> bool:
        """410 Gone: the resourceVersion or continue token is too old; list again."""
        return self.status == 410


class Lines(Protocol):
    async def readline(self) -> bytes:
        """The next line of a watch stream; b"" once the server has ended it."""
        ...


class Transport(Protocol):
    """JSON GETs and watch streams; every answer but 200 raises ApiError (`live.KubeTransport`)."""

    async def get(
        self,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        *,
        timeout: float,
        accept: str = JSON,
    ) -> dict[str, Any]: ...

    def watch(
        self, path: str, query: Sequence[tuple[str, str]], *, timeout: float
    ) -> AbstractAsyncContextManager[Lines]: ...


# --- the state (pure) ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NamespaceRecord:
    """What is kept of a Namespace object."""

    name: str
    labels: Mapping[str, str]
    terminating: bool


def namespace_record(obj: Mapping[str, Any]) -> NamespaceRecord:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    labels = meta.get("labels") or {}
    return NamespaceRecord(
        name=str(meta.get("name") or ""),
        labels={str(k): str(v) for k, v in labels.items()},
        terminating=status.get("phase") == "Terminating" or bool(meta.get("deletionTimestamp")),
    )


@dataclass(frozen=True, slots=True)
class Transition:
    """A namespace's fence for one direction, lost or restored, as the informer saw it."""

    event: str  # "lost" | "restored"
    namespace: str
    direction: Direction
    policy: str  # the policy (or policies, comma-separated) that made the difference
    resource_version: str


class ClusterState:
    """Per-namespace facts built from Namespace and NetworkPolicy objects; no I/O."""

    def __init__(self) -> None:
        self._records: dict[str, NamespaceRecord] = {}
        self._policies: dict[str, dict[str, PolicyFacts]] = {}
        self._facts: dict[str, NamespaceFacts] = {}
        self._listed: set[Resource] = set()
        self._lost: set[tuple[str, Direction]] = set()
        self._shapes = Shapes()

    def get(self, name: str) -> NamespaceFacts | None:
        return self._facts.get(name)

    def policy(self, obj: Mapping[str, Any]) -> PolicyFacts:
        """A NetworkPolicy's facts, sharing equal parts with the policies already kept."""
        return self._shapes.policy(analyse_policy(obj))

    def __len__(self) -> int:
        return len(self._facts)

    @property
    def synced(self) -> bool:
        return len(self._listed) == len(Resource)

    def replace_namespaces(
        self, records: Iterable[NamespaceRecord], resource_version: str, settings: Settings
    ) -> list[Transition]:
        """A full list of Namespaces replaces the previous one at once."""
        by_name = {r.name: r for r in records}
        return self._replace(
            Resource.NAMESPACES, by_name, self._policies, resource_version, settings
        )

    def replace_policies(
        self, policies: Iterable[PolicyFacts], resource_version: str, settings: Settings
    ) -> list[Transition]:
        """A full list of NetworkPolicies replaces the previous one at once."""
        by_namespace: dict[str, dict[str, PolicyFacts]] = {}
        for policy in policies:
            by_namespace.setdefault(policy.namespace, {})[_key(policy)] = policy
        return self._replace(
            Resource.NETWORK_POLICIES, self._records, by_namespace, resource_version, settings
        )

    def apply(
        self, resource: Resource, event: str, obj: Mapping[str, Any], settings: Settings
    ) -> list[Transition]:
        """One ADDED / MODIFIED / DELETED watch event; only its namespace's facts are rebuilt."""
        if resource is Resource.NAMESPACES:
            record = namespace_record(obj)
            name, policy_name = record.name, ""
            if event == "DELETED":
                self._records.pop(name, None)
            else:
                self._records[name] = record
        else:
            policy = self.policy(obj)
            name, policy_name = policy.namespace, policy.name
            bucket = self._policies.setdefault(name, {})
            if event == "DELETED":
                bucket.pop(_key(policy), None)
                if not bucket:
                    del self._policies[name]
            else:
                bucket[_key(policy)] = policy
        old = self._facts.get(name)
        new = self._build(name)
        if new is None:
            self._facts.pop(name, None)
        else:
            self._facts[name] = new
        if not self.synced:
            return []
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        return self._transitions(
            name, old=old, new=new, policy=policy_name, version=version, settings=settings
        )

    def _replace(
        self,
        resource: Resource,
        records: dict[str, NamespaceRecord],
        policies: dict[str, dict[str, PolicyFacts]],
        resource_version: str,
        settings: Settings,
    ) -> list[Transition]:
        was_synced = self.synced
        before_records, before_policies = self._records, self._policies
        self._records, self._policies = records, policies
        old = self._facts
        new: dict[str, NamespaceFacts] = {}
        for name in records.keys() | policies.keys():
            kept = old.get(name)
            if (
                kept is not None
                and before_records.get(name) == records.get(name)
                and _same_versions(before_policies.get(name), policies.get(name))
            ):
                new[name] = kept  # unchanged since the last list: a re-list stays cheap
                continue
            facts = self._build(name)
            if facts is not None:
                new[name] = facts
        self._facts = new
        self._listed.add(resource)
        if not was_synced:
            return []
        return [
            t
            for name in sorted(old.keys() | new.keys())
            if old.get(name) is not new.get(name)
            for t in self._transitions(
                name,
                old=old.get(name),
                new=new.get(name),
                policy="",
                version=resource_version,
                settings=settings,
            )
        ]

    def _build(self, name: str) -> NamespaceFacts | None:
        record = self._records.get(name)
        policies = self._policies.get(name)
        if record is None and not policies:
            return None
        return namespace_facts(
            name,
            policies.values() if policies else (),
            labels=record.labels if record else {NAMESPACE_NAME_LABEL: name},
            terminating=record.terminating if record else False,
        )

    def _transitions(
        self,
        name: str,
        *,
        old: NamespaceFacts | None,
        new: NamespaceFacts | None,
        policy: str,
        version: str,
        settings: Settings,
    ) -> list[Transition]:
        found: list[Transition] = []
        for direction in settings.require:
            key = (name, direction)
            was = old is not None and old.fence(direction, settings.strict).fenced
            now = new is not None and new.fence(direction, settings.strict).fenced
            if new is None or new.terminating:
                self._lost.discard(key)  # torn down: nothing left to expose
            elif was and not now:
                self._lost.add(key)
                culprit = policy or _culprit(old, new, direction, settings.strict)
                found.append(Transition("lost", name, direction, culprit, version))
            elif now and not was and key in self._lost:
                self._lost.discard(key)
                culprit = policy or ",".join(new.fence(direction, settings.strict).fencing)
                found.append(Transition("restored", name, direction, culprit, version))
        return found


class Shapes:
    """One shared copy of each equal part of PolicyFacts (policy types, rule counts, reaches).

    Most policies are alike, so the state holds a handful of shapes instead of a copy per policy:
    less memory, and fewer objects for the garbage collector to walk (its pauses stall requests).
    """

    LIMIT = 100_000

    def __init__(self) -> None:
        self._seen: dict[Hashable, Any] = {}

    def policy(self, p: PolicyFacts) -> PolicyFacts:
        if len(self._seen) > self.LIMIT:
            self._seen.clear()  # forget unused shapes now and then; those in use stay alive
        return dataclasses.replace(
            p,
            namespace=self._one(p.namespace, p.namespace),
            types=self._one(p.types, p.types),
            rule_count=self._one(("count", *sorted(p.rule_count.items())), p.rule_count),
            reach=self._one(("reach", *sorted(p.reach.items())), p.reach),
        )

    def _one(self, key: Hashable, value: _T) -> _T:
        kept: _T = self._seen.setdefault(key, value)
        return kept


def _key(policy: PolicyFacts) -> str:
    return policy.uid or f"{policy.namespace}/{policy.name}"


def _same_versions(
    a: Mapping[str, PolicyFacts] | None, b: Mapping[str, PolicyFacts] | None
) -> bool:
    """The same policies at the same resourceVersions (none known: not the same)."""
    a, b = a or {}, b or {}
    if a.keys() != b.keys():
        return False
    return all(
        p.resource_version and p.resource_version == b[k].resource_version for k, p in a.items()
    )


def _culprit(
    old: NamespaceFacts | None, new: NamespaceFacts, direction: Direction, strict: bool
) -> str:
    """Who took a fence away, seen only as before/after (a re-list): neutralisers, or the gone."""
    after = new.fence(direction, strict)
    if after.neutralised:
        return ",".join(after.neutralised_by)
    before = old.fence(direction, strict).fencing if old is not None else ()
    return ",".join(n for n in before if n not in after.fencing) or ",".join(before)


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
