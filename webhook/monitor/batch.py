"""The monitor's body parser, pure: an audit.k8s.io/v1 EventList body in, its items out, in slices.

orjson holds the GIL for a whole `loads` (a worker thread would hold the event loop just the
same), and a capped 16 MiB body of real events takes ~100 ms to parse, of small pathological
items over a second. So a body is parsed in slices that `iter_items` yields one at a time (the
server gives the loop back between them), and the item count is checked after each slice.

The fast path reads the API server's own encoding: the envelope ends with `"items":[ ... ]}`
and the items (objects) are separated by `},{`. A cut at `},{` is tried about every `SLICE_BYTES`;
`[` + slice + `]` parses only when the cut is between two items (a cut inside a string or a
nested object leaves the slice unbalanced), so a failed slice is retried twice as long, which
keeps the work linear. Whenever the fast path does not apply (another layout, an envelope that
does not check out) the body is parsed whole, as it always was.

Invariants:
- `iter_items` yields exactly `orjson.loads(body)["items"]`, in order, or raises `BatchError`
  (the one-line reason) for a body that is not an EventList, holds over `max_items` items or
  over `MAX_CONTAINERS` objects and arrays or `MAX_COMMAS` commas (checked before anything is
  parsed).
- No slice parsed is longer than twice `SLICE_BYTES` plus one item, except on the whole-body path.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

API_VERSION = "audit.k8s.io/v1"
SLICE_BYTES = 256 << 10  # ~300 Metadata events: about 2 ms of parsing
MAX_ITEMS = 100_000  # items in one EventList; the API server sends at most 400 (batch max size)
# Objects and arrays in one body (braces in strings count too): what parsing allocates most of.
# Real events hold one per 60 bytes or more (a RequestResponse Pod spec about one per 25), so a
# capped 16 MiB body of them stays under it; a body of empty arrays would make 5.6 M of them.
MAX_CONTAINERS = 1_000_000
# Commas (in strings too) bound the scalars an array or object can hold: real events have one per
# 35 bytes or more, a 16 MiB body of them ~500,000; a body of 8 M zeros would make 64 MiB of list.
MAX_COMMAS = 2_000_000
_ITEMS = b'"items":['
_CUT = b"},{"


class BatchError(ValueError):
    """A body that is not an EventList; str: the one-line reason. `too_many`: over the item cap."""

    def __init__(self, reason: str, *, too_many: bool = False) -> None:
        super().__init__(reason)
        self.too_many = too_many


def parse_batch(body: bytes, max_items: int = MAX_ITEMS) -> list[Any]:
    """All the items of an EventList at once (tests, benchmarks); BatchError when not one."""
    return [item for part in iter_items(body, max_items) for item in part]


def iter_items(body: bytes, max_items: int = MAX_ITEMS) -> Iterator[list[Any]]:
    """The items of an `audit.k8s.io/v1` EventList, a slice at a time; BatchError when not one."""
    if body.count(b"{") + body.count(b"[") > MAX_CONTAINERS:
        raise BatchError(
            f"EventList holds more than {MAX_CONTAINERS} JSON objects and arrays", too_many=True
        )
    if body.count(b",") > MAX_COMMAS:
        raise BatchError(f"EventList holds more than {MAX_COMMAS} JSON values", too_many=True)
    region = _items_region(body)
    if region is not None:
        count = 0
        for part in _cut(body, *region):
            count += len(part)
            _check_count(count, max_items)
            yield part
        return
    items = _whole(body)
    _check_count(len(items), max_items)
    yield items


def _check_count(count: int, max_items: int) -> None:
    if count > max_items:
        raise BatchError(f"EventList holds more than {max_items} items", too_many=True)


def _whole(body: bytes) -> list[Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BatchError(f"body is not JSON: {exc.msg} at byte {exc.pos}") from None
    _check_envelope(doc)
    items = doc.get("items")
    if items is None:
        return []
    if not isinstance(items, list):
        raise BatchError("EventList items is not a list")
    return items


def _check_envelope(doc: Any) -> None:
    if not isinstance(doc, dict):
        raise BatchError("body is not a JSON object")
    if doc.get("kind") != "EventList" or doc.get("apiVersion") != API_VERSION:
        raise BatchError(f"body is not an {API_VERSION} EventList")


def _items_region(body: bytes) -> tuple[int, int] | None:
    """Where the items (between `[` and `]`) are, when the envelope is the API server's kind:
    `"items":[` ... `]}` at its end, and the body with the items emptied an EventList whose
    (last, as orjson keeps it) items is that empty list. None: parse the body whole."""
    start = body.find(_ITEMS)
    end = len(body.rstrip())
    if start < 0 or not body.startswith(b"]}", end - 2):
        return None
    start += len(_ITEMS)
    end -= 2
    if end < start:
        return None
    try:
        envelope = orjson.loads(body[:start] + body[end:])
        _check_envelope(envelope)
    except (orjson.JSONDecodeError, BatchError):
        return None
    if envelope.get("items") != []:
        return None
    return start, end


def _cut(body: bytes, start: int, end: int) -> Iterator[list[Any]]:
    """Slices of `body[start:end]`: each attempt `[` + slice + `]`; a failure doubles the reach
    of the next cut. The last slice runs to `end`; if it does not parse, the whole body does not
    either, and `_whole` gives the reason."""
    at = start
    while at < end:
        reach = SLICE_BYTES
        while True:
            cut = body.find(_CUT, at + reach, end)
            stop = end if cut < 0 else cut + 1  # the slice keeps its closing brace
            try:
                part = orjson.loads(b"[" + body[at:stop] + b"]")
            except orjson.JSONDecodeError:
                if stop == end:
                    _whole(body)  # raises the reason (the region alone may be what is wrong)
                    raise BatchError("body is not a valid EventList") from None
                reach *= 2
                continue
            yield part
            at = stop + 1 if stop < end else end  # past the comma between two items
            break
