"""`iter_items`, the monitor's EventList parser: what an attacker can put in an audited string
cannot get a batch refused, memory is bounded by slice, and the slices give what a whole parse
gives (requestObject and responseObject dropped)."""

from __future__ import annotations

import tracemalloc
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from monitor_kit import event_list

from webhook.monitor import batch
from webhook.monitor.batch import BatchError, iter_items, parse_batch

HEAD = '{"kind":"EventList","apiVersion":"audit.k8s.io/v1",'


def configmap_create(i: int, value: str = "") -> bytes:
    return orjson.dumps(
        {
            "kind": "Event",
            "auditID": f"id-{i}",
            "stage": "ResponseComplete",
            "verb": "create",
            "objectRef": {"resource": "configmaps", "namespace": "a", "name": f"c{i}"},
            "requestObject": {"data": {"k": value}},
            "responseObject": {"data": {"k": value}},
        }
    )


@pytest.mark.parametrize("char", ["{", "[", ","])
def test_braces_and_commas_in_an_audited_string_do_not_refuse_the_batch(char: str) -> None:
    # 11 ConfigMaps of 99 KB values (what the truncating backend lets through), 389 others
    events = [configmap_create(i, char * 99_000) for i in range(11)]
    events += [configmap_create(100 + i) for i in range(389)]
    items = parse_batch(event_list(events))
    assert [item["auditID"] for item in items][:2] == ["id-0", "id-1"]
    assert len(items) == 400


def test_one_huge_string_of_brackets_is_taken() -> None:
    body = event_list([configmap_create(0, "[" * 3_000_000), configmap_create(1)])
    assert len(parse_batch(body)) == 2


def test_the_objects_are_dropped_from_every_item() -> None:
    (item,) = parse_batch(event_list([configmap_create(0, "x")]))
    assert "requestObject" not in item
    assert "responseObject" not in item
    assert item["objectRef"]["name"] == "c0"


def test_a_capped_body_of_small_nested_objects_is_parsed_a_bounded_slice_at_a_time() -> None:
    per = b'{"v":[' + b",".join([b'{"a":"xy","b":"zw"}'] * 9) + b"]}"
    body = event_list([per] * 99_000)  # 16 MiB, 100,000 items: ~435 MiB parsed whole
    tracemalloc.start()
    try:
        items = 0
        for part in iter_items(body):
            items += len(part)
            del part
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert items == 99_000
    assert peak < 64 << 20, peak


def test_a_slice_that_does_not_parse_is_not_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # one item far longer than a slice, full of cuts inside its strings
    big = orjson.dumps({"s": ["},{" * 1000] * 1000})
    body = event_list([configmap_create(0), big, configmap_create(1)])
    parsed: list[int] = []
    loads = orjson.loads

    def counting(data: bytes) -> Any:
        parsed.append(len(data))
        return loads(data)

    monkeypatch.setattr(orjson, "loads", counting)
    assert len(parse_batch(body)) == 3
    assert sum(parsed) < 4 * len(body), (sum(parsed), len(body))


@pytest.mark.parametrize(
    "text",
    [
        HEAD + '"items":[{"a":1}],"x":[1]}',
        HEAD + '"items":[{"a":1}],"items":[{"b":2}]}',
        HEAD + '"items":[{"a":1}],"item\\u0073":[{"b":2}]}',
        HEAD + '"items":[{"a":1},{"b":"},{"}],"x":[[]]}',
    ],
)
def test_a_body_the_fast_path_misreads_gives_what_the_whole_parse_gives(text: str) -> None:
    body = text.encode()
    assert parse_batch(body) == orjson.loads(body)["items"]


def test_a_long_body_whose_items_are_not_its_last_still_parses_as_whole() -> None:
    events = [configmap_create(i) for i in range(3000)]  # several slices, then a key after
    body = event_list(events)[:-1] + b',"x":[1]}'
    assert len(parse_batch(body)) == 3000


_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(alphabet='{}[],"\\ab')
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=12,
)
_ITEMS = st.lists(st.dictionaries(st.sampled_from(["a", "b", "},{", "items"]), _VALUES))


