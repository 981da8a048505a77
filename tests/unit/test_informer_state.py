"""The informer fed plain objects: lists and watch events become per-namespace facts, and its
list/watch loop run against a scripted API server (pages, bookmarks, 410s, failures, silence)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from objects import deny_all, netpol
from scripted_api import ScriptedWatches

from webhook.cluster.apiserver import ApiError
from webhook.cluster.informer import PATHS, Informer
from webhook.cluster.reflector import Backoff
from webhook.cluster.state import ClusterState, Resource, Transition, namespace_record
from webhook.cluster.view import NamespaceFacts
from webhook.labels import NAMESPACE_NAME_LABEL
from webhook.metrics import Metrics
from webhook.netpol import Direction, analyse_policy
from webhook.settings import DEFAULT_SETTINGS, Settings

INGRESS, EGRESS = Direction.INGRESS, Direction.EGRESS
EVERYONE = [{}]  # one rule with no peers: every peer
POLICIES, NAMESPACES = Resource.NETWORK_POLICIES, Resource.NAMESPACES


def namespace(
    name: str, *, labels: dict[str, str] | None = None, terminating: bool = False
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "labels": {NAMESPACE_NAME_LABEL: name, **(labels or {})},
        "resourceVersion": "1",
    }
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}
    obj["status"] = {"phase": "Terminating" if terminating else "Active"}
    return obj


def versioned(obj: dict[str, Any], version: str) -> dict[str, Any]:
    obj["metadata"]["resourceVersion"] = version
    return obj


def synced(
    *policies: dict[str, Any],
    namespaces: tuple[str, ...] = ("team",),
    settings: Settings = DEFAULT_SETTINGS,
) -> ClusterState:
    """A state after its initial lists."""
    state = ClusterState()
    state.replace_namespaces([namespace_record(namespace(n)) for n in namespaces], "10", settings)
    state.replace_policies([analyse_policy(p) for p in policies], "10", settings)
    return state


def fenced(facts: NamespaceFacts | None, direction: Direction = INGRESS) -> bool:
    return facts is not None and facts.fence(direction, strict=False).fenced


def test_synced_only_once_both_resources_are_listed() -> None:
    state = ClusterState()
    assert not state.synced
    state.replace_policies([analyse_policy(deny_all())], "5", DEFAULT_SETTINGS)
    assert not state.synced
    state.replace_namespaces([namespace_record(namespace("team"))], "5", DEFAULT_SETTINGS)
    assert state.synced


def test_lists_become_facts_per_namespace() -> None:
    state = synced(deny_all(), netpol("web", selector={"matchLabels": {"app": "web"}}))
    facts = state.get("team")
    assert facts is not None
    assert [p.name for p in facts.policies] == ["default-deny", "web"]
    assert fenced(facts, INGRESS)
    assert fenced(facts, EGRESS)
    assert facts.labels[NAMESPACE_NAME_LABEL] == "team"
    assert facts.running_pods is None  # the live read fills it, the informer does not
    assert state.get("elsewhere") is None


def test_a_policy_in_a_namespace_not_seen_yet_still_counts() -> None:
    state = synced(deny_all(namespace="fresh"))
    facts = state.get("fresh")
    assert fenced(facts)
    assert facts is not None
    assert facts.labels == {NAMESPACE_NAME_LABEL: "fresh"}


def test_watch_events_add_modify_and_delete_a_policy() -> None:
    state = synced()
    assert not fenced(state.get("team"))
    state.apply(POLICIES, "ADDED", deny_all(), DEFAULT_SETTINGS)
    assert fenced(state.get("team"), EGRESS)
    opened = netpol(types=["Ingress"])  # same uid: egress no longer fenced
    state.apply(POLICIES, "MODIFIED", opened, DEFAULT_SETTINGS)
    facts = state.get("team")
    assert fenced(facts, INGRESS)
    assert not fenced(facts, EGRESS)
    assert facts is not None
    assert len(facts.policies) == 1
    state.apply(POLICIES, "DELETED", opened, DEFAULT_SETTINGS)
    facts = state.get("team")
    assert facts is not None
    assert facts.policies == ()


def test_an_update_swaps_the_facts_and_leaves_what_a_reader_holds_intact() -> None:
    state = synced(deny_all())
    held = state.get("team")
    state.apply(POLICIES, "DELETED", deny_all(), DEFAULT_SETTINGS)
    after = state.get("team")
    assert after is not held
    assert held is not None
    assert fenced(held)
    assert not fenced(after)


def test_namespace_events_keep_labels_and_phase() -> None:
    state = synced()
    state.apply(NAMESPACES, "MODIFIED", namespace("team", labels={"tier": "a"}), DEFAULT_SETTINGS)
    facts = state.get("team")
    assert facts is not None
    assert facts.labels["tier"] == "a"
    assert not facts.terminating
    state.apply(NAMESPACES, "MODIFIED", namespace("team", terminating=True), DEFAULT_SETTINGS)
    facts = state.get("team")
    assert facts is not None
    assert facts.terminating
    state.apply(NAMESPACES, "DELETED", namespace("team"), DEFAULT_SETTINGS)
    assert state.get("team") is None


def test_deletion_timestamp_means_terminating() -> None:
    obj = namespace("team")
    obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    del obj["status"]
    assert namespace_record(obj).terminating


def test_a_relist_replaces_the_resource_at_once() -> None:
    state = synced(deny_all(), deny_all(namespace="other"), namespaces=("team", "other"))
    state.replace_policies([analyse_policy(deny_all(namespace="other"))], "20", DEFAULT_SETTINGS)
    assert not fenced(state.get("team"))
    assert fenced(state.get("other"))
    state.replace_namespaces([namespace_record(namespace("team"))], "21", DEFAULT_SETTINGS)
    assert state.get("team") is not None
    assert fenced(state.get("other"))  # its policies still stand, without a Namespace object
    assert len(state) == 2


def test_a_relist_keeps_the_facts_of_namespaces_that_did_not_change() -> None:
    a, b = versioned(deny_all(), "7"), versioned(deny_all(namespace="other"), "8")
    state = synced(a, b, namespaces=("team", "other"))
    team, other = state.get("team"), state.get("other")
    changed = versioned(netpol(namespace="other", types=["Ingress"]), "9")  # same uid, new version
    state.replace_policies([analyse_policy(a), analyse_policy(changed)], "20", DEFAULT_SETTINGS)
    assert state.get("team") is team
    assert state.get("other") is not other
    assert not fenced(state.get("other"), EGRESS)


# --- fence transitions --------------------------------------------------------------------------


def test_no_transitions_on_the_initial_lists() -> None:
    state = ClusterState()
    assert state.replace_policies([analyse_policy(deny_all())], "5", DEFAULT_SETTINGS) == []
    assert (
        state.replace_namespaces([namespace_record(namespace("team"))], "5", DEFAULT_SETTINGS) == []
    )


def test_deleting_the_fence_is_lost_and_recreating_it_restored() -> None:
    state = synced(deny_all())
    lost = state.apply(POLICIES, "DELETED", versioned(deny_all(), "31"), DEFAULT_SETTINGS)
    assert lost == [
        Transition("lost", "team", INGRESS, "default-deny", "31"),
        Transition("lost", "team", EGRESS, "default-deny", "31"),
    ]
    again = deny_all(name="fence-2")
    restored = state.apply(POLICIES, "ADDED", versioned(again, "32"), DEFAULT_SETTINGS)
    assert [(t.event, t.direction, t.policy, t.resource_version) for t in restored] == [
        ("restored", INGRESS, "fence-2", "32"),
        ("restored", EGRESS, "fence-2", "32"),
    ]


def test_a_new_namespace_getting_its_first_fence_is_not_a_restore() -> None:
    state = synced(namespaces=("team", "fresh"))
    assert state.apply(POLICIES, "ADDED", deny_all(namespace="fresh"), DEFAULT_SETTINGS) == []


def test_one_of_two_fences_going_is_no_transition() -> None:
    state = synced(deny_all(), deny_all(name="second"))
    assert state.apply(POLICIES, "DELETED", deny_all(), DEFAULT_SETTINGS) == []


def test_a_policy_that_lets_everyone_in_takes_the_fence_away() -> None:
    state = synced(deny_all())
    opener = netpol("open-all", types=["Ingress"], ingress=EVERYONE)
    lost = state.apply(POLICIES, "ADDED", opener, DEFAULT_SETTINGS)
    assert [(t.event, t.direction, t.policy) for t in lost] == [("lost", INGRESS, "open-all")]


def test_only_required_directions_and_the_definition_in_use_count() -> None:
    settings = dataclasses.replace(DEFAULT_SETTINGS, require=(EGRESS,), strict=True)
    with_rule = netpol("dns-only", types=["Egress"], egress=[{"ports": [{"port": 53}]}])
    state = synced(deny_all(), with_rule, settings=settings)
    # Under strict, only default-deny fences Egress (dns-only has a rule): deleting it loses it.
    lost = state.apply(POLICIES, "DELETED", deny_all(), settings)
    assert [(t.direction, t.policy) for t in lost] == [(EGRESS, "default-deny")]


def test_a_namespace_being_torn_down_loses_its_fence_silently() -> None:
    state = synced(deny_all())
    state.apply(NAMESPACES, "MODIFIED", namespace("team", terminating=True), DEFAULT_SETTINGS)
    assert state.apply(POLICIES, "DELETED", deny_all(), DEFAULT_SETTINGS) == []


def test_a_relist_reports_what_changed_while_the_watch_was_away() -> None:
    state = synced(deny_all(), deny_all(namespace="other"), namespaces=("team", "other"))
    opener = netpol("open-all", namespace="other", types=["Ingress"], ingress=EVERYONE)
    relisted = [analyse_policy(deny_all(namespace="other")), analyse_policy(opener)]
    found = state.replace_policies(relisted, "40", DEFAULT_SETTINGS)
    assert [(t.namespace, t.direction, t.policy, t.resource_version) for t in found] == [
        ("other", INGRESS, "open-all", "40"),
        ("team", INGRESS, "default-deny", "40"),
        ("team", EGRESS, "default-deny", "40"),
    ]
    back = state.replace_policies([analyse_policy(deny_all())], "41", DEFAULT_SETTINGS)
    assert [(t.event, t.namespace, t.direction, t.policy) for t in back] == [
        ("lost", "other", EGRESS, "default-deny"),  # "other" has no policy left at all
        ("restored", "team", INGRESS, "default-deny"),
        ("restored", "team", EGRESS, "default-deny"),
    ]


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff(initial=0.5, cap=4.0)
    for failures, base in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (10, 4.0), (1000, 4.0)]:
        delays = {backoff.delay(failures) for _ in range(50)}
        assert all(base / 2 <= d <= base for d in delays)
        assert len(delays) > 1  # jittered


@pytest.mark.parametrize("event", ["ADDED", "MODIFIED"])
def test_an_unknown_policy_namespace_is_dropped_with_its_last_policy(event: str) -> None:
    state = synced()
    state.apply(POLICIES, event, deny_all(namespace="ghost"), DEFAULT_SETTINGS)
    assert fenced(state.get("ghost"))
    state.apply(POLICIES, "DELETED", deny_all(namespace="ghost"), DEFAULT_SETTINGS)
    assert state.get("ghost") is None


# --- the list/watch loop, over a scripted API server -----------------------------------------------


@dataclasses.dataclass
class Host:
    settings: Settings = DEFAULT_SETTINGS
    metrics: Metrics = dataclasses.field(default_factory=Metrics)


class ScriptedApi(ScriptedWatches):
    """Lists what `objects` holds, page by page; watch streams are fed by the test."""

    def __init__(self) -> None:
        super().__init__(PATHS.values())

    async def get(
        self, path: str, query: Any = (), *, timeout: float, accept: str = "application/json"
    ) -> dict[str, Any]:
        params = dict(query)
        self.gets.append((path, params))
        start = int(params.get("continue", "0"))
        end = start + int(params["limit"])
        items = self.objects[path]
        meta = {"resourceVersion": str(self.version)}
        if end < len(items):
            meta["continue"] = str(end)
        return {"metadata": meta, "items": items[start:end]}

    def send(self, resource: Resource, kind: str, obj: dict[str, Any]) -> None:
        self.send_to(PATHS[resource], kind, obj)

    def watched(self, resource: Resource) -> list[dict[str, str]]:
        return self.watched_at(PATHS[resource])


async def until(check: Any, what: str, within: float = 2.0) -> None:
    async with asyncio.timeout(within):
        while not check():
            await asyncio.sleep(0.001)


@contextlib.asynccontextmanager
async def informing(api: ScriptedApi, **kw: Any) -> AsyncIterator[Informer]:
    informer = Informer(api, backoff=Backoff(0.001, 0.005), page_size=2, **kw)
    task = asyncio.create_task(informer.run(Host()))
    try:
        await until(lambda: informer.synced, "synced")
        await until(lambda: all(s.connected for s in informer.streams.values()), "watching")
        yield informer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def with_version(obj: dict[str, Any], version: int) -> dict[str, Any]:
    return versioned(obj, str(version))


async def test_lists_page_by_page_then_watches_from_the_list_version() -> None:
    api = ScriptedApi()
    api.objects[PATHS[NAMESPACES]] = [namespace(n) for n in ("a", "b", "c")]
    api.objects[PATHS[POLICIES]] = [deny_all(namespace="a"), deny_all(namespace="b")]
    async with informing(api) as informer:
        assert fenced(informer.state.get("b"))
        assert informer.state.get("c") is not None
        pages = [q for p, q in api.gets if p == PATHS[NAMESPACES]]
        assert pages == [{"limit": "2"}, {"limit": "2", "continue": "2"}]
        assert "resourceVersion" not in pages[0]  # a consistent list, never "0"
        (watch,) = api.watched(POLICIES)
        assert watch["watch"] == "true"
        assert watch["allowWatchBookmarks"] == "true"
        assert watch["resourceVersion"] == "10"
        assert informer.staleness() == 0.0


async def test_events_apply_and_bookmarks_move_the_resume_version() -> None:
    api = ScriptedApi()
    async with informing(api) as informer:
        api.send(POLICIES, "ADDED", with_version(deny_all(namespace="x"), 11))
        await until(lambda: fenced(informer.state.get("x")), "event applied")
        api.send(POLICIES, "BOOKMARK", {"metadata": {"resourceVersion": "15"}})
        stream = informer.streams[POLICIES]
        await until(lambda: stream.resource_version == "15", "bookmark seen")
        api.streams[PATHS[POLICIES]].put_nowait(b"")  # the server ends the watch
        await until(lambda: len(api.watched(POLICIES)) == 2, "watching again")
        assert api.watched(POLICIES)[-1]["resourceVersion"] == "15"
        assert stream.lists == 1


async def test_a_410_relists_and_replaces_the_state() -> None:
    api = ScriptedApi()
    api.objects[PATHS[POLICIES]] = [with_version(deny_all(name="a"), 9)]
    async with informing(api) as informer:
        assert fenced(informer.state.get("team"))
        api.version = 30
        api.objects[PATHS[POLICIES]] = [with_version(deny_all(name="b"), 29)]
        api.send(POLICIES, "ERROR", {"kind": "Status", "code": 410, "reason": "Expired"})
        stream = informer.streams[POLICIES]
        await until(lambda: stream.lists == 2 and stream.connected, "re-listed")
        facts = informer.state.get("team")
        assert facts is not None
        assert [p.name for p in facts.policies] == ["b"]
        assert stream.expired == 1
        assert api.watched(POLICIES)[-1]["resourceVersion"] == "30"


async def test_other_failures_back_off_and_resume_from_the_same_version() -> None:
    api = ScriptedApi()
    async with informing(api) as informer:
        stream = informer.streams[POLICIES]
        api.refuse = [ApiError(500, "boom"), ApiError(429, "slow down")]
        api.send(POLICIES, "ERROR", {"kind": "Status", "code": 500, "message": "internal"})
        await until(lambda: stream.errors == 3 and stream.connected, "watching again")
        assert stream.lists == 1  # no re-list
        assert [q["resourceVersion"] for q in api.watched(POLICIES)] == ["10"] * 4


async def test_staleness_counts_from_when_the_watch_was_last_healthy() -> None:
    api = ScriptedApi()
    async with informing(api) as informer:
        api.refuse = [ApiError(503, "down")] * 1000
        api.streams[PATHS[NAMESPACES]].put_nowait(b"")
        await until(lambda: informer.staleness() > 0.05, "stale")
        api.refuse.clear()
        await until(lambda: informer.staleness() == 0.0, "healthy again")


async def test_a_silent_stream_is_dropped_and_watched_again() -> None:
    api = ScriptedApi()
    async with informing(api, idle_timeout=0.05) as informer:
        await until(lambda: len(api.watched(NAMESPACES)) >= 2, "re-watched")
        assert informer.streams[NAMESPACES].errors >= 1
        assert informer.streams[NAMESPACES].lists == 1
