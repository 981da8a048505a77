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

Event by event: a slice whose parse would cost over `MAX_PARSE_BYTES` is not refused; its items
are cut apart (at `_EVENT_CUT`s `_Counts` finds balanced with strings emptied, exact, as above)
and each is parsed on its own within that cap. An item still over it is parsed without its
`requestObject` and `responseObject` (cut out at their keys one object deep, where the API server
writes them: after `responseStatus`, before `requestReceivedTimestamp`, apiserver
pkg/apis/audit/v1/types.go); one still over it, or that does not parse alone, is an `Unjudged`
with what could be read of it (its first `auditID`, `verb`, `requestURI`, `user`, `objectRef`),
which the feed alerts as `evasion.unjudged`. So no costly event refuses its neighbours.
A string the API server copies from the request as it came (the `Audit-ID` header, the URI, the
user agent: up to the 1 MiB header block, k8s.io/apiserver@v0.37.2
pkg/endpoints/filters/audit_init.go, "no truncation is performed") is kept to its first
`KEPT_CHARS` characters with its length and digest (`capped`), so a padded `auditID` is judged
by the fields after it and no alert line carries a megabyte.

Memory: what one `loads` allocates is bounded before it runs. Measured (tracemalloc, orjson 3,
CPython 3.12), the worst a JSON value costs is a one-key object (`{"":0}`: 192 bytes, its
pointer included) and a one-character string or a list slot (64 bytes per value, a comma each).
`_parse_cost` counts objects, arrays and commas with C-speed `bytes.count`, which also counts
those in strings; only when that over-estimate passes `MAX_PARSE_BYTES` (a slice of about a
megabyte of braces, never a real one) is the count redone outside strings, so braces an
attacker puts in an audited string (a ConfigMap value) cannot get a batch refused.