@settings(max_examples=300, deadline=None)
@given(
    items=_ITEMS,
    after=st.one_of(st.none(), _VALUES),
    again=st.one_of(st.none(), _ITEMS),
    slice_bytes=st.sampled_from([8, 64, 1 << 18]),
)
def test_slices_give_the_whole_parse_or_say_why_not(
    items: list[Any], after: Any, again: list[Any] | None, slice_bytes: int
) -> None:
    doc = orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items})
    if again is not None:  # a second items key: orjson keeps the last
        doc = doc[:-1] + b',"items":' + orjson.dumps(again) + b"}"
    if after is not None:  # a key after the items
        doc = doc[:-1] + b',"zz":' + orjson.dumps(after) + b"}"
    expected = orjson.loads(doc)["items"]
    got: list[Any] = []
    reason = ""
    saved, batch.SLICE_BYTES = batch.SLICE_BYTES, slice_bytes
    try:
        for part in iter_items(doc):
            got += part
    except BatchError as exc:
        reason = str(exc)
    finally:
        batch.SLICE_BYTES = saved
    if reason:  # only when what was yielded is not how the whole parse begins
        assert "not in one list" in reason, doc
        assert got != expected[: len(got)], doc
    else:
        assert got == expected


def pod_update(i: int, nested: Any = None) -> bytes:
    """An event as the API server writes it (fields in struct order), of a Pod with 4 containers
    of 100 env entries each: lists of objects, a `},{` at every entry."""
    env = [{"name": f"E{k}", "value": "1"} for k in range(100)]
    pod = {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": f"p{i}", "namespace": "a"},
        "spec": {"containers": [{"name": f"c{j}", "env": env} for j in range(4)]},
        "nested": nested,
    }
    return orjson.dumps(
        {
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "RequestResponse",
            "auditID": f"id-{i}",
            "stage": "ResponseComplete",
            "verb": "update",
            "objectRef": {"resource": "pods", "namespace": "a", "name": f"p{i}"},
            "requestObject": pod,
            "responseObject": pod,
        }
    )


def _parsed_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    parsed: list[int] = []
    loads = batch._loads

    def counting(data: bytes) -> Any:
        parsed.append(len(data))
        return loads(data)

    monkeypatch.setattr(batch, "_loads", counting)
    return parsed


def test_a_batch_of_pods_under_the_api_servers_cap_is_cut_between_its_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = event_list([pod_update(i) for i in range(400)])  # ~9 MB: under the 10 MB cap
    parsed = _parsed_sizes(monkeypatch)
    assert [item["auditID"] for item in parse_batch(body)] == [f"id-{i}" for i in range(400)]
    slices = parsed[1:]  # parsed[0]: the envelope
    assert sum(slices) < len(body) + 2 * len(slices)  # every byte parsed once
    assert max(slices) < 2 * batch.SLICE_BYTES


@pytest.mark.parametrize("fooled", [False, True])
def test_events_nested_in_an_audited_object_cost_a_bounded_parse(
    monkeypatch: pytest.MonkeyPatch, fooled: bool
) -> None:
    # what an attacker can store: a list of objects that begin like audit Events, behind a
    # string whose brackets make the slice up to each of them look balanced (and one after,
    # that makes the whole item look balanced)
    fake = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "x": 1}
    before, after = ("}}}]", "{{{[") if fooled else ("", "")
    nested = {"s": before, "events": [fake] * 2000, "t": after}
    events = [pod_update(i, nested if i % 3 == 0 else None) for i in range(60)]
    body = event_list(events)
    monkeypatch.setattr(batch, "SLICE_BYTES", 4096)  # cuts land in the nested lists
    parsed = _parsed_sizes(monkeypatch)
    assert [item["auditID"] for item in parse_batch(body)] == [f"id-{i}" for i in range(60)]
    assert sum(parsed) <= 4 * len(body), (sum(parsed), len(body))
    assert max(parsed[1:]) < 2 * batch.SLICE_BYTES + 2 * len(events[0])
