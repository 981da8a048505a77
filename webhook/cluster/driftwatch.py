"""The drift watch: kubefence's own admission objects, watched for edits nothing else would show.

The API server calls no webhook for ValidatingWebhookConfigurations and runs no admission policy
on admission policies or their bindings, so the fence's configuration can be edited away in
silence. When the config has a `drift` section, the ValidatingWebhookConfiguration it names (and
the ValidatingAdmissionPolicy and binding, when named) are listed by name, then watched.

Invariants:
- Every version seen of the webhook configuration is compared with `drift.expected` by
  `webhook.drift.webhook_drift`, field by field after API defaulting (caBundle skipped when
  `ignoreCABundle`). The chart renders no expected spec for the policy and its binding, so they
  are compared with the first version this process saw: a changed `spec` is drift, named by the
  generations; a restart takes a new baseline.
- An object that is absent is drift: `(missing)` if this process never saw it, else `(deleted)`.
- `webhook.drift` is logged when drift appears or its paths change, `webhook.drift_resolved` when
  an object matches again after a reported drift; a re-list that finds nothing new logs nothing.
  `kubefence_webhook_drift{object,name}` is 1 while an object drifts, 0 while it matches.
- The `drift` section is re-read while running: a changed section restarts the watches (and
  re-compares), a removed one stops them; what was reported of an object still named is kept.
- LIST (fieldSelector `metadata.name`) is consistent; WATCH resumes from the last resourceVersion
  seen, bookmarks included; 410 Gone re-lists, any other failure retries after the informer's
  capped, jittered backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import orjson

from webhook.cluster.apiserver import ApiError, Transport
from webhook.cluster.informer import (
    IDLE_TIMEOUT,
    LIST_TIMEOUT,
    WATCH_SECONDS,
    Backoff,
    ShortWatch,
    Stream,
)
from webhook.config import Settings
from webhook.drift import DriftSpec, webhook_drift
from webhook.metrics import Metrics

DRIFT, RESOLVED = "webhook.drift", "webhook.drift_resolved"
MISSING, DELETED = "(missing)", "(deleted)"
SETTINGS_POLL = 1.0  # seconds between looks at the `drift` section in force
_GROUP = "/apis/admissionregistration.k8s.io/v1"


class Kind(StrEnum):
    WEBHOOK_CONFIGURATION = "ValidatingWebhookConfiguration"
    ADMISSION_POLICY = "ValidatingAdmissionPolicy"
    BINDING = "ValidatingAdmissionPolicyBinding"

    @property
    def path(self) -> str:
        return _PATHS[self]


_PATHS = {
    Kind.WEBHOOK_CONFIGURATION: f"{_GROUP}/validatingwebhookconfigurations",
    Kind.ADMISSION_POLICY: f"{_GROUP}/validatingadmissionpolicies",
    Kind.BINDING: f"{_GROUP}/validatingadmissionpolicybindings",
}


@dataclass(frozen=True, slots=True)
class Target:
    """One object of kubefence's admission configuration, by kind and name."""

    kind: Kind
    name: str


def targets(spec: DriftSpec | None) -> list[Target]:
    """The objects a `drift` section names."""
    if spec is None:
        return []
    named = [
        (Kind.WEBHOOK_CONFIGURATION, spec.webhook_configuration),
        (Kind.ADMISSION_POLICY, spec.admission_policy),
        (Kind.BINDING, spec.binding),
    ]
    return [Target(kind, name) for kind, name in named if name]


@dataclass(frozen=True, slots=True)
class Report:
    """A change in an object's drift: `webhook.drift` (with paths) or `webhook.drift_resolved`."""

    event: str
    target: Target
    paths: tuple[str, ...]
    resource_version: str


