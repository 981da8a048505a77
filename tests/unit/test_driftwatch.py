"""The drift watch: its per-object state fed plain objects, and its list/watch loop run against a
scripted API server (initial match, drift, changed paths, resolution, deletion, absence, 410s,
failures and config reloads)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from scripted_api import ScriptedWatches

from webhook.cluster.apiserver import ApiError
from webhook.cluster.driftwatch import (
    DELETED,
    DRIFT,
    MISSING,
    RESOLVED,
    DriftWatch,
    Kind,
    Target,
    Tracker,
    targets,
)
from webhook.cluster.reflector import Backoff
from webhook.drift import DriftSpec
from webhook.metrics import Metrics
from webhook.settings import DEFAULT_SETTINGS, Settings

VWC, VAP, BINDING = Kind.WEBHOOK_CONFIGURATION, Kind.ADMISSION_POLICY, Kind.BINDING
HOOK = "validate.kubefence.io"
RENDERED: dict[str, Any] = {
    "name": HOOK,
    "clientConfig": {"url": "https://127.0.0.1:8443/validate", "caBundle": "QUJD"},
    "rules": [
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}
    ],
    "sideEffects": "None",
    "admissionReviewVersions": ["v1"],
}
SPEC = DriftSpec(
    webhook_configuration="kubefence",
    expected=(RENDERED,),
    admission_policy="kubefence-protect",
    binding="kubefence-protect",
)
FAILURE_POLICY = f"webhooks[{HOOK}].failurePolicy"
TIMEOUT = f"webhooks[{HOOK}].timeoutSeconds"
CA_BUNDLE = f"webhooks[{HOOK}].clientConfig.caBundle"


def served(version: int = 5, **changes: Any) -> dict[str, Any]:
    """The webhook configuration as the API server serves it: defaults filled, `changes` applied."""
    hook = copy.deepcopy(RENDERED)
    hook.update(failurePolicy="Fail", matchPolicy="Equivalent", objectSelector={})
    hook.update(namespaceSelector={}, timeoutSeconds=10)
    hook["rules"][0]["scope"] = "*"
    hook.update(changes)
    meta = {"name": "kubefence", "uid": "u1", "resourceVersion": str(version), "generation": 1}
    return {"metadata": meta, "webhooks": [hook]}


def policy(
    name: str = "kubefence-protect",
    *,
    generation: int = 1,
    version: int = 5,
    expression: str = "true",
) -> dict[str, Any]:
    meta = {"name": name, "resourceVersion": str(version), "generation": generation}
    return {"metadata": meta, "spec": {"validations": [{"expression": expression}]}}


# --- the state (pure) ----------------------------------------------------------------------------


def test_targets_are_the_objects_the_section_names() -> None:
    assert targets(None) == []
    assert targets(DriftSpec("kubefence", ())) == [Target(VWC, "kubefence")]
    assert [t.kind for t in targets(SPEC)] == [VWC, VAP, BINDING]
    assert VAP.path == "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"


def test_a_matching_configuration_reports_nothing() -> None:
    tracker = Tracker(Target(VWC, "kubefence"))
    assert tracker.observe(served(), SPEC, "5") is None
    assert tracker.paths == ()


def test_drift_appears_changes_and_resolves() -> None:
    tracker = Tracker(Target(VWC, "kubefence"))
    tracker.observe(served(), SPEC, "5")
    report = tracker.observe(served(6, failurePolicy="Ignore"), SPEC, "6")
    assert report is not None
    assert (report.event, report.paths, report.resource_version) == (DRIFT, (FAILURE_POLICY,), "6")
    assert tracker.observe(served(7, failurePolicy="Ignore"), SPEC, "7") is None  # same paths
    report = tracker.observe(served(8, failurePolicy="Ignore", timeoutSeconds=1), SPEC, "8")
    assert report is not None
    assert (report.event, report.paths) == (DRIFT, (FAILURE_POLICY, TIMEOUT))
    report = tracker.observe(served(9), SPEC, "9")
    assert report is not None
    assert (report.event, report.paths) == (RESOLVED, ())


def test_the_ca_bundle_is_drift_unless_injected() -> None:
    edited = served(6, clientConfig={**RENDERED["clientConfig"], "caBundle": "WFla"})
    report = Tracker(Target(VWC, "kubefence")).observe(edited, SPEC, "6")
    assert report is not None
    assert report.paths == (CA_BUNDLE,)
    injected = dataclasses.replace(SPEC, ca_bundle_injected=True)
    assert Tracker(Target(VWC, "kubefence")).observe(edited, injected, "6") is None


@pytest.mark.parametrize("kind", list(Kind))
def test_absent_is_missing_until_seen_then_deleted(kind: Kind) -> None:
    tracker = Tracker(Target(kind, "kubefence"))
    report = tracker.observe(None, SPEC, "3")
    assert report is not None
    assert (report.event, report.paths) == (DRIFT, (MISSING,))
    assert tracker.observe(None, SPEC, "4") is None
    obj = served() if kind is VWC else policy("kubefence")
    report = tracker.observe(obj, SPEC, "5")
    assert report is not None
    assert report.event == RESOLVED
    report = tracker.observe(None, SPEC, "6")
    assert report is not None
    assert (report.event, report.paths) == (DRIFT, (DELETED,))


def test_a_policy_is_compared_with_the_first_version_seen() -> None:
    tracker = Tracker(Target(VAP, "kubefence-protect"))
    assert tracker.observe(policy(generation=3), SPEC, "5") is None
    report = tracker.observe(policy(generation=4, expression="false"), SPEC, "6")
    assert report is not None
    assert report.paths == ("spec (generation 4, first seen 3)",)
    report = tracker.observe(policy(generation=5, expression="1 == 1"), SPEC, "7")
    assert report is not None
    assert report.paths == ("spec (generation 5, first seen 3)",)
    report = tracker.observe(policy(generation=6), SPEC, "8")  # edited back
    assert report is not None
    assert report.event == RESOLVED


def test_a_policy_recreated_differently_is_drift() -> None:
    tracker = Tracker(Target(BINDING, "kubefence-protect"))
    tracker.observe(policy(generation=2), SPEC, "5")
    tracker.observe(None, SPEC, "6")
    report = tracker.observe(policy(generation=1, expression="false"), SPEC, "7")
    assert report is not None
    assert report.paths == ("spec (generation 1, first seen 2)",)


# --- the list/watch loop, over a scripted API server -----------------------------------------------


class Log:
    """A structlog stand-in that keeps what was logged."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append({"event": event, "level": "info", **fields})

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append({"event": event, "level": "warning", **fields})

    def named(self, *events: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["event"] in events]


