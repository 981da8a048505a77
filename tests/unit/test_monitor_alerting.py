"""The monitor's alerts as Alertmanager alerts (issue 28 item 3, pure part): labels and
annotations, the re-post schedule that outlives an Alertmanager restart, the queue's policy and
the retry backoff."""

from __future__ import annotations

import pytest

from webhook.correlate.detect import BYPASS, FEED_SILENT, SENSITIVE_ACCESS, Alert
from webhook.correlate.timestamps import format_time
from webhook.monitor.alerting import (
    AlertBook,
    AlertQueue,
    DeliveryPolicy,
    Posting,
    alertname,
    annotations_of,
    key_of,
    labels_of,
    parse_label,
    retry_delay,
    retryable,
)

T0 = 1_800_000_000.0
POLICY = DeliveryPolicy(resend=60.0, lifetime=600.0, labels={"cluster": "prod-eu"})


def bypass(cause: str = "fail-open", user: str = "mallory", namespace: str = "shop") -> Alert:
    return Alert(
        event=BYPASS,
        time=format_time(T0),
        audit_id="a1b2",
        user=user,
        verb="create",
        resource="apps/deployments",
        namespace=namespace,
        name="web",
        code=201,
        cause=cause,
        source_ips=("10.0.0.7",),
    )


def silent() -> Alert:
    return Alert(
        event=FEED_SILENT,
        time=format_time(T0),
        cause="canary-missing",
        user_agent="kubefence-monitor-canary/ab/3",
    )


def test_a_bypass_is_labelled_by_what_routes_and_silences_match() -> None:
    assert labels_of(bypass(), POLICY.labels) == {
        "alertname": "KubefenceBypass",
        "event": "evasion.bypass",
        "cause": "fail-open",
        "namespace": "shop",
        "user": "mallory",
        "severity": "critical",
        "cluster": "prod-eu",
    }


def test_empty_fields_are_no_labels() -> None:
    assert labels_of(silent()) == {
        "alertname": "KubefenceFeedSilent",
        "event": "evasion.feed_silent",
        "cause": "canary-missing",
        "severity": "critical",
    }


def test_annotations_carry_the_summary_the_audit_id_and_a_remedy_by_cause() -> None:
    notes = annotations_of(bypass())
    assert notes["audit_id"] == "a1b2"
    assert notes["summary"] == (
        "kubefence monitor: evasion.bypass (fail-open): mallory create apps/deployments web in shop"
    )
    assert notes["source_ips"] == "10.0.0.7"
    assert notes["code"] == "201"
    assert "user" not in notes  # a label already
    assert "failurePolicy Ignore" in notes["remedy"]
    assert annotations_of(bypass("dodged"))["remedy"] != notes["remedy"]
    assert "was deleted" in annotations_of(bypass("unregistered"))["remedy"]


def test_a_kind_not_named_yet_gets_a_camel_case_alertname() -> None:
    assert alertname("evasion.some_new_thing") == "KubefenceSomeNewThing"
    assert alertname(SENSITIVE_ACCESS) == "KubefenceSensitiveAccess"


def test_a_raised_alert_is_posted_at_once_ending_four_periods_on() -> None:
    book = AlertBook(POLICY)
    post = book.raised(bypass(), T0)
    assert post.raised == T0
    assert post.alert["startsAt"] == format_time(T0)
    assert post.alert["endsAt"] == format_time(T0 + 240)
    assert post.alert["labels"]["alertname"] == "KubefenceBypass"


def test_active_alerts_are_posted_again_each_period_until_their_lifetime_ends() -> None:
    book = AlertBook(POLICY)
    book.raised(bypass(), T0)
    assert book.due(T0 + 59) == []
    (again,) = book.due(T0 + 60)
    assert again.raised is None
    assert again.alert["startsAt"] == format_time(T0)  # the same alert in Alertmanager
    assert again.alert["endsAt"] == format_time(T0 + 300)
    assert book.due(T0 + 61) == []
    # near its end, endsAt is the end of its lifetime, not four periods on
    reposts = [book.due(T0 + 60 * n) for n in range(2, 10)]
    assert reposts[-1][0].alert["endsAt"] == format_time(T0 + 600)
    (resolved,) = book.due(T0 + 600)
    assert resolved.alert["endsAt"] == format_time(T0 + 600)
    assert len(book) == 0
    assert book.due(T0 + 700) == []