class Tracker:
    """One object's drift as this process last reported it; no I/O."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.paths: tuple[str, ...] = ()  # as last reported; () = matching
        self.seen = False  # present in some version this process saw
        self.baseline: tuple[int, Any] | None = None  # policy, binding: first (generation, spec)

    def observe(
        self, obj: Mapping[str, Any] | None, spec: DriftSpec, resource_version: str
    ) -> Report | None:
        """The object as now served (None: absent); a Report when its drift changed."""
        paths = self._paths(obj, spec)
        self.seen = self.seen or obj is not None
        if paths == self.paths:
            return None
        self.paths = paths
        return Report(DRIFT if paths else RESOLVED, self.target, paths, resource_version)

    def _paths(self, obj: Mapping[str, Any] | None, spec: DriftSpec) -> tuple[str, ...]:
        if obj is None:
            return (DELETED if self.seen else MISSING,)
        if self.target.kind is Kind.WEBHOOK_CONFIGURATION:
            webhooks: Sequence[Mapping[str, Any]] = obj.get("webhooks") or []
            return tuple(
                webhook_drift(spec.expected, webhooks, ignore_ca_bundle=spec.ca_bundle_injected)
            )
        generation = int((obj.get("metadata") or {}).get("generation") or 0)
        current = obj.get("spec") or {}
        if self.baseline is None:
            self.baseline = (generation, current)
        first, original = self.baseline
        if current == original:
            return ()
        return (f"spec (generation {generation}, first seen {first})",)


# --- the list/watch loops ------------------------------------------------------------------------


class Host(Protocol):
    """What the drift watch reads from the running server (`webhook.server.Runtime` is one)."""

    settings: Settings
    metrics: Metrics
    log: Any


class DriftWatch:
    """Lists and watches the objects the `drift` section in force names; reports their drift."""

    def __init__(
        self,
        transport: Transport,
        *,
        backoff: Backoff | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
        settings_poll: float = SETTINGS_POLL,
    ) -> None:
        self.trackers: dict[Target, Tracker] = {}
        self.streams: dict[Target, Stream] = {}
        self._transport = transport
        self._backoff = backoff or Backoff()
        self._idle_timeout = idle_timeout
        self._settings_poll = settings_poll

    async def run(self, host: Host) -> None:
        """Watch until cancelled, starting over whenever the `drift` section changes."""
        while True:
            spec = host.settings.drift
            wanted = targets(spec)
            for gone in self.trackers.keys() - set(wanted):
                del self.trackers[gone]
                self.streams.pop(gone, None)
                host.metrics.webhook_drift.remove(gone.kind.value, gone.name)
            tasks = [] if spec is None else [self._start(t, spec, host) for t in wanted]
            try:
                while host.settings.drift == spec:
                    await asyncio.sleep(self._settings_poll)
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    def _start(self, target: Target, spec: DriftSpec, host: Host) -> asyncio.Task[None]:
        self.trackers.setdefault(target, Tracker(target))
        self.streams[target] = Stream()
        return asyncio.create_task(self._reflect(target, spec, host))

    async def _reflect(self, target: Target, spec: DriftSpec, host: Host) -> None:
        stream = self.streams[target]
        while True:
            try:
                if not stream.resource_version:
                    await self._list(target, spec, host)
                await self._watch(target, spec, host)
            except Exception as exc:
                expired, delay = stream.failed(exc, self._backoff)
                host.log.warning(
                    "drift_watch.relist" if expired else "drift_watch.retry",
                    object=target.kind.value,
                    name=target.name,
                    reason=f"{type(exc).__name__}: {exc}".rstrip(": "),
                    retry_in=round(delay, 3),
                )
                await asyncio.sleep(delay)

    async def _list(self, target: Target, spec: DriftSpec, host: Host) -> None:
        query = [("fieldSelector", f"metadata.name={target.name}")]
        page = await self._transport.get(target.kind.path, query, timeout=LIST_TIMEOUT)
        version = str((page.get("metadata") or {}).get("resourceVersion") or "")
        found = [i for i in page.get("items") or () if _name(i) == target.name]
        obj = found[0] if found else None
        self._observe(target, obj, spec, _version(obj) or version, host)
        stream = self.streams[target]
        stream.resource_version = version
        stream.lists += 1
        host.log.info(
            "drift_watch.listed",
            object=target.kind.value,
            name=target.name,
            found=obj is not None,
            resource_version=version,
        )

    async def _watch(self, target: Target, spec: DriftSpec, host: Host) -> None:
        stream = self.streams[target]
        seconds = random.randint(WATCH_SECONDS, 2 * WATCH_SECONDS)  # noqa: S311 - spread, not crypto
        query = [
            ("fieldSelector", f"metadata.name={target.name}"),
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", stream.resource_version),
            ("timeoutSeconds", str(seconds)),
        ]
        async with self._transport.watch(target.kind.path, query, timeout=seconds + 60.0) as lines:
            opened = stream.healthy_at = time.monotonic()
            stream.connected, stream.failures = True, 0
            try:
                while True:
                    async with asyncio.timeout(self._idle_timeout):
                        line = await lines.readline()
                    if not line:
                        if time.monotonic() - opened < 1.0:
                            raise ShortWatch("the server ended the watch at once")
                        return  # the server's timeoutSeconds: watch again from here
                    stream.healthy_at = time.monotonic()
                    self._handle(target, orjson.loads(line), spec, host)
            finally:
                stream.connected = False

    def _handle(
        self, target: Target, event: Mapping[str, Any], spec: DriftSpec, host: Host
    ) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            raise ApiError(int(obj.get("code") or 500), str(obj.get("message") or "watch error"))
        version = _version(obj)
        if kind in ("ADDED", "MODIFIED", "DELETED") and _name(obj) == target.name:
            self._observe(target, None if kind == "DELETED" else obj, spec, version, host)
        if version:
            self.streams[target].resource_version = version

    def _observe(
        self,
        target: Target,
        obj: Mapping[str, Any] | None,
        spec: DriftSpec,
        version: str,
        host: Host,
    ) -> None:
        report = self.trackers[target].observe(obj, spec, version)
        labels = (target.kind.value, target.name)
        host.metrics.webhook_drift.labels(*labels).set(1 if self.trackers[target].paths else 0)
        if report is None:
            return
        drifted = report.event == DRIFT
        host.metrics.webhook_drift_events.labels(
            target.kind.value, "drift" if drifted else "resolved"
        ).inc()
        (host.log.warning if drifted else host.log.info)(
            report.event,
            object=target.kind.value,
            name=target.name,
            paths=list(report.paths),
            resource_version=report.resource_version,
        )


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _version(obj: Mapping[str, Any] | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")
