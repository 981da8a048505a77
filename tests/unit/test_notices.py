"""The notices: sent by the leader only, once; kept by a follower and sent on takeover; a
fence.lost names the workloads left in its namespace, from a bounded live list."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from webhook.cluster.apiserver import ApiError
from webhook.cluster.notices import Notice, Notices, workloads


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))

    warning = info


class Workloads:
    """Metadata-only lists of a namespace's workloads, by path."""

    def __init__(self, items: dict[str, list[str]], remaining: int = 0) -> None:
        self.items = items
        self.remaining = remaining
        self.fail = False
        self.gets: list[tuple[str, dict[str, str]]] = []

    async def get(
        self, path: str, query: Any = (), *, timeout: float | None, accept: str = ""
    ) -> dict[str, Any]:
        self.gets.append((path, dict(query)))
        if self.fail:
            raise ApiError(403, "forbidden")
        resource = path.rsplit("/", 1)[1]
        names = self.items.get(resource, [])
        meta = {"remainingItemCount": self.remaining} if names and self.remaining else {}
        return {"metadata": meta, "items": [{"metadata": {"name": n}} for n in names]}


def lost(namespace: str = "shop") -> Notice:
    return Notice("fence.lost", {"namespace": namespace}, warning=True, workloads_of=namespace)


async def drain(notices: Notices) -> None:
    task = asyncio.create_task(notices.run())
    for _ in range(50):
        await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_two_replicas_observing_the_same_change_send_it_once() -> None:
    logs = [Log(), Log()]
    counted: list[int] = []
    leader, follower = (Notices(log=log) for log in logs)
    follower.leading = lambda: False
    for notices in (leader, follower):
        notices.emit(
            Notice("webhook.drift", {"name": "kubefence"}, count=lambda: counted.append(1))
        )
    assert logs[0].lines == [("webhook.drift", {"name": "kubefence"})]
    assert logs[1].lines == []
    assert counted == [1]  # the event counter too: once per cluster


async def test_a_new_leader_sends_what_it_kept_since_the_previous_holder_was_last_seen() -> None:
    log, now = Log(), [100.0]
    notices = Notices(log=log, clock=lambda: now[0])
    leading = False
    notices.leading = lambda: leading
    notices.emit(Notice("fence.restored", {"namespace": "old"}))
    now[0] = 110.0
    notices.emit(Notice("fence.restored", {"namespace": "recent"}))
    assert log.lines == []
    leading = True
    notices.leadership_changed(True, since=105.0)
    assert log.lines == [("fence.restored", {"namespace": "recent", "replayed": True})]
    notices.leadership_changed(True, since=0.0)  # kept notices are sent at most once
    assert len(log.lines) == 1


async def test_fence_lost_names_the_workloads_left_in_its_namespace() -> None:
    log = Log()
    lister = Workloads({"pods": ["web-1"], "deployments": ["web"]})
    notices = Notices(log=log, settle=0, lister=lister)
    notices.emit(lost())
    notices.emit(Notice("fence.restored", {"namespace": "shop"}))
    await drain(notices)
    assert log.lines == [
        (
            "fence.lost",
            {
                "namespace": "shop",
                "workloads": ["Pod/web-1", "Deployment/web"],
                "workloads_more": 0,
            },
        ),
        ("fence.restored", {"namespace": "shop"}),  # after the lost line, as observed
    ]
    pods = [q for p, q in lister.gets if p == "/api/v1/namespaces/shop/pods"]
    assert pods == [
        {"limit": "20", "fieldSelector": "status.phase!=Succeeded,status.phase!=Failed"}
    ]
    assert {p for p, _ in lister.gets} >= {
        "/apis/apps/v1/namespaces/shop/deployments",
        "/apis/batch/v1/namespaces/shop/cronjobs",
        "/api/v1/namespaces/shop/replicationcontrollers",
    }


async def test_the_names_are_bounded_and_the_rest_counted() -> None:
    lister = Workloads(
        {"pods": [f"p{i}" for i in range(15)], "jobs": [f"j{i}" for i in range(15)]}, remaining=100
    )
    named = await workloads(lister, "shop")
    assert len(named["workloads"]) == 20
    assert named["workloads_more"] == 210


async def test_a_failed_list_is_said_and_the_notice_still_sent() -> None:
    log = Log()
    lister = Workloads({})
    lister.fail = True
    notices = Notices(log=log, settle=0, lister=lister)
    notices.emit(lost())
    await drain(notices)
    assert log.lines == [
        ("fence.lost", {"namespace": "shop", "workloads_error": "ApiError: HTTP 403: forbidden"})
    ]


async def test_leadership_lost_while_listing_keeps_the_notice_unsent() -> None:
    log = Log()
    leading = True
    notices = Notices(log=log, settle=0, lister=Workloads({"pods": ["web-1"]}))
    notices.leading = lambda: leading
    notices.emit(lost())
    leading = False
    await drain(notices)
    assert log.lines == []
    leading = True
    notices.leadership_changed(True, since=float("-inf"))
    await drain(notices)
    assert [event for event, _ in log.lines] == ["fence.lost"]
    assert log.lines[0][1]["replayed"] is True


async def test_a_takeover_replays_what_the_previous_leader_may_still_have_been_listing() -> None:
    """The previous leader sends a fence.lost only after the settle and its list: one it observed
    that long before it stopped may never have gone out."""
    log, now = Log(), [100.0]
    notices = Notices(log=log, clock=lambda: now[0], settle=2.0, lister=Workloads({}))
    notices.leading = lambda: False
    notices.emit(lost("listed-too-late"))  # kept at 100
    now[0] = 120.0
    notices.leading = lambda: True
    notices.leadership_changed(True, since=106.0)  # 100 + 2 s settle + 5 s list > 106
    notices.settle = 0  # the replay's own settle, not waited for here
    await drain(notices)
    assert [fields["namespace"] for _, fields in log.lines] == ["listed-too-late"]
    assert log.lines[0][1]["replayed"] is True
