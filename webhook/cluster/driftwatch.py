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
  `kubefence_webhook_drift{object,name}` is 1 while an object drifts, 0 while it matches. Given
  `notices` (`webhook.cluster.notices`), the two lines and their counter go through them: only
  the leader of the replicas sends them; the gauge is every replica's.
- The `drift` section is re-read while running: a changed section restarts the watches (and
  re-compares), a removed one stops them; what was reported of an object still named is kept.
- Each object is listed and watched by name (fieldSelector `metadata.name`) by
  `webhook.cluster.reflector`, the informer's loop: a consistent LIST, WATCH from the last
  resourceVersion with bookmarks, 410 Gone re-lists, any other failure retries after a capped,
  jittered backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from webhook.cluster.apiserver import Transport
from webhook.cluster.notices import Notice, Notices
from webhook.cluster.reflector import IDLE_TIMEOUT, Backoff, Collection, Reflector, Stream
from webhook.drift import DriftSpec, webhook_drift
from webhook.metrics import Metrics
from webhook.settings import Settings

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
        notices: Notices | None = None,
    ) -> None:
        self.notices = notices
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
        tracker = self.trackers.setdefault(target, Tracker(target))
        stream = self.streams[target] = Stream()
        collection = Collection(
            target.kind.path,
            selector=(("fieldSelector", f"metadata.name={target.name}"),),
            page_size=None,  # one object by name
            event_prefix="drift_watch",
            log_fields={"object": target.kind.value, "name": target.name},
        )
        reflector = Reflector(
            self._transport,
            collection,
            _Observer(tracker, spec, host, self.notices),
            stream,
            log=host.log,
            backoff=self._backoff,
            idle_timeout=self._idle_timeout,
        )
        return asyncio.create_task(reflector.run())


class _Observer:
    """One object's lists and events, compared by its tracker; drift reported and counted."""

    def __init__(
        self, tracker: Tracker, spec: DriftSpec, host: Host, notices: Notices | None
    ) -> None:
        self._notices = notices
        self._tracker = tracker
        self._spec = spec
        self._host = host

    def reduce(self, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        return obj

    def replace(
        self, items: list[Mapping[str, Any]], resource_version: str, started: float
    ) -> None:
        target = self._tracker.target
        found = [i for i in items if _name(i) == target.name]
        obj = found[0] if found else None
        self._observe(obj, _version(obj) or resource_version)
        self._host.log.info(
            "drift_watch.listed",
            object=target.kind.value,
            name=target.name,
            found=obj is not None,
            resource_version=resource_version,
        )

    def apply(self, event: str, obj: Mapping[str, Any]) -> None:
        if _name(obj) == self._tracker.target.name:
            self._observe(None if event == "DELETED" else obj, _version(obj))

    def _observe(self, obj: Mapping[str, Any] | None, version: str) -> None:
        tracker, host = self._tracker, self._host
        target = tracker.target
        report = tracker.observe(obj, self._spec, version)
        labels = (target.kind.value, target.name)
        host.metrics.webhook_drift.labels(*labels).set(1 if tracker.paths else 0)
        if report is None:
            return
        drifted = report.event == DRIFT
        counter = host.metrics.webhook_drift_events.labels(
            target.kind.value, "drift" if drifted else "resolved"
        )
        fields = {
            "object": target.kind.value,
            "name": target.name,
            "paths": list(report.paths),
            "resource_version": report.resource_version,
        }
        if self._notices is not None:
            self._notices.emit(Notice(report.event, fields, warning=drifted, count=counter.inc))
            return
        counter.inc()
        (host.log.warning if drifted else host.log.info)(report.event, **fields)


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _version(obj: Mapping[str, Any] | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")