@dataclasses.dataclass
class Host:
    settings: Settings = dataclasses.field(
        default_factory=lambda: dataclasses.replace(DEFAULT_SETTINGS, drift=SPEC)
    )
    metrics: Metrics = dataclasses.field(default_factory=Metrics)
    log: Log = dataclasses.field(default_factory=Log)

    def gauge(self, kind: Kind, name: str) -> float | None:
        labels = {"object": kind.value, "name": name}
        value: float | None = self.metrics.registry.get_sample_value(
            "kubefence_webhook_drift", labels
        )
        return value

    def drift_reports(self) -> list[tuple[str, str, list[str], str]]:
        return [
            (line["event"], line["object"], line["paths"], line["resource_version"])
            for line in self.log.named(DRIFT, RESOLVED)
        ]


class ScriptedApi(ScriptedWatches):
    """Lists what `objects` holds (by name, as a fieldSelector asks); watches are fed by the test."""

    def __init__(self) -> None:
        super().__init__(k.path for k in Kind)

    async def get(
        self, path: str, query: Any = (), *, timeout: float, accept: str = "application/json"
    ) -> dict[str, Any]:
        params = dict(query)
        self.gets.append((path, params))
        name = params["fieldSelector"].removeprefix("metadata.name=")
        items = [o for o in self.objects[path] if o["metadata"]["name"] == name]
        return {"metadata": {"resourceVersion": str(self.version)}, "items": items}

    def send(self, kind: Kind, event: str, obj: dict[str, Any]) -> None:
        self.send_to(kind.path, event, obj)

    def watched(self, kind: Kind) -> list[dict[str, str]]:
        return self.watched_at(kind.path)

    def listed(self, kind: Kind) -> list[dict[str, str]]:
        return [q for p, q in self.gets if p == kind.path]


