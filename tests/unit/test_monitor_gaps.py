"""`evasion.audit_gap` (issue 23 item 6): the webhook's own decisions cover what the feed drops.

The truncating backend drops an event still over its limit after truncation (k8s.io/apiserver
plugin/pkg/audit/truncate/truncate.go), which a padded `Audit-ID` header makes an exec's: no
audit webhook ever sees it. A sensitive decision that no event joins within the window is alerted,
by correlate's own gap rules, so nothing the report calls joined, retried, unverified or
uncovered cries wolf."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from correlate_kit import OPTIONS, at, real_decision, real_event

from webhook.correlate.decision_reader import decision_record
from webhook.correlate.detect import AUDIT_GAP
from webhook.correlate.records import DecisionRecord
from webhook.correlate.timestamps import format_time
from webhook.monitor.feed import Feed
from webhook.monitor.gaps import GapWatch

T0 = 1_900_000_000.0
WINDOW = 5.0
EXEC_DECISION = b"00ff48d5-8fa9-4743-a5f4-55f1cc877b4b"
API_SERVER = "commonName=kube-apiserver"


def exec_decision(t: float, decision_id: str = "exec-1", **changes: Any) -> DecisionRecord:
    doc = real_decision(EXEC_DECISION)
    doc.update({"decision_id": decision_id, "timestamp": format_time(t), "client": API_SERVER})
    doc.update(changes)
    record = decision_record(doc)
    assert record is not None
    return record


def exec_event(t: float, decision_id: str = "exec-1", duration: float = 0.004) -> dict[str, Any]:
    doc = at(real_event(b"5d3626c9-f0a2-45a8-915e-1daae15cdb5e"), t, duration)
    doc["stage"], doc["responseStatus"] = "ResponseComplete", {"code": 101}
    doc["annotations"] = {**doc["annotations"], "validate.kubefence.io/decision-id": decision_id}
    return doc


def innocuous_get(t: float) -> dict[str, Any]:
    return at(real_event(b"6dc1e0f3-9c6a-4053-ba1b-5431a20f6659"), t)


def new_feed() -> Feed:
    return Feed(OPTIONS, gaps=GapWatch(dataclasses.replace(OPTIONS, join_window=WINDOW)))


def gaps(feed: Feed, t: float, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    taken = feed.take(copy.deepcopy(events), t)
    return [a.fields() for a in taken.alerts if a.event == AUDIT_GAP]


def test_an_exec_no_event_records_is_an_audit_gap_once_the_feed_passes_the_window() -> None:
    feed = new_feed()
    assert gaps(feed, T0, [innocuous_get(T0)]) == []  # the feed covers from here
    assert feed.decision(exec_decision(T0 + 1)) == []
    assert gaps(feed, T0 + 3, [innocuous_get(T0 + 3)]) == []  # within the window: may come
    (gap,) = gaps(feed, T0 + 8, [innocuous_get(T0 + 8)])
    assert gap["decision_id"] == "exec-1"
    assert (gap["operation"], gap["resource"], gap["subresource"]) == ("CONNECT", "pods", "exec")
    assert (gap["namespace"], gap["name"], gap["user"]) == ("fenced", "web", "kubefence-admin")
    assert gap["cause"] == "no-event"
    assert gaps(feed, T0 + 20, [innocuous_get(T0 + 20)]) == []  # alerted once


def test_an_exec_its_event_records_is_no_gap_whether_it_comes_before_or_after() -> None:
    feed = new_feed()
    gaps(feed, T0, [innocuous_get(T0)])
    feed.decision(exec_decision(T0 + 1, "exec-1"))
    assert gaps(feed, T0 + 2, [exec_event(T0 + 1, "exec-1")]) == []
    gaps(feed, T0 + 2, [exec_event(T0 + 2, "exec-2")])  # its event first
    feed.decision(exec_decision(T0 + 2, "exec-2"))
    assert gaps(feed, T0 + 30, [innocuous_get(T0 + 30)]) == []


def test_a_stalled_feed_resolves_nothing() -> None:
    # its silence is the canary's to alert: a decision held while no batch comes is no gap yet
    feed = new_feed()
    gaps(feed, T0, [innocuous_get(T0)])
    feed.decision(exec_decision(T0 + 1))
    assert gaps(feed, T0 + 60, []) == []


def test_a_decision_before_the_feed_covers_is_no_gap() -> None:
    feed = new_feed()
    feed.decision(exec_decision(T0 - 10))  # the monitor had taken no batch yet
    gaps(feed, T0, [innocuous_get(T0)])
    assert gaps(feed, T0 + 30, [innocuous_get(T0 + 30)]) == []


def test_a_decision_for_a_client_that_is_not_the_api_server_is_no_gap() -> None:
    # anyone who reaches serve's port without a client CA can post an AdmissionReview
    feed = new_feed()
    gaps(feed, T0, [innocuous_get(T0)])
    feed.decision(exec_decision(T0 + 1, client="unauthenticated"))
    assert gaps(feed, T0 + 30, [innocuous_get(T0 + 30)]) == []
    assert feed.gaps is not None
    assert feed.gaps.counts.get("unverified") == 1


def test_an_exec_beside_a_longer_recorded_exec_into_the_same_pod_is_still_a_gap() -> None:
    # a CONNECT is admitted once per request: no retry of a recorded one hides a dropped one
    feed = new_feed()
    gaps(feed, T0, [innocuous_get(T0)])
    feed.decision(exec_decision(T0 + 1, "long"))
    feed.decision(exec_decision(T0 + 2, "padded"))
    (gap,) = gaps(feed, T0 + 30, [exec_event(T0 + 1, "long", duration=10.0)])
    assert gap["decision_id"] == "padded"


def test_a_second_webhook_call_of_a_recorded_update_is_retried_not_a_gap() -> None:
    feed = new_feed()
    gaps(feed, T0, [innocuous_get(T0)])
    debug = {"operation": "UPDATE", "subresource": "ephemeralcontainers"}
    feed.decision(exec_decision(T0 + 1.000, "first", **debug))
    feed.decision(exec_decision(T0 + 1.002, "second", **debug))
    event = exec_event(T0 + 1, "first", duration=0.01)
    event["verb"], event["objectRef"]["subresource"] = "patch", "ephemeralcontainers"
    assert gaps(feed, T0 + 30, [event, innocuous_get(T0 + 30)]) == []
    assert feed.gaps is not None
    assert feed.gaps.counts.get("retried") == 1


def test_a_takeover_starts_the_coverage_again() -> None:
    feed = new_feed()
    gaps(feed, T0, [innocuous_get(T0)])
    feed.decision(exec_decision(T0 + 1))
    renewed = feed.renewed()  # what the previous holder held stays with it
    gaps(renewed, T0 + 20, [innocuous_get(T0 + 20)])
    assert gaps(renewed, T0 + 40, [innocuous_get(T0 + 40)]) == []


def test_a_flood_of_unverified_decisions_does_not_push_the_real_one_out() -> None:
    # Anyone who reaches serve's port may send it reviews: their decisions can never be gaps
    # (no API server made them), and held they would take the places of the real ones.
    feed = new_feed()
    gaps(feed, T0, [innocuous_get(T0)])
    feed.decision(exec_decision(T0 + 1, "real-exec"))
    for i in range(10_001):
        feed.decision(exec_decision(T0 + 1.5, f"forged-{i}", client="unauthenticated"))
    (gap,) = gaps(feed, T0 + 8, [innocuous_get(T0 + 8)])
    assert gap["decision_id"] == "real-exec"
