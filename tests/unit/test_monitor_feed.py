"""The monitor's intake (`Feed`, `iter_items`): de-duplication that a client's Audit-ID cannot
game, canaries that hide nothing, bounded memory, and EventList bodies parsed in slices."""

from __future__ import annotations

import copy
import gc
import tracemalloc
from typing import Any

import orjson
import pytest
from correlate_kit import OPTIONS, at, real_event
from monitor_kit import event_list

from webhook.correlate.detect import BYPASS, SENSITIVE_ACCESS
from webhook.monitor.batch import MAX_ITEMS, BatchError, iter_items, parse_batch
from webhook.monitor.canary import CANARY_AGENT, CanaryWatch
from webhook.monitor.feed import Feed

CHOSEN = "11111111-2222-3333-4444-555555555555"  # an Audit-ID header the client chose
T0 = 1_900_000_000.0


def dodged_create() -> dict[str, Any]:
    return real_event(b"6ff153f2-279b-413c-ac47-580ac1f2f0f2")  # no decision of ours: dodged


def allowed_exec() -> dict[str, Any]:
    doc = real_event(b"5d3626c9-f0a2-45a8-915e-1daae15cdb5e")
    doc["stage"], doc["responseStatus"] = "ResponseComplete", {"code": 101}  # the stream opened
    return doc


def innocuous_get() -> dict[str, Any]:
    return real_event(b"6dc1e0f3-9c6a-4053-ba1b-5431a20f6659")


def alerted(feed: Feed, events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    taken = feed.take(copy.deepcopy(events), T0)
    return [(a.event, a.name) for a in taken.alerts]


def test_a_reused_audit_id_hides_no_request() -> None:
    # kube-apiserver takes the client's Audit-ID header as the event's auditID
    # (k8s.io/apiserver@v0.37.2 pkg/endpoints/filters/audit_init.go): three requests, one ID.
    events = [
        {**at(innocuous_get(), T0), "auditID": CHOSEN},
        {**at(dodged_create(), T0 + 1), "auditID": CHOSEN},
        {**at(allowed_exec(), T0 + 2), "auditID": CHOSEN},
    ]
    found = alerted(Feed(OPTIONS), events)
    assert (BYPASS, "dodged") in found
    assert (SENSITIVE_ACCESS, "web") in found


def test_a_batch_sent_again_is_counted_and_alerted_once() -> None:
    events = [at(dodged_create(), T0), at(allowed_exec(), T0 + 1)]
    feed = Feed(OPTIONS)
    first = feed.take(copy.deepcopy(events), T0)
    again = feed.take(copy.deepcopy(events), T0 + 30)
    assert len(first.alerts) == 2
    assert first.stages == {"ResponseComplete": 2}
    assert again.alerts == []
    assert again.stages == {}
    assert again.duplicates == 2


def test_a_canary_looking_user_agent_skips_no_detection() -> None:
    events = [
        {**at(dodged_create(), T0), "userAgent": f"{CANARY_AGENT}deadbeef/1"},
        {**at(allowed_exec(), T0 + 1), "userAgent": f"{CANARY_AGENT}x"},
    ]
    watch = CanaryWatch(60.0)
    found = alerted(Feed(OPTIONS, watch), events)
    assert (BYPASS, "dodged") in found
    assert (SENSITIVE_ACCESS, "web") in found
    assert watch.last_seen is None  # no canary of ours came back


def test_a_pending_canary_is_recorded_and_its_event_still_judged() -> None:
    agent = f"{CANARY_AGENT}cafe/7"
    watch = CanaryWatch(60.0)
    watch.sent(agent, T0)
    found = alerted(Feed(OPTIONS, watch), [{**at(dodged_create(), T0), "userAgent": agent}])
    assert watch.last_seen == T0
    assert watch.check(T0 + 3600) is None  # nothing pending any more
    assert (BYPASS, "dodged") in found


def test_remembered_events_cost_the_same_whatever_the_audit_id_length() -> None:
    feed = Feed(OPTIONS)
    pad = "x" * 90_000  # a client's Audit-ID header: any length
    get = innocuous_get()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for batch in range(5):
            items = [
                {**get, "auditID": f"{pad}{batch}-{i}", "stage": stage}
                for i in range(100)
                for stage in ("RequestReceived", "ResponseComplete")
            ]
            feed.take(items, T0)
            del items
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 1 << 20, held  # 1,000 events of 90 KB IDs: their IDs are not kept (90 MB)


def test_slices_give_the_items_of_the_whole_body_in_order() -> None:
    events = [
        orjson.dumps({**at(dodged_create(), T0 + i), "auditID": f"id-{i}"}) for i in range(900)
    ]
    tricky = orjson.dumps({"note": "},{", "nested": [{}, {"a": "},{"}]})
    body = event_list([*events[:450], tricky, *events[450:]])
    parts = list(iter_items(body))
    assert len(parts) > 1  # 700 KiB: more than one slice, the loop given back between them
    assert [item for part in parts for item in part] == orjson.loads(body)["items"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (event_list([b"{}"] * (MAX_ITEMS + 1)), f"more than {MAX_ITEMS} items"),
        (event_list([b"[" + b"[]," * 400_000 + b"[]]"]), "over 64 MiB to parse"),
        (event_list([b"[" + b"0," * 1_100_000 + b"0]"]), "over 64 MiB to parse"),
        (event_list([b"{}", b"{"]), "not JSON"),
        (b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":{}}', "not a list"),
    ],
)
def test_a_body_over_the_caps_or_broken_is_one_reason(body: bytes, reason: str) -> None:
    with pytest.raises(BatchError, match=reason):
        parse_batch(body)


def test_an_event_with_a_value_json_cannot_encode_is_taken_not_a_type_error() -> None:
    odd = {**at(innocuous_get(), T0), "stageTimestamp": 10**30}  # past 64 bits
    taken = Feed(OPTIONS).take([odd, odd], T0)
    assert (taken.stages, taken.duplicates) == ({"ResponseComplete": 1}, 1)
