"""Issue 23 item 6: a batch is judged event by event. The API server copies a client's `Audit-ID`
header and URI into the event as they came (k8s.io/apiserver@v0.37.2
pkg/endpoints/filters/audit_init.go: "no truncation is performed"; up to the 1 MiB header block),
so one event may be a megabyte of padding, or be built to be costly to parse: neither may refuse
its neighbours, hide its own verb, objectRef and user, or put the padding in an alert line."""

from __future__ import annotations

import copy
import tracemalloc
from typing import Any

import orjson
import pytest
from correlate_kit import OPTIONS, at, real_event
from monitor_kit import event_list

from webhook.correlate.detect import SENSITIVE_ACCESS, UNJUDGED
from webhook.monitor import batch
from webhook.monitor.batch import Unjudged, parse_batch
from webhook.monitor.feed import Feed

T0 = 1_900_000_000.0
MIB = 1 << 20


def exec_event(audit_id: str = "5d3626c9-f0a2-45a8-915e-1daae15cdb5e") -> dict[str, Any]:
    doc = at(real_event(b"5d3626c9-f0a2-45a8-915e-1daae15cdb5e"), T0)
    doc["stage"], doc["responseStatus"] = "ResponseComplete", {"code": 101}
    doc["auditID"] = audit_id
    return doc


def padded_get(i: int, pad: str) -> dict[str, Any]:
    doc = at(real_event(b"6dc1e0f3-9c6a-4053-ba1b-5431a20f6659"), T0 + i)
    doc["auditID"] = pad + str(i)
    return doc


def encoded(docs: list[dict[str, Any]]) -> bytes:
    # the API server's layout: each item begins {"kind":"Event","apiVersion":"audit.k8s.io/v1",
    for doc in docs:
        assert next(iter(doc)) == "kind"
    return event_list([orjson.dumps(d) for d in docs])


def judged(body: bytes) -> list[tuple[str, str, str]]:
    feed = Feed(OPTIONS)
    alerts = [a for part in batch.iter_items(body) for a in feed.take(part, T0).alerts]
    return [(a.event, a.name, a.audit_id) for a in alerts]


def test_a_padded_audit_id_neither_hides_its_exec_nor_reaches_the_alert_line() -> None:
    pad = "x" * MIB  # an Audit-ID header the size of the API server's header block
    body = encoded([padded_get(i, pad) for i in range(3)] + [exec_event(pad)])
    ((kind, name, audit_id),) = judged(body)
    assert (kind, name) == (SENSITIVE_ACCESS, "web")
    assert audit_id.startswith("x" * batch.KEPT_CHARS)
    assert len(audit_id) < 300  # the first characters, the length and a digest
    assert f"[{MIB} " in audit_id


def test_two_padded_audit_ids_alike_at_the_start_stay_two_requests() -> None:
    pad = "x" * MIB
    feed = Feed(OPTIONS)
    events = [exec_event(pad + "a"), exec_event(pad + "b")]
    taken = feed.take(parse_batch(encoded(events)), T0)
    assert taken.duplicates == 0
    assert len({a.audit_id for a in taken.alerts}) == 2


def test_a_padding_of_escaped_characters_is_capped_before_it_is_parsed() -> None:
    # Go's encoder writes `<` as \u003c: a 1 MiB header of them is a 6 MiB string in the event
    pad = "<" * MIB
    events = [exec_event(pad)]
    body = encoded(events).replace(b"<", b"\\u003c")
    assert len(body) > 6 * MIB
    tracemalloc.start()
    try:
        found = judged(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    ((kind, name, audit_id),) = found
    assert (kind, name) == (SENSITIVE_ACCESS, "web")
    assert len(audit_id) < 300
    assert peak < 3 * len(body)  # never the padding parsed (a copy or two of the bytes at most)


def test_an_event_too_costly_with_its_objects_is_judged_without_them() -> None:
    costly = exec_event("costly")
    # what an attacker can store: a custom resource of a million empty lists (~64 MiB parsed)
    costly["requestObject"] = {"spec": {"x": [[]] * 1_100_000}}
    costly["requestReceivedTimestamp"] = costly.pop("requestReceivedTimestamp")
    costly["stageTimestamp"] = costly.pop("stageTimestamp")
    costly["annotations"] = costly.pop("annotations")
    body = encoded([costly, exec_event("plain")])
    assert sorted(judged(body)) == [
        (SENSITIVE_ACCESS, "web", "costly"),
        (SENSITIVE_ACCESS, "web", "plain"),
    ]


def test_an_event_too_costly_even_without_objects_is_alerted_unjudged_beside_a_judged_one() -> None:
    costly = exec_event("costly")
    costly["user"] = {**costly["user"], "extra": {"k": [""] * 1_200_000}}
    body = encoded([costly, exec_event("plain")])
    items = parse_batch(body)
    unjudged = [i for i in items if isinstance(i, Unjudged)]
    assert [u.fields.get("auditID") for u in unjudged] == ["costly"]
    found = judged(body)
    assert (SENSITIVE_ACCESS, "web", "plain") in found
    assert (UNJUDGED, "web", "costly") in found


def test_a_batch_of_small_events_is_parsed_as_before() -> None:
    events = [padded_get(i, "id-") for i in range(400)]
    assert parse_batch(encoded(events)) == [
        {k: v for k, v in copy.deepcopy(e).items() if k not in batch.DROPPED} for e in events
    ]


@pytest.mark.parametrize("size", [100_000, MIB])  # capped parsed, and before it is parsed
def test_a_padded_uri_name_and_user_agent_reach_no_alert_line(size: int) -> None:
    pad = "u" * size
    event = exec_event("id")
    event["requestURI"] += "&x=" + pad
    event["userAgent"] = pad
    event["objectRef"]["name"] = "web" + pad
    event["impersonatedUser"] = {"username": pad, "groups": [pad]}
    feed = Feed(OPTIONS)
    (alert,) = feed.take(parse_batch(encoded([event])), T0).alerts
    line = orjson.dumps(alert.fields())
    assert len(line) < 4096
    assert alert.event == SENSITIVE_ACCESS
    assert alert.name.startswith("web")