Invariants:
- `iter_items` yields `orjson.loads(body)["items"]`, in order, each object item without
  `requestObject` and `responseObject` (never read, the bulk of a RequestResponse event) and
  with every string a judgement or an alert reads that is over `MAX_STRING_CHARS` replaced by
  `capped(string)` (`_cap_read`; all of an item's strings when it is over `MAX_EVENT_BYTES`);
  an item of the API server's layout that cannot be parsed within `MAX_PARSE_BYTES` even
  without those objects is an `Unjudged` in its place. It raises
  `BatchError` (the one-line reason) for a body that is not an EventList, holds over
  `max_items` items, or, off the fast path, would allocate over `MAX_PARSE_BYTES` parsed whole.
- No slice parsed is longer than four times `SLICE_BYTES` plus one item, except on the
  whole-body path; a slice that does not parse is never tried again. An item over
  `MAX_EVENT_BYTES` is parsed alone, without its objects and with its long strings capped as
  encoded, so no string over `MAX_STRING_CHARS` is built from it.
- Linear: every byte is counted (brackets, strings emptied) a bounded number of times per cut;
  the string regex is possessive, so it holds no state per escape.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from hashlib import blake2b
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
# A string value longer than this is kept as `capped`: real ones (names, URIs, messages) are far
# shorter; a padded Audit-ID, URI or user agent is not, and an alert line would carry it whole.
MAX_STRING_CHARS = 4096
# An item longer than this (the API server's own are a few KiB at Metadata level, up to a few MiB
# with objects, which are dropped) is read without its objects and with its long strings capped
# before it is parsed: a padded header is up to 1 MiB, encoded up to six times that (`\u003c`).
MAX_EVENT_BYTES = 1 << 20
KEPT_CHARS = 128  # of a capped string: its first characters, then its length and digest
# The objects of an event whose strings a judgement or an alert reads (`_cap_read`).
_READ_OBJECTS = ("user", "impersonatedUser", "objectRef")
# Where the objects begin and what the API server writes after them, one object deep.
_OBJECT_KEYS = (b',"requestObject":', b',"responseObject":')
_AFTER_OBJECTS = (b',"requestReceivedTimestamp":', b',"stageTimestamp":', b',"annotations":')
# The fields of an unjudged item read one by one: its first (outermost, in struct order) string.
_FIELD = re.compile(rb'"(auditID|stage|verb|requestURI|userAgent)":("[^"\\]*(?:\\.[^"\\]*)*+")')
_USERNAME = re.compile(rb'"user":\{"username":("[^"\\]*(?:\\.[^"\\]*)*+")')
_OBJECT_REF = re.compile(rb'"objectRef":(\{[^{}\[\]]*\})')
# A JSON string from its opening quote (escapes skipped); `"?`: one a slice cut short. The
# possessive `*+` keeps no backtracking state per escape: with a plain `*` the re module holds
# ~150 bytes per repetition, 146 MiB for a string of a million `\u003c`.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*+"?', re.DOTALL)


@dataclass(frozen=True, slots=True)
class Unjudged:
    """An item that could not be judged (see the module docstring): why, its size in bytes, and
    the fields read of it (`auditID`, `stage`, `verb`, `requestURI`, `userAgent`, `username`,
    `objectRef`), their strings capped."""

    cause: str  # "too-costly" or "not-json": the alert's cause
    reason: str
    size: int
    fields: dict[str, Any] = field(default_factory=dict)


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
            _cap_read(item)
    return items


def capped(text: str) -> str:
    """A string over `MAX_STRING_CHARS` as it is kept: its first `KEPT_CHARS` characters, its
    length and a digest of the whole (two padded Audit-IDs alike in their first characters are
    still two requests)."""
    digest = blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    return f"{text[:KEPT_CHARS]}…[{len(text)} characters, blake2b {digest}]"


def _cap_read(item: dict[str, Any]) -> None:
    """The strings a judgement and an alert read capped, in place: the event's own (auditID,
    requestURI, userAgent, ...), those of `user`, `impersonatedUser` and `objectRef` (groups
    included) and `sourceIPs`; a loop of `len`s, no walk of the rest (about 1 µs an event). An
    item over `MAX_EVENT_BYTES` had every string capped before it was parsed."""
    for key, value in item.items():
        if type(value) is str and len(value) > MAX_STRING_CHARS:
            item[key] = capped(value)
    for key in _READ_OBJECTS:
        part = item.get(key)
        if type(part) is dict:
            for name, value in part.items():
                if type(value) is str:
                    if len(value) > MAX_STRING_CHARS:
                        part[name] = capped(value)
                elif type(value) is list:
                    _cap_list(value)
    ips = item.get("sourceIPs")
    if type(ips) is list:
        _cap_list(ips)


def _cap_list(values: list[Any]) -> None:
    for i, value in enumerate(values):
        if type(value) is str and len(value) > MAX_STRING_CHARS:
            values[i] = capped(value)


def _check_count(count: int, max_items: int) -> None:
    if count > max_items:
        raise BatchError(f"EventList holds more than {max_items} items", too_many=True)


def _loads(data: bytes) -> Any:
    """`orjson.loads` once its cost is known to be within `MAX_PARSE_BYTES`."""
    cost = _cost(data)
    if cost > MAX_PARSE_BYTES:
        raise BatchError(
            f"EventList would take over {MAX_PARSE_BYTES >> 20} MiB to parse"
            f" (~{cost >> 20} MiB of JSON objects, arrays and values)",
            too_many=True,
        )
    return orjson.loads(data)


def _cost(data: bytes) -> int:
    """What parsing `data` may allocate: first counted in strings too (C-speed), exactly only
    when that is over the cap."""
    cost = _parse_cost(data)
    if cost > MAX_PARSE_BYTES:
        cost = _parse_cost(_STRING.sub(b'""', data))
    return cost


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
            part: list[Any] | None = None
            if not (events and stop - at > MAX_EVENT_BYTES):
                try:
                    part = _loads(b"[" + body[at:stop] + b"]")
                except BatchError:
                    if not events:  # items of another layout cannot be cut apart exactly
                        raise
                except orjson.JSONDecodeError:
                    if stop == end:
                        yield from _rest_of_whole(body, start, at, yielded)
                        return
                    reach *= 2
                    floor = stop + 1
                    depth.failed()
                    continue
            if part is None:
                # Too costly at once, or holding an item over MAX_EVENT_BYTES: one item at a
                # time, once the slice is known to balance exactly (it is not parsed whole).
                if not depth.exactly_balanced(stop):
                    if stop == end:
                        yield from _rest_of_whole(body, start, at, yielded)
                        return
                    floor = stop + 1
                    continue
                part = _one_by_one(body, at, stop)
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

    def exactly_balanced(self, stop: int) -> bool:
        """Balanced to `stop` counted with strings emptied (exact for `_EVENT_CUT`s)."""
        return self.strings_emptied.advance(self.body, stop, empty_strings=True)

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


def _one_by_one(body: bytes, at: int, stop: int) -> list[Any]:
    """The items of the balanced slice `body[at:stop]` parsed each on its own (`_one_item`),
    lean as they are parsed: the slice as a whole would cost too much. Items end where an
    `_EVENT_CUT` is balanced with strings emptied (exact: see `_Depth`); each byte is counted
    once."""
    items: list[Any] = []
    start = search = at
    counts = _Counts(at)
    while start < stop:
        cut = body.find(_EVENT_CUT, search, stop)
        end = stop if cut < 0 else cut + 1
        if end < stop and not counts.advance(body, end, empty_strings=True):
            search = end + 1  # inside an item (a nested object list that looks like events)
            continue
        items.extend(_lean([_one_item(body[start:end])]))
        start = search = end + 1
        counts = _Counts(start)
    return items


def _one_item(data: bytes) -> Any:
    """One item: parsed (over `MAX_EVENT_BYTES`, without its objects and with its long strings
    capped as encoded, `_cap_encoded`: no megabyte string is ever built); parsed without its
    objects when too costly with them; else Unjudged."""
    if len(data) > MAX_EVENT_BYTES:
        data = _without_objects(data) or data
        if len(data) > MAX_EVENT_BYTES:
            data = _STRING.sub(_cap_encoded, data)
    cost = _cost(data)
    if cost <= MAX_PARSE_BYTES:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            return Unjudged(
                "not-json", f"not JSON: {exc.msg} at byte {exc.pos}", len(data), _read(data)
            )
    lean = _without_objects(data)
    if lean is not None and _cost(lean) <= MAX_PARSE_BYTES:
        try:
            return orjson.loads(lean)
        except orjson.JSONDecodeError:
            pass  # the cut was not where the API server writes the objects: read what can be
    reason = (
        f"would take over {MAX_PARSE_BYTES >> 20} MiB to parse"
        f" (~{cost >> 20} MiB of JSON objects, arrays and values)"
    )
    return Unjudged("too-costly", reason, len(data), _read(data))


def _without_objects(data: bytes) -> bytes | None:
    """The item with its `requestObject`/`responseObject` cut out, or None when they are not
    found one object deep. The cut runs from the first of those keys at depth one to the first
    key the API server writes after them at depth one (or the item's end): `_Counts` over the
    stretches between candidates, strings emptied (each starts outside a string: a `,"` whose
    quote is unescaped opens a key)."""
    counts = _Counts(0)
    begin = -1
    for at in sorted(p for key in _OBJECT_KEYS for p in _positions(data, key, 0)):
        counts.advance(data, at, empty_strings=True)
        if counts.objects == 1 and counts.arrays == 0:
            begin = at
            break
    if begin < 0:
        return None
    for at in sorted(p for key in _AFTER_OBJECTS for p in _positions(data, key, begin + 1)):
        counts.advance(data, at, empty_strings=True)
        if counts.objects == 1 and counts.arrays == 0:
            return data[:begin] + data[at:]
    return data[:begin] + b"}"


def _cap_encoded(match: re.Match[bytes]) -> bytes:
    """A JSON string over `MAX_STRING_CHARS` bytes as encoded, replaced by a marker of its
    first characters, its encoded length and a digest of its encoding (the API server encodes
    a value the same way every time); a shorter one as it is."""
    quoted = match.group()
    if len(quoted) <= MAX_STRING_CHARS + 2:
        return quoted
    digest = blake2b(quoted, digest_size=8).hexdigest()
    head = quoted[1 : KEPT_CHARS + 1]
    prefix = ""
    for cut in range(len(head), max(len(head) - 12, 0), -1):  # not inside an escape or character
        try:
            prefix = orjson.loads(b'"' + head[:cut] + b'"')
            break
        except orjson.JSONDecodeError:
            continue
    marker = f"{prefix}…[{len(quoted) - 2} bytes encoded, blake2b {digest}]"
    return orjson.dumps(marker)


def _positions(data: bytes, needle: bytes, start: int) -> Iterator[int]:
    at = data.find(needle, start)
    while at >= 0:
        yield at
        at = data.find(needle, at + 1)


def _read(data: bytes) -> dict[str, Any]:
    """What can be read of an item that does not parse within the cap: the first occurrence of
    each field the API server writes before the objects (outermost, so the item's own), strings
    capped. Nothing is trusted beyond what an alert shows."""
    fields: dict[str, Any] = {}
    for match in _FIELD.finditer(data):
        key = match.group(1).decode()
        if key not in fields:
            fields[key] = _string(match.group(2))
        if len(fields) == 5:
            break
    user = _USERNAME.search(data)
    if user is not None:
        fields["username"] = _string(user.group(1))
    ref = _OBJECT_REF.search(data)
    if ref is not None:
        try:
            value = orjson.loads(ref.group(1))
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict):  # a flat object (the pattern holds no brackets)
            fields["objectRef"] = {
                k: capped(v) if isinstance(v, str) and len(v) > MAX_STRING_CHARS else v
                for k, v in value.items()
            }
    return fields


def _string(quoted: bytes) -> str:
    try:
        value = orjson.loads(quoted)
    except orjson.JSONDecodeError:
        return ""
    return capped(value) if len(value) > MAX_STRING_CHARS else str(value)