def test_raised_again_is_one_alert_its_start_kept_its_lifetime_extended() -> None:
    book = AlertBook(POLICY)
    book.raised(bypass(), T0)
    post = book.raised(bypass(), T0 + 500)
    assert len(book) == 1
    assert post.alert["startsAt"] == format_time(T0)
    assert all(p.alert["endsAt"] > format_time(T0 + 600) for p in book.due(T0 + 600))
    assert len(book) == 1
    book.raised(bypass(user="eve"), T0 + 500)
    assert len(book) == 2  # other labels: another alert


def test_a_silent_feed_stays_active_until_a_canary_comes_back_after_it() -> None:
    book = AlertBook(POLICY)
    book.raised(silent(), T0)
    assert [p.raised for p in book.due(T0 + 6000)] == [None]  # no lifetime: posted again
    assert book.feed_returned(T0 - 1, T0 + 6001) == []  # a canary from before the silence
    (resolved,) = book.feed_returned(T0 + 6002, T0 + 6003)
    assert resolved.alert["endsAt"] == format_time(T0 + 6003)
    assert resolved.alert["labels"]["event"] == FEED_SILENT
    assert len(book) == 0


def test_the_canary_coming_back_ends_no_other_alert() -> None:
    book = AlertBook(POLICY)
    book.raised(bypass(), T0)
    assert book.feed_returned(T0 + 5, T0 + 6) == []
    assert len(book) == 1


def test_active_alerts_are_bounded_the_oldest_forgotten() -> None:
    book = AlertBook(DeliveryPolicy(max_active=2))
    for user in ("a", "b", "c"):
        book.raised(bypass(user=user), T0)
    users = {p.alert["labels"]["user"] for p in book.due(T0 + 60)}
    assert users == {"b", "c"}


def posting(user: str, ends: str = "", raised: float | None = None) -> Posting:
    labels = {"alertname": "X", "user": user}
    return Posting(key_of(labels), {"labels": labels, "endsAt": ends}, raised)


def test_the_queue_keeps_one_state_per_alert_in_its_first_place() -> None:
    queue = AlertQueue(10)
    queue.put(posting("a", "1", raised=T0))
    queue.put(posting("b"))
    assert queue.put(posting("a", "2")) is None
    taken = queue.take(10)
    assert [p.alert["labels"]["user"] for p in taken] == ["a", "b"]
    assert taken[0].alert["endsAt"] == "2"  # the newest state
    assert taken[0].raised == T0  # still a first post: its latency is measured
    assert len(queue) == 0


def test_a_full_queue_pushes_out_its_oldest() -> None:
    queue = AlertQueue(2)
    assert queue.put(posting("a")) is None
    assert queue.put(posting("b")) is None
    dropped = queue.put(posting("c"))
    assert dropped is not None
    assert dropped.alert["labels"]["user"] == "a"
    assert [p.alert["labels"]["user"] for p in queue.take(1)] == ["b"]
    assert [p.alert["labels"]["user"] for p in queue.take(5)] == ["c"]


def test_retries_back_off_doubling_to_a_cap() -> None:
    policy = DeliveryPolicy(backoff=0.5, max_backoff=3.0)
    assert [retry_delay(n, policy) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize(
    ("status", "again"), [(500, True), (503, True), (429, True), (408, True), (400, False)]
)
def test_what_is_tried_again(status: int, again: bool) -> None:
    assert retryable(status) is again


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("cluster", "NAME=VALUE"),
        ("9x=a", "NAME=VALUE"),
        ("severity=low", "own labels"),
        ("cluster=", "empty"),
    ],
)
def test_a_label_that_will_not_do(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_label(text)
    assert parse_label("cluster=prod-eu") == ("cluster", "prod-eu")
