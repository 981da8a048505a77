"""The monitor's body parser, pure: an audit.k8s.io/v1 EventList body in, its items out, in slices.

orjson holds the GIL for a whole `loads` (a worker thread would hold the event loop just the
same), and a capped 16 MiB body of real events takes ~100 ms to parse, of small pathological
items over a second. So a body is parsed in slices that `iter_items` yields one at a time (the
server judges each and gives the loop back between them; no list of every item is kept), and
the item count is checked after each slice.

The fast path reads the API server's own encoding: the envelope ends with `"items":[ ... ]}`
and every item begins `{"kind":"Event","apiVersion":"audit.k8s.io/v1",` (struct order), so a
cut is tried at `},` + that (`_EVENT_CUT`: never inside a string; `},{` alone is at every entry
of every list of objects in an event) about every `SLICE_BYTES`; items of another shape are cut
at `},{`. `[` + slice + `]` parses only when the cut is between two items. A cut whose slice
opens more brackets than it closes (counted cut by cut, exactly with strings emptied for
`_EVENT_CUT`) is passed over unparsed; a failed slice is retried with the next cut past twice
the reach, never the same one again, the reach starting again at each slice: the work stays
linear and one odd item does not make the rest of the body one slice.
Whenever the fast path does not apply (another layout, an envelope that does not check out) the
body is parsed whole.

Memory: what one `loads` allocates is bounded before it runs. Measured (tracemalloc, orjson 3,
CPython 3.12), the worst a JSON value costs is a one-key object (`{"":0}`: 192 bytes, its
pointer included) and a one-character string or a list slot (64 bytes per value, a comma each).
`_parse_cost` counts objects, arrays and commas with C-speed `bytes.count`, which also counts
those in strings; only when that over-estimate passes `MAX_PARSE_BYTES` (a slice of about a
megabyte of braces, never a real one) is the count redone outside strings, so braces an
attacker puts in an audited string (a ConfigMap value) cannot get a batch refused.

Invariants:
- `iter_items` yields `orjson.loads(body)["items"]`, in order, each object item without
  `requestObject` and `responseObject` (never read, the bulk of a RequestResponse event), or
  raises `BatchError` (the one-line reason) for a body that is not an EventList, holds over
  `max_items` items, or one parse of which would allocate over `MAX_PARSE_BYTES`.
- No slice parsed is longer than four times `SLICE_BYTES` plus one item, except on the
  whole-body path; a slice that does not parse is never tried again.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson

API_VERSION = "audit.k8s.io/v1"
SLICE_BYTES = 256 << 10  # ~300 Metadata events: about 2 ms of parsing
MAX_ITEMS = 100_000  # items in one EventList; the API server sends at most 400 (batch max size)
CONTAINER_BYTES = 192  # the most one JSON object or array costs parsed (see above)
VALUE_BYTES = 64  # the most one more value (a comma) costs parsed
# One parse (a slice, or the whole body off the fast path): 64 MiB of Python objects, with two
# bodies buffered and the process itself well under the chart's 256 Mi (README "Live monitor").
MAX_PARSE_BYTES = 64 << 20
DROPPED = ("requestObject", "responseObject")
_ITEMS = b'"items":['
_CUT = b"},{"
# Every audit Event the API server writes begins so: encoding/json writes a struct's fields in
# their order, TypeMeta (kind, apiVersion) first (k8s.io/apiserver/pkg/apis/audit/v1/types.go).
# The quote after `{` cannot be escaped, so this is never inside a string: it is a boundary
# between two items, or inside one (an object list in a requestObject), where a slice is
# unbalanced and `_Depth` passes it over. Real items hold lists of objects (containers, env,
# managedFields) at every `},{` inside them, never this.
_EVENT_HEAD = b'{"kind":"Event","apiVersion":"audit.k8s.io/v1",'
_EVENT_CUT = b"}," + _EVENT_HEAD
_SKIPS = 64  # unbalanced cuts passed over before a slice is tried regardless
# A JSON string from its opening quote (escapes skipped); `"?`: one a slice cut short.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)


class BatchError(ValueError):
    """A body that is not an EventList; str: the one-line reason. `too_many`: over a cap."""

    def __init__(self, reason: str, *, too_many: bool = False) -> None:
        super().__init__(reason)
        self.too_many = too_many


def parse_batch(body: bytes, max_items: int = MAX_ITEMS) -> list[Any]:
    """All the items of an EventList at once (tests, benchmarks); BatchError when not one."""
    return [item for part in iter_items(body, max_items) for item in part]


def iter_items(body: bytes, max_items: int = MAX_ITEMS) -> Iterator[list[Any]]:
    """The items of an `audit.k8s.io/v1` EventList, a slice at a time; BatchError when not one."""
    region = _items_region(body)
    if region is None:
        items = _whole(body)
        _check_count(len(items), max_items)
        yield _lean(items)
        return
    count = 0
    for part in _cut(body, *region):
        count += len(part)
        _check_count(count, max_items)
        yield _lean(part)


def _lean(items: list[Any]) -> list[Any]:
    for item in items:
        if isinstance(item, dict):
            for key in DROPPED:
                item.pop(key, None)
    return items


def _check_count(count: int, max_items: int) -> None:
    if count > max_items:
        raise BatchError(f"EventList holds more than {max_items} items", too_many=True)


def _loads(data: bytes) -> Any:
    """`orjson.loads` once its cost is known to be within `MAX_PARSE_BYTES`."""
    cost = _parse_cost(data)
    if cost > MAX_PARSE_BYTES:
        cost = _parse_cost(_STRING.sub(b'""', data))
        if cost > MAX_PARSE_BYTES:
            raise BatchError(
                f"EventList would take over {MAX_PARSE_BYTES >> 20} MiB to parse"
                f" (~{cost >> 20} MiB of JSON objects, arrays and values)",
                too_many=True,
            )
    return orjson.loads(data)


def _parse_cost(data: bytes) -> int:
    containers = data.count(b"{") + data.count(b"[")
    return containers * CONTAINER_BYTES + data.count(b",") * VALUE_BYTES


def _whole(body: bytes) -> list[Any]:
    try:
        doc = _loads(body)
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
        envelope = _loads(body[:start] + body[end:])
        _check_envelope(envelope)
    except (orjson.JSONDecodeError, BatchError):
        return None
    if envelope.get("items") != []:
        return None
    return start, end


def _cut(body: bytes, start: int, end: int) -> Iterator[list[Any]]:
    """Slices of `body[start:end]`: each attempt `[` + slice + `]`, cut at the first `_EVENT_CUT`
    (or, for items not as the API server writes them, `_CUT`) past `SLICE_BYTES` whose slice
    `_Depth` finds balanced. After a failure the next cut is searched past twice the reach and
    past the failed one (never the same slice twice); the reach starts again at each slice. The
    last slice runs to `end`; when it does not parse, the body is parsed whole: its items past
    those yielded when the yielded ones are its first (a body orjson reads otherwise than the
    fast path assumed: a key after the items, a second items key), else the reason."""
    events = body.startswith(_EVENT_HEAD, start)
    mark = _EVENT_CUT if events else _CUT
    at = start
    yielded = 0
    while at < end:
        reach = SLICE_BYTES
        floor = at
        depth = _Depth(body, at, exact=events)
        while True:
            cut = body.find(mark, max(at + reach, floor), end)
            stop = end if cut < 0 else cut + 1  # the slice keeps its closing brace
            if stop < end and not depth.balanced_to(stop):
                floor = stop + 1  # surely inside an item: the next cut, nothing parsed
                continue
            try:
                part = _loads(b"[" + body[at:stop] + b"]")
            except orjson.JSONDecodeError:
                if stop == end:
                    yield from _rest_of_whole(body, start, at, yielded)
                    return
                reach *= 2
                floor = stop + 1
                depth.failed()
                continue
            yielded += len(part)
            yield part
            at = stop + 1 if stop < end else end  # past the comma between two items
            break


class _Depth:
    """Whether `body[at:stop]` opens as many objects and arrays as it closes, counted cut by cut
    (each byte once per slice: linear). Brackets are first counted in strings too (C-speed
    `bytes.count`); when that says unbalanced, or a slice it called balanced failed, and the
    cuts are `_EVENT_CUT`s, the count is redone with strings emptied, which is exact: such a cut
    is never inside a string (see `_EVENT_CUT`), so each stretch between two starts outside
    one. With `_CUT` (which strings may hold) an unbalanced cut is passed over `_SKIPS` times
    per attempt at most, then the slice is tried regardless."""

    def __init__(self, body: bytes, at: int, *, exact: bool) -> None:
        self.body = body
        self.exact = exact
        self.raw = _Counts(at)
        self.strings_emptied = _Counts(at)
        self.trust_raw = True
        self.skipped = 0

    def balanced_to(self, stop: int) -> bool:
        if self.raw.advance(self.body, stop) and self.trust_raw:
            return True
        if self.exact:
            return self.strings_emptied.advance(self.body, stop, empty_strings=True)
        self.skipped += 1
        return self.skipped > _SKIPS

    def failed(self) -> None:
        self.trust_raw = False
        self.skipped = 0


class _Counts:
    """Objects and arrays opened minus closed in `body[at:upto]`."""

    def __init__(self, at: int) -> None:
        self.upto = at
        self.objects = 0
        self.arrays = 0

    def advance(self, body: bytes, stop: int, *, empty_strings: bool = False) -> bool:
        """Counts extended to `stop`; whether they are balanced there."""
        if stop > self.upto:
            part = body[self.upto : stop]
            if empty_strings:
                part = _STRING.sub(b'""', part)
            self.objects += part.count(b"{") - part.count(b"}")
            self.arrays += part.count(b"[") - part.count(b"]")
            self.upto = stop
        return self.objects == 0 and self.arrays == 0


def _rest_of_whole(body: bytes, start: int, at: int, yielded: int) -> Iterator[list[Any]]:
    """The items of the whole parse past the `yielded` ones (`body[start:at]`), which must be
    its first: checked by parsing them again, only on this path (a body not as the API server
    encodes it)."""
    items = _whole(body)  # raises the reason when the body is not an EventList
    if yielded and items[:yielded] != _loads(b"[" + body[start : at - 1] + b"]"):
        raise BatchError("body is not a valid EventList (its items are not in one list)")
    if len(items) > yielded:
        yield items[yielded:]