async def until(check: Any, what: str, within: float = 2.0) -> None:
    try:
        async with asyncio.timeout(within):
            while not check():
                await asyncio.sleep(0.001)
    except TimeoutError:
        raise AssertionError(f"not {what} within {within}s") from None


def watching(watch: DriftWatch, *kinds: Kind) -> bool:
    live = [s for t, s in watch.streams.items() if t.kind in kinds]
    return len(live) == len(kinds) and all(s.connected for s in live)


@contextlib.asynccontextmanager
async def running(api: ScriptedApi, host: Host, **kw: Any) -> AsyncIterator[DriftWatch]:
    watch = DriftWatch(api, backoff=Backoff(0.001, 0.005), settings_poll=0.001, **kw)
    task = asyncio.create_task(watch.run(host))
    try:
        await until(lambda: watching(watch, *(t.kind for t in targets(host.settings.drift))), "up")
        yield watch
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def installed(api: ScriptedApi) -> None:
    api.objects[VWC.path] = [served()]
    api.objects[VAP.path] = [policy()]
    api.objects[BINDING.path] = [policy()]


async def test_lists_by_name_then_watches_from_the_list_version_and_a_match_is_silent() -> None:
    api, host = ScriptedApi(), Host()
    installed(api)
    api.objects[VWC.path].append(served() | {"metadata": {"name": "other", "resourceVersion": "1"}})
    async with running(api, host):
        assert api.listed(VWC) == [{"fieldSelector": "metadata.name=kubefence"}]
        watched = api.watched(VWC)[0]
        assert watched["fieldSelector"] == "metadata.name=kubefence"
        assert (watched["resourceVersion"], watched["allowWatchBookmarks"]) == ("10", "true")
        assert host.drift_reports() == []
        assert host.gauge(VWC, "kubefence") == 0
        assert host.gauge(BINDING, "kubefence-protect") == 0


async def test_watch_events_report_drift_its_changes_and_its_resolution() -> None:
    api, host = ScriptedApi(), Host()
    installed(api)
    async with running(api, host) as watch:
        api.send(VWC, "MODIFIED", served(11, failurePolicy="Ignore"))
        api.send(VWC, "MODIFIED", served(12, failurePolicy="Ignore"))  # no new paths: silent
        api.send(VWC, "MODIFIED", served(13, failurePolicy="Ignore", timeoutSeconds=1))
        await until(lambda: len(host.drift_reports()) == 2, "reported")
        assert host.gauge(VWC, "kubefence") == 1
        api.send(VWC, "BOOKMARK", {"metadata": {"resourceVersion": "20"}})
        api.send(VWC, "MODIFIED", served(21))
        await until(lambda: len(host.drift_reports()) == 3, "resolved")
        assert host.drift_reports() == [
            (DRIFT, VWC.value, [FAILURE_POLICY], "11"),
            (DRIFT, VWC.value, [FAILURE_POLICY, TIMEOUT], "13"),
            (RESOLVED, VWC.value, [], "21"),
        ]
        assert host.log.named(DRIFT)[0]["level"] == "warning"
        assert host.log.named(DRIFT)[0]["name"] == "kubefence"
        assert host.gauge(VWC, "kubefence") == 0
        assert watch.streams[Target(VWC, "kubefence")].resource_version == "21"
        events = host.metrics.registry.get_sample_value(
            "kubefence_webhook_drift_events_total", {"object": VWC.value, "event": "drift"}
        )
        assert events == 2


async def test_deleted_objects_are_drift() -> None:
    api, host = ScriptedApi(), Host()
    installed(api)
    async with running(api, host):
        api.send(VWC, "DELETED", served(11))
        api.send(BINDING, "DELETED", policy(version=12))
        await until(lambda: len(host.drift_reports()) == 2, "reported")
        assert sorted(host.drift_reports()) == [
            (DRIFT, BINDING.value, [DELETED], "12"),
            (DRIFT, VWC.value, [DELETED], "11"),
        ]
        assert host.gauge(BINDING, "kubefence-protect") == 1


async def test_objects_missing_at_start_are_drift_until_created() -> None:
    api, host = ScriptedApi(), Host()
    async with running(api, host):
        assert sorted(host.drift_reports()) == [
            (DRIFT, kind.value, [MISSING], "10") for kind in (VAP, BINDING, VWC)
        ]
        api.send(VAP, "ADDED", policy(version=11))
        await until(lambda: len(host.drift_reports()) == 4, "resolved")
        assert host.drift_reports()[-1] == (RESOLVED, VAP.value, [], "11")


async def test_a_policy_edit_is_drift_against_the_first_version_seen() -> None:
    api, host = ScriptedApi(), Host()
    installed(api)
    async with running(api, host):
        api.send(VAP, "MODIFIED", policy(generation=2, version=11, expression="false"))
        await until(lambda: host.drift_reports() != [], "reported")
        assert host.drift_reports() == [
            (DRIFT, VAP.value, ["spec (generation 2, first seen 1)"], "11")
        ]


async def test_a_410_relists_and_reports_only_what_changed_meanwhile() -> None:
    api, host = ScriptedApi(), Host()
    installed(api)
    async with running(api, host) as watch:
        stream = watch.streams[Target(VWC, "kubefence")]
        api.send(VWC, "MODIFIED", served(11, failurePolicy="Ignore"))
        await until(lambda: len(host.drift_reports()) == 1, "reported")
        api.version = 30
        api.objects[VWC.path] = [served(29, failurePolicy="Ignore")]  # unchanged drift
        api.send(VWC, "ERROR", {"kind": "Status", "code": 410, "reason": "Expired"})
        await until(lambda: stream.lists == 2 and stream.connected, "re-listed")
        assert len(host.drift_reports()) == 1
        assert api.watched(VWC)[-1]["resourceVersion"] == "30"
        api.version = 40
        api.objects[VWC.path] = []
        api.send(VWC, "ERROR", {"kind": "Status", "code": 410, "reason": "Expired"})
        await until(lambda: stream.lists == 3 and stream.connected, "re-listed again")
        assert host.drift_reports()[-1] == (DRIFT, VWC.value, [DELETED], "40")
        assert stream.expired == 2
        assert host.log.named("drift_watch.relist")


async def test_other_failures_back_off_and_resume_from_the_same_version() -> None:
    api, host = ScriptedApi(), Host()
    installed(api)
    async with running(api, host) as watch:
        stream = watch.streams[Target(VWC, "kubefence")]
        api.refuse = [ApiError(403, "forbidden"), ApiError(500, "boom")]
        api.send(VWC, "ERROR", {"kind": "Status", "code": 500, "message": "internal"})
        await until(lambda: stream.errors == 3 and stream.connected, "watching again")
        assert stream.lists == 1
        assert [q["resourceVersion"] for q in api.watched(VWC)] == ["10"] * 4
        assert [line["object"] for line in host.log.named("drift_watch.retry")] == [VWC.value] * 3


async def test_a_silent_stream_is_watched_again() -> None:
    api, host = ScriptedApi(), Host()
    installed(api)
    async with running(api, host, idle_timeout=0.05) as watch:
        await until(lambda: len(api.watched(VWC)) >= 2, "re-watched")
        assert watch.streams[Target(VWC, "kubefence")].lists == 1


async def test_a_reloaded_section_is_compared_anew_and_a_removed_one_stops_the_watch() -> None:
    api, host = ScriptedApi(), Host()
    installed(api)
    async with running(api, host) as watch:
        stricter = {**RENDERED, "timeoutSeconds": 5}
        spec = DriftSpec("kubefence", (stricter,))
        host.settings = dataclasses.replace(host.settings, drift=spec)
        await until(lambda: host.drift_reports() != [], "compared with the new expectation")
        assert host.drift_reports() == [(DRIFT, VWC.value, [TIMEOUT], "5")]
        await until(lambda: watching(watch, VWC) and len(watch.streams) == 1, "re-watched")
        assert host.gauge(VAP, "kubefence-protect") is None  # no longer named: no series
        host.settings = dataclasses.replace(host.settings, drift=None)
        await until(lambda: watch.trackers == {}, "stopped")
        assert host.gauge(VWC, "kubefence") is None
        watches = len(api.watches)
        await asyncio.sleep(0.02)
        assert len(api.watches) == watches
