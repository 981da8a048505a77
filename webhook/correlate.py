"""`kubefence correlate`, the pure core: audit events and decisions in, one joined `Report` out.

Invariants:
- The join key is the `<webhook name>/decision-id` audit annotation, never the auditID (a client
  may choose its own Audit-ID). Stages of one request are folded on auditID *and* the request's
  received time, authenticated user, verb and URI.
- "Should have been decided" is exactly `registration.DEFAULT_RULES` (or the rules given): a write
  that never reaches the webhook (status, scale) is never a bypass.
- Memory is bounded by the join window, not by the length of the logs: a decision waits for its
  audit event at most `join_window` of audit time; joined events are remembered for retry pairing
  for two windows; a ResponseStarted waits for its ResponseComplete (long-running CONNECTs only).
  Aggregates grow with users, namespaces and minutes, listed findings stop at `max_items`.
- A line that cannot matter (verb/resource no rule registers, no decision-id annotation) is
  recognised from a few byte searches on the API server's canonical encoding and never parsed.
- Readers take iterables of lines and yield records; no file, clock or terminal is touched here.
"""

from __future__ import annotations

import calendar
import heapq
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from webhook.registration import DEFAULT_RULES, WebhookRule, is_registered

DECISION_EVENT = b"admission.decision"
FINAL_STAGES = frozenset({"ResponseComplete", "Panic"})
FAILED_OPEN_PREFIX = "failed-open.validating.webhook.admission.k8s.io/"
# Controllers that empty a Terminating namespace with deletecollection; an empty collection
# calls no webhook, so their deletecollection without a trace is not a dodge.
NAMESPACE_CLEANERS = frozenset(
    {"system:serviceaccount:kube-system:namespace-controller", "system:kube-controller-manager"}
)
CONNECT_SUBRESOURCES = frozenset({"exec", "attach", "portforward"})
SENSITIVE = frozenset(
    {("pods", "exec"), ("pods", "attach"), ("pods", "portforward"), ("pods", "proxy")}
    | {("services", "proxy")}
)
# Audit verb -> the admission operations it may reach the webhook as (DESIGN.md; FACTS: a patch
# is UPDATE, or CREATE for a server-side apply that creates). create/get on a CONNECT
# subresource is CONNECT.
VERB_OPERATIONS: dict[str, tuple[str, ...]] = {
    "create": ("CREATE",),
    "update": ("UPDATE",),
    "patch": ("UPDATE", "CREATE"),
    "delete": ("DELETE",),
    "deletecollection": ("DELETE",),
}

_CANONICAL = b'{"kind":"Event","apiVersion":"audit.k8s.io/v1",'
_RECEIVED = b'"requestReceivedTimestamp":"'
_STAGE_TS = b'"stageTimestamp":"'


# --- time ---------------------------------------------------------------------------------------


@lru_cache(maxsize=8192)
def _whole_seconds(prefix: str) -> float:
    return float(calendar.timegm(datetime.strptime(prefix, "%Y-%m-%dT%H:%M:%S").timetuple()))


def parse_time(text: str) -> float:
    """An RFC 3339 time as epoch seconds; ValueError when it is not one."""
    if len(text) >= 20 and text[-1] == "Z" and text[10] == "T":
        base = _whole_seconds(text[:19])
        return base + float("0" + text[19:-1]) if len(text) > 20 else base
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return parsed.timestamp()


def format_time(epoch: float) -> str:
    """Epoch seconds as the API server writes them: RFC 3339, UTC, microseconds."""
    whole = int(epoch // 1)
    micros = round((epoch - whole) * 1_000_000)
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    return f"{datetime.fromtimestamp(whole, tz=UTC):%Y-%m-%dT%H:%M:%S}.{micros:06d}Z"


# --- records ------------------------------------------------------------------------------------


@dataclass(slots=True)
class AuditRecord:
    """The fields of one audit Event that correlate reads (one stage of one request)."""

    audit_id: str
    stage: str
    verb: str
    user: str  # the user the webhook saw: the impersonated one when there is one
    auth_user: str  # the authenticated user (the audit policy's and the request key's)
    group: str
    resource: str
    subresource: str
    namespace: str  # the subject namespace: a Namespace object's own name
    name: str
    code: int | None
    received: float
    received_text: str
    stage_time: float
    uri: str
    decision_ids: tuple[str, ...]  # ours, one per configured webhook name present
    failed_open: str  # the first of our webhook names that failed open, or ""
    registered: bool
    sensitive: bool

    @property
    def resource_key(self) -> str:
        return f"{self.group}/{self.resource}" if self.group else self.resource

    @property
    def request_key(self) -> tuple[str, str, str, str, str]:
        return (self.audit_id, self.received_text, self.auth_user, self.verb, self.uri)

    @property
    def dry_run(self) -> bool:
        return "dryRun=" in self.uri


@dataclass(slots=True)
class DecisionRecord:
    """The fields of one `admission.decision` line that correlate reads."""

    decision_id: str
    time: float
    time_text: str
    decision: str
    allowed: bool
    denied_by: tuple[str, ...]
    operation: str
    resource: str  # "group/resource" or "resource", as the decision log writes it
    subresource: str
    namespace: str
    name: str
    user: str
    dry_run: bool


@dataclass(slots=True)
class SourceStats:
    """What reading one file gave: line and event counts, its time span, where it failed."""

    name: str
    lines: int = 0
    events: int = 0  # audit: Events (one per stage) in the report window; else decision lines
    malformed: int = 0
    first: float | None = None
    last: float | None = None
    error_line: int = 0  # the line being read when the source raised (0: it did not)


# --- reading audit logs -------------------------------------------------------------------------


class AuditReader:
    """Turns audit log lines into the AuditRecords that can matter; counts the rest."""

    def __init__(self, options: CorrelateOptions) -> None:
        self._options = options
        self._rules = options.rules
        self._decision_keys = tuple(f"{n}/decision-id" for n in options.webhook_names)
        self._names = frozenset(options.webhook_names)
        self._groups = tuple({g for r in options.rules for g in r.api_groups} | {""})
        self._relevant: dict[tuple[bytes, bytes, bytes], bool] = {}
        self._since = _canonical_bytes(options.since)
        self._until = _canonical_bytes(options.until)

    def records(self, lines: Iterable[bytes], stats: SourceStats) -> Iterator[AuditRecord]:
        """Yield the records of one audit log; `stats` is complete once the iterator is done."""
        windowed = self._since is not None or self._until is not None
        n = events = malformed = 0
        last_line = b""
        latest = float("-inf")  # the last line is the latest but for stragglers
        try:
            for line in lines:
                n += 1
                if line.startswith(_CANONICAL) and line.endswith((b"}\n", b"}", b"}\r\n")):
                    if not last_line:
                        stats.first = _line_time(line)
                    last_line = line
                    if self._cannot_matter(line):
                        if not windowed or self._line_in_window(line):
                            events += 1
                        continue
                try:
                    doc = orjson.loads(line)
                except orjson.JSONDecodeError:
                    if line.strip():
                        malformed += 1
                    continue
                for item in _events(doc):
                    record = self._record(item)
                    if record is None:
                        malformed += 1
                        continue
                    if not last_line:
                        stats.first = record.stage_time
                    last_line = line
                    latest = max(latest, record.stage_time)
                    if self._in_window(record.received):
                        events += 1
                    if record.stage != "RequestReceived" and (
                        record.registered or record.sensitive or record.decision_ids
                    ):
                        yield record
        except Exception:
            stats.error_line = n + 1
            raise
        finally:
            stats.lines, stats.events, stats.malformed = n, events, malformed
            end = _line_time(last_line) if last_line else None
            ends = [t for t in (end, latest) if t is not None and t > float("-inf")]
            stats.last = max(ends) if ends else None
            if stats.first is not None and stats.last is not None and stats.last < stats.first:
                stats.first, stats.last = stats.last, stats.first

    def _cannot_matter(self, line: bytes) -> bool:
        """Whether a line in the API server's own encoding can be counted without parsing.

        True for RequestReceived (written before admission: no annotations, no code), for
        non-resource requests, and for verb/resource/subresource triples that no rule registers
        and that are not sensitive, unless the line carries a decision-id annotation. False
        whenever the layout is not the expected one: the line is then parsed.
        """
        if line.find(b'"stage":"RequestReceived"', 40, 160) >= 0:
            return True
        v = line.find(b'"verb":"', 80)
        if v < 0:
            return False
        ve = line.find(b'"', v + 8)
        o = line.find(b'"objectRef":{', ve)
        if o < 0:
            return True  # a non-resource request (/version, /openapi/v3): never decided
        if line.startswith(b'"resource":"', o + 13):
            re_ = line.find(b'"', o + 25)
            oe = line.find(b"}", re_)
            s = line.find(b'"subresource":"', re_, oe)
            sub = line[s + 15 : line.find(b'"', s + 15)] if s >= 0 else b""
            key = (line[v + 8 : ve], line[o + 25 : re_], sub)
            wanted = self._relevant.get(key)
            if wanted is None:
                wanted = self._relevant[key] = self._might_matter(*key)
            if not wanted:
                a = line.rfind(b'"annotations":{')
                return a < 0 or line.find(b'/decision-id":"', a) < 0
        return False

    def _in_window(self, t: float) -> bool:
        o = self._options
        return (o.since is None or t >= o.since) and (o.until is None or t <= o.until)

    def _line_in_window(self, line: bytes) -> bool:
        i = line.find(_RECEIVED)
        if i < 0:
            return False
        stamp = line[i + 28 : i + 55]
        if len(stamp) == 27 and stamp[-1:] == b"Z" and stamp[19:20] == b".":
            return (self._since is None or stamp >= self._since) and (
                self._until is None or stamp <= self._until
            )
        t = _slice_time(line, _RECEIVED)
        return t is not None and self._in_window(t)

    def _might_matter(self, verb: bytes, resource: bytes, sub: bytes) -> bool:
        """Whether some group makes (verb, resource, subresource) registered or sensitive."""
        v, r, s = verb.decode(), resource.decode(), sub.decode()
        if (r, s) in SENSITIVE:
            return True
        return any(
            is_registered(self._rules, op, g, r, s) for op in operations(v, s) for g in self._groups
        )

    def _record(self, doc: Any) -> AuditRecord | None:
        """The record of one Event (relevant or not); None when it is not a valid Event."""
        if not isinstance(doc, dict):
            return None
        audit_id, stage, verb = doc.get("auditID"), doc.get("stage"), doc.get("verb")
        received_text, stage_text = doc.get("requestReceivedTimestamp"), doc.get("stageTimestamp")
        user = doc.get("user")
        if not (
            isinstance(audit_id, str)
            and isinstance(stage, str)
            and isinstance(verb, str)
            and isinstance(received_text, str)
            and isinstance(stage_text, str)
            and isinstance(user, dict)
        ):
            return None
        try:
            received, stage_time = parse_time(received_text), parse_time(stage_text)
        except ValueError:
            return None
        ref = doc.get("objectRef")
        ref = ref if isinstance(ref, dict) else {}
        group, resource = _s(ref.get("apiGroup")), _s(ref.get("resource"))
        sub, namespace = _s(ref.get("subresource")), _s(ref.get("namespace"))
        name = _s(ref.get("name"))
        if group == "" and resource == "namespaces" and not namespace:
            namespace = name
        annotations = doc.get("annotations")
        annotations = annotations if isinstance(annotations, dict) else {}
        ids = tuple(
            v for k in self._decision_keys if isinstance(v := annotations.get(k), str) and v
        )
        failed_open = ""
        for key, value in annotations.items():
            if key.startswith(FAILED_OPEN_PREFIX) and value in self._names:
                failed_open = value
                break
        registered = any(
            is_registered(self._rules, op, group, resource, sub) for op in operations(verb, sub)
        )
        sensitive = (resource, sub) in SENSITIVE and group == ""
        status = doc.get("responseStatus")
        code = status.get("code") if isinstance(status, dict) else None
        impersonated = doc.get("impersonatedUser")
        auth_user = _s(user.get("username"))
        effective = (
            _s(impersonated.get("username")) if isinstance(impersonated, dict) else auth_user
        )
        return AuditRecord(
            audit_id=audit_id,
            stage=stage,
            verb=verb,
            user=effective or auth_user,
            auth_user=auth_user,
            group=group,
            resource=resource,
            subresource=sub,
            namespace=namespace,
            name=name,
            code=code if isinstance(code, int) and not isinstance(code, bool) else None,
            received=received,
            received_text=received_text,
            stage_time=stage_time,
            uri=_s(doc.get("requestURI")),
            decision_ids=ids,
            failed_open=failed_open,
            registered=registered,
            sensitive=sensitive,
        )


def operations(verb: str, subresource: str) -> tuple[str, ...]:
    """The admission operations an audit verb may reach a webhook as."""
    if subresource in CONNECT_SUBRESOURCES and verb in ("create", "get"):
        return ("CONNECT",)
    return VERB_OPERATIONS.get(verb, ())


def _events(doc: Any) -> list[Any]:
    """One Event, or the items of an EventList (the webhook backend's batch format)."""
    if isinstance(doc, dict) and doc.get("kind") == "EventList":
        items = doc.get("items")
        return items if isinstance(items, list) else [None]
    return [doc]


def _canonical_bytes(epoch: float | None) -> bytes | None:
    return None if epoch is None else format_time(epoch).encode()


def _slice_time(line: bytes, marker: bytes) -> float | None:
    i = line.find(marker)
    if i < 0:
        return None
    start = i + len(marker)
    end = line.find(b'"', start)
    try:
        return parse_time(line[start:end].decode())
    except (ValueError, UnicodeDecodeError):
        return None


def _line_time(line: bytes) -> float | None:
    """The stageTimestamp of an Event line (of an EventList's last item), however it is laid out."""
    t = _slice_time(line, _STAGE_TS)
    if t is not None:
        return t
    try:
        items = _events(orjson.loads(line))
    except orjson.JSONDecodeError:
        return None
    last = items[-1] if items else None
    stamp = last.get("stageTimestamp") if isinstance(last, dict) else None
    try:
        return parse_time(stamp) if isinstance(stamp, str) else None
    except ValueError:
        return None


def _s(value: object) -> str:
    return value if isinstance(value, str) else ""


# --- reading decision logs ----------------------------------------------------------------------


def decision_records(lines: Iterable[bytes], stats: SourceStats) -> Iterator[DecisionRecord]:
    """Yield the `admission.decision` lines of a decision log; every other line is ignored.

    A line may carry a prefix before its JSON object (`kubectl logs --prefix`, CRI log files).
    """
    n = count = 0
    try:
        for line in lines:
            n += 1
            if DECISION_EVENT not in line:
                continue
            start = line.find(b"{")
            try:
                doc = orjson.loads(line[start:] if start > 0 else line)
            except orjson.JSONDecodeError:
                stats.malformed += 1
                continue
            record = _decision(doc)
            if record is None:
                stats.malformed += 1
                continue
            count += 1
            if stats.first is None or record.time < stats.first:
                stats.first = record.time
            if stats.last is None or record.time > stats.last:
                stats.last = record.time
            yield record
    except Exception:
        stats.error_line = n + 1
        raise
    finally:
        stats.lines, stats.events = n, count


def _decision(doc: Any) -> DecisionRecord | None:
    if not isinstance(doc, dict) or doc.get("event") != "admission.decision":
        return None
    decision_id, stamp = doc.get("decision_id"), doc.get("timestamp")
    if not isinstance(decision_id, str) or not decision_id or not isinstance(stamp, str):
        return None
    try:
        t = parse_time(stamp)
    except ValueError:
        return None
    allowed = doc.get("allowed") is not False and doc.get("decision") != "deny"
    denied_by: tuple[str, ...] = ()
    if not allowed:
        rules = doc.get("rules")
        denied_by = tuple(
            dict.fromkeys(
                r["id"]
                for r in (rules if isinstance(rules, list) else [])
                if isinstance(r, dict)
                and isinstance(r.get("id"), str)
                and r.get("result") == "fail"
                and r.get("mode", "enforce") == "enforce"
            )
        )
        if not denied_by:
            notes = doc.get("audit_annotations")
            listed = notes.get("rules") if isinstance(notes, dict) else None
            denied_by = tuple(x for x in _s(listed).split(",") if x) or ("(unknown)",)
    return DecisionRecord(
        decision_id=decision_id,
        time=t,
        time_text=stamp,
        decision=_s(doc.get("decision")),
        allowed=allowed,
        denied_by=denied_by,
        operation=_s(doc.get("operation")),
        resource=_s(doc.get("resource")),
        subresource=_s(doc.get("subresource")),
        namespace=_s(doc.get("namespace")),
        name=_s(doc.get("name")),
        user=_s(doc.get("user")),
        dry_run=doc.get("dry_run") is True,
    )


# --- the report model ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CorrelateOptions:
    webhook_names: tuple[str, ...]
    exempt_namespaces: frozenset[str] = frozenset()
    rules: tuple[WebhookRule, ...] = DEFAULT_RULES
    since: float | None = None
    until: float | None = None
    join_window: float = 120.0  # how long after a decision its audit event may be written
    clock_skew: float = 1.0  # between the webhook's clock and the API server's
    probe_threshold: int = 10
    probe_window: float = 600.0
    max_items: int = 1000  # per listed finding; counts stay exact
    max_open_requests: int = 100_000  # ResponseStarted events waiting for ResponseComplete


@dataclass(frozen=True, slots=True)
class Bypass:
    time: str
    audit_id: str
    cause: str  # "fail-open" (the webhook was down or slow) | "dodged" (no trace of it)
    user: str
    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str
    code: int | None
    dry_run: bool
    webhook: str  # the webhook that failed open ("" when dodged)


@dataclass(frozen=True, slots=True)
class AuditGap:
    time: str
    decision_id: str
    decision: str
    operation: str
    resource: str
    subresource: str
    namespace: str
    name: str
    user: str
    dry_run: bool
    failed_open_audit_id: str = ""  # the API server failed open for it: answered too late


@dataclass(frozen=True, slots=True)
class Retried:
    time: str
    decision_id: str
    operation: str
    resource: str
    namespace: str
    name: str
    user: str
    audit_id: str  # the audit event that recorded the request
    recorded_decision_id: str  # the decision-id that event carries (the first call's)
    collection: bool  # one item of a deletecollection rather than a conflict retry


@dataclass(frozen=True, slots=True)
class Prober:
    user: str
    denials: int  # denials within the densest --probe-window
    window_start: str
    window_end: str


@dataclass(frozen=True, slots=True)
class Access:
    time: str
    audit_id: str
    user: str
    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str
    code: int | None
    decision_id: str


@dataclass(frozen=True, slots=True)
class Bucket:
    start: float
    seconds: float
    allowed: int
    denied: int
    bypasses: int
    gaps: int


@dataclass(frozen=True, slots=True)
class Summary:
    audit_events: int
    decisions: int
    joined: int
    retried: int
    bypasses: int
    fail_open: int
    dodged: int
    audit_gaps: int
    uncovered: int  # decisions outside the audit logs' time span: neither joined nor gaps
    audit_without_decision: int  # joined audit events whose decision no given log holds
    denials: int
    probers: int
    sensitive_access: int
    malformed_lines: int


@dataclass(frozen=True, slots=True)
class Report:
    summary: Summary
    bypasses: tuple[Bypass, ...]
    audit_gaps: tuple[AuditGap, ...]
    retried: tuple[Retried, ...]
    probers: tuple[Prober, ...]
    sensitive_access: tuple[Access, ...]
    sensitive_by_user: dict[str, int]
    denials_by_rule: dict[str, int]
    denials_by_namespace: dict[str, int]
    denials_by_user: dict[str, int]
    timeline: tuple[Bucket, ...]
    options: CorrelateOptions
    audit_span: tuple[float | None, float | None]
    decision_span: tuple[float | None, float | None]
    audit_sources: tuple[SourceStats, ...] = ()
    decision_sources: tuple[SourceStats, ...] = ()


# --- the join -----------------------------------------------------------------------------------

_Key = tuple[str, str, str, str, str]  # user, resource, subresource, namespace, name


@dataclass(slots=True)
class _Seen:
    """A recorded request remembered for pairing unjoined decisions with it."""

    received: float
    stage_time: float
    audit_id: str
    decision_id: str  # "" for a fail-open bypass
    operations: tuple[str, ...]  # what the request's verb may reach the webhook as
    collection: bool
    first: float | None = None  # when the recorded decision was made (None: not seen yet)


@dataclass(slots=True)
class _Open:
    record: AuditRecord
    joined: bool


class Correlator:
    """The join and aggregation state machine; feed it records in (roughly) time order."""

    def __init__(self, options: CorrelateOptions) -> None:
        self.options = options
        self.audit_start: float | None = None  # the audit logs' time span, when known
        self.audit_end: float | None = None
        self.audit_done = False
        self._audit_clock = float("-inf")
        self._last_expiry = float("-inf")
        self._decision_clock = float("-inf")
        self._decision_span: list[float] = []
        # decisions waiting for their audit event, and audit events waiting for their decision
        self._pending: dict[str, DecisionRecord] = {}
        self._pending_q: deque[DecisionRecord] = deque()
        self._early: dict[str, tuple[float, _Seen | None]] = {}
        self._early_q: deque[tuple[float, str]] = deque()
        # recorded requests by object, for pairing retried decisions; ResponseStarted in flight
        self._seen: dict[_Key, list[_Seen]] = {}
        self._seen_q: deque[tuple[float, _Key]] = deque()
        self._open: dict[tuple[str, str, str, str, str], _Open] = {}
        # results
        self._counts: dict[str, int] = {}
        self._bypasses: list[Bypass] = []
        self._gaps: list[AuditGap] = []
        self._retried: list[Retried] = []
        self._access: list[Access] = []
        self._access_by_user: dict[str, int] = {}
        self._by_rule: dict[str, int] = {}
        self._by_namespace: dict[str, int] = {}
        self._by_user: dict[str, int] = {}
        self._recent_denials: dict[str, deque[float]] = {}
        self._peaks: dict[str, tuple[int, float, float]] = {}
        self._minutes: dict[int, list[int]] = {}

    # -- input ------------------------------------------------------------------------------------

    def audit(self, record: AuditRecord) -> None:
        key = record.request_key
        if record.stage in FINAL_STAGES:
            held = self._open.pop(key, None)
            if held is None or not held.joined:
                self._join(record)
            elif not record.decision_ids:
                record.decision_ids = held.record.decision_ids
            self._judge(record)
        else:
            held = self._open.get(key)
            if held is None:
                held = self._open[key] = _Open(record, False)
                if len(self._open) > self.options.max_open_requests:
                    oldest = next(iter(self._open))
                    self._judge(self._open.pop(oldest).record)
            else:
                held.record = record
            if record.decision_ids and not held.joined:
                self._join(record)
                held.joined = True
        if record.stage_time > self._audit_clock:
            self._audit_clock = record.stage_time
            if record.stage_time - self._last_expiry >= 1.0:
                self._expire()

    def decision(self, record: DecisionRecord) -> None:
        span = self._decision_span
        if span:
            span[0], span[1] = min(span[0], record.time), max(span[1], record.time)
        else:
            span[:] = [record.time, record.time]
        in_window = self._in_window(record.time)
        if in_window:
            self._count("decisions")
            self._aggregate(record)
        if record.time > self._decision_clock:
            self._decision_clock = record.time
            self._expire_early(record.time - self.options.join_window)
        early = self._early.pop(record.decision_id, None)
        if early is not None:
            if early[1] is not None:
                early[1].first = record.time
            if in_window:
                self._count("joined")
        elif self.audit_done:
            self._resolve(record, final=True)  # no audit event can come any more
        else:
            self._pending[record.decision_id] = record
            self._pending_q.append(record)

    def audit_finished(self, end: float | None) -> None:
        """No more audit records: the audit logs end at `end` (their last line's time)."""
        if self.audit_done:
            return
        self.audit_done = True
        for held in self._open.values():
            self._judge(held.record)
        self._open.clear()
        if end is not None and end > self._audit_clock:
            self._audit_clock = end
        self.audit_end = end if end is not None else self._audit_clock
        self._expire()
        for record in self._pending_q:
            if self._pending.pop(record.decision_id, None) is record:
                self._resolve(record, final=True)
        self._pending_q.clear()

    def finish(self, audit: Sequence[SourceStats], decisions: Sequence[SourceStats]) -> Report:
        self.audit_finished(None)
        self._expire_early(float("inf"))
        return self._report(audit, decisions)

    # -- the join ---------------------------------------------------------------------------------

    def _join(self, record: AuditRecord) -> None:
        if not record.decision_ids:
            return
        seen = self._remember(record, record.decision_ids[0])
        for decision_id in record.decision_ids:
            found = self._pending.pop(decision_id, None)
            if found is not None:
                if self._in_window(found.time):
                    self._count("joined")
                if decision_id == seen.decision_id:
                    seen.first = found.time
            else:
                recorded = seen if decision_id == seen.decision_id else None
                self._early[decision_id] = (record.stage_time, recorded)
                self._early_q.append((record.stage_time, decision_id))

    def _remember(self, record: AuditRecord, decision_id: str) -> _Seen:
        key = (record.user, record.resource_key, record.subresource, record.namespace, record.name)
        seen = _Seen(
            record.received,
            record.stage_time,
            record.audit_id,
            decision_id,
            operations(record.verb, record.subresource),
            record.verb == "deletecollection",
        )
        self._seen.setdefault(key, []).append(seen)
        self._seen_q.append((record.stage_time, key))
        return seen

    def _judge(self, record: AuditRecord) -> None:
        """Bypass and sensitive-access findings of a request's last stage."""
        if not self._in_window(record.received):
            return
        ok = record.code is None or record.code < 400
        exempt = record.namespace in self.options.exempt_namespaces
        if record.registered and ok and not exempt and not record.decision_ids:
            self._bypass(record)
        if record.sensitive and record.code is not None and record.code < 400 and not exempt:
            self._count("sensitive_access")
            self._access_by_user[record.user] = self._access_by_user.get(record.user, 0) + 1
            if len(self._access) < self.options.max_items:
                self._access.append(
                    Access(
                        record.received_text,
                        record.audit_id,
                        record.user,
                        record.verb,
                        record.resource_key,
                        record.subresource,
                        record.namespace,
                        record.name,
                        record.code,
                        record.decision_ids[0] if record.decision_ids else "",
                    )
                )

    def _bypass(self, record: AuditRecord) -> None:
        if record.failed_open:
            cause = "fail-open"
            self._remember(record, "")
        elif record.verb == "deletecollection" and record.auth_user in NAMESPACE_CLEANERS:
            return
        else:
            cause = "dodged"
        self._count("bypasses")
        self._count("fail_open" if record.failed_open else "dodged")
        self._bucket(record.received)[2] += 1
        if len(self._bypasses) < self.options.max_items:
            self._bypasses.append(
                Bypass(
                    record.received_text,
                    record.audit_id,
                    cause,
                    record.user,
                    record.verb,
                    record.resource_key,
                    record.subresource,
                    record.namespace,
                    record.name,
                    record.code,
                    record.dry_run,
                    record.failed_open,
                )
            )

    def _resolve(self, d: DecisionRecord, *, final: bool) -> None:
        """An unjoined decision whose audit event can no longer come: retried, gap or uncovered."""
        if not self._in_window(d.time):
            return
        paired = self._pair(d)
        if paired is not None and paired.decision_id:
            self._count("retried")
            if len(self._retried) < self.options.max_items:
                self._retried.append(
                    Retried(
                        d.time_text,
                        d.decision_id,
                        d.operation,
                        d.resource,
                        d.namespace,
                        d.name,
                        d.user,
                        paired.audit_id,
                        paired.decision_id,
                        paired.collection,
                    )
                )
            return
        # At the end of the audit logs a decision counts only if they run past it by more than
        # the clock skew: after admission a request ends within milliseconds, so an event still
        # missing then is missing (a request slower than that shows as a gap).
        skew = self.options.clock_skew
        start, end = self.audit_start, self.audit_end
        if (start is None or d.time < start - skew) or (
            final and (end is None or d.time + skew >= end)
        ):
            self._count("uncovered")
            return
        self._count("audit_gaps")
        self._bucket(d.time)[3] += 1
        if len(self._gaps) < self.options.max_items:
            self._gaps.append(
                AuditGap(
                    d.time_text,
                    d.decision_id,
                    d.decision,
                    d.operation,
                    d.resource,
                    d.subresource,
                    d.namespace,
                    d.name,
                    d.user,
                    d.dry_run,
                    paired.audit_id if paired is not None else "",
                )
            )

    def _pair(self, d: DecisionRecord) -> _Seen | None:
        """The recorded request this decision was one more webhook call of, if any.

        Same user, resource, namespace and name (or the collection, for a deletecollection
        item), an operation the request's verb may reach the webhook as, and the decision made
        while the request was in flight; best first: inside the request's own time span rather
        than only within the clock skew of it, and joined rather than failed open. The decision the
        event recorded must not be younger: only the first call's decision-id is kept.
        """
        skew = self.options.clock_skew
        best: tuple[int, _Seen] | None = None
        for name in dict.fromkeys((d.name, "")):
            for seen in self._seen.get((d.user, d.resource, d.subresource, d.namespace, name), ()):
                if d.operation not in seen.operations:
                    continue
                if seen.first is not None and seen.first > d.time:
                    continue  # only the first call's decision-id lands: this one came before it
                if not seen.received - skew <= d.time <= seen.stage_time + skew:
                    continue
                inside = seen.received <= d.time <= seen.stage_time
                rank = 2 * inside + bool(seen.decision_id)
                if best is None or rank > best[0]:
                    best = (rank, seen)
        return best[1] if best is not None else None

    # -- expiry -----------------------------------------------------------------------------------

    def _expire(self) -> None:
        clock = self._audit_clock
        self._last_expiry = clock
        cutoff = clock - self.options.join_window
        queue, pending = self._pending_q, self._pending
        while queue and queue[0].time <= cutoff:
            d = queue.popleft()
            if pending.get(d.decision_id) is d:
                del pending[d.decision_id]
                self._resolve(d, final=False)
        forget = clock - 2 * self.options.join_window - self.options.clock_skew
        seen_q = self._seen_q
        while seen_q and seen_q[0][0] <= forget:
            _, key = seen_q.popleft()
            entries = self._seen.get(key)
            if entries:
                entries[:] = [e for e in entries if e.stage_time > forget]
                if not entries:
                    del self._seen[key]

    def _expire_early(self, cutoff: float) -> None:
        queue = self._early_q
        span = self._decision_span
        skew = self.options.clock_skew
        while queue and queue[0][0] <= cutoff:
            stage_time, decision_id = queue.popleft()
            if self._early.pop(decision_id, None) is None:
                continue
            covered = span and span[0] - skew <= stage_time <= span[1] + self.options.join_window
            if covered and self._in_window(stage_time):
                self._count("audit_without_decision")

    # -- aggregates -------------------------------------------------------------------------------

    def _aggregate(self, d: DecisionRecord) -> None:
        bucket = self._bucket(d.time)
        if d.allowed:
            bucket[0] += 1
            return
        bucket[1] += 1
        self._count("denials")
        for rule in d.denied_by:
            self._by_rule[rule] = self._by_rule.get(rule, 0) + 1
        self._by_namespace[d.namespace] = self._by_namespace.get(d.namespace, 0) + 1
        self._by_user[d.user] = self._by_user.get(d.user, 0) + 1
        recent = self._recent_denials.setdefault(d.user, deque())
        recent.append(d.time)
        while recent and recent[0] < d.time - self.options.probe_window:
            recent.popleft()
        peak = self._peaks.get(d.user)
        if len(recent) >= self.options.probe_threshold and (peak is None or len(recent) > peak[0]):
            self._peaks[d.user] = (len(recent), recent[0], recent[-1])

    def _bucket(self, t: float) -> list[int]:
        minute = int(t // 60)
        bucket = self._minutes.get(minute)
        if bucket is None:
            bucket = self._minutes[minute] = [0, 0, 0, 0]
        return bucket

    def _count(self, name: str) -> None:
        self._counts[name] = self._counts.get(name, 0) + 1

    def _in_window(self, t: float) -> bool:
        o = self.options
        return (o.since is None or t >= o.since) and (o.until is None or t <= o.until)

    # -- the report -------------------------------------------------------------------------------

    def _report(self, audit: Sequence[SourceStats], decisions: Sequence[SourceStats]) -> Report:
        c = self._counts.get
        probers = tuple(
            Prober(user, n, format_time(start), format_time(end))
            for user, (n, start, end) in sorted(self._peaks.items(), key=lambda kv: -kv[1][0])
        )
        summary = Summary(
            audit_events=sum(s.events for s in audit),
            decisions=c("decisions", 0),
            joined=c("joined", 0),
            retried=c("retried", 0),
            bypasses=c("bypasses", 0),
            fail_open=c("fail_open", 0),
            dodged=c("dodged", 0),
            audit_gaps=c("audit_gaps", 0),
            uncovered=c("uncovered", 0),
            audit_without_decision=c("audit_without_decision", 0),
            denials=c("denials", 0),
            probers=len(probers),
            sensitive_access=c("sensitive_access", 0),
            malformed_lines=sum(s.malformed for s in audit),
        )
        span = self._decision_span
        return Report(
            summary=summary,
            bypasses=tuple(self._bypasses),
            audit_gaps=tuple(self._gaps),
            retried=tuple(self._retried),
            probers=probers,
            sensitive_access=tuple(self._access),
            sensitive_by_user=_ranked(self._access_by_user),
            denials_by_rule=_ranked(self._by_rule),
            denials_by_namespace=_ranked(self._by_namespace),
            denials_by_user=_ranked(self._by_user),
            timeline=timeline(self._minutes),
            options=self.options,
            audit_span=(self.audit_start, self.audit_end),
            decision_span=(span[0], span[1]) if span else (None, None),
            audit_sources=tuple(audit),
            decision_sources=tuple(decisions),
        )


def _ranked(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def timeline(minutes: dict[int, list[int]], bars: int = 120) -> tuple[Bucket, ...]:
    """Per-minute counts merged into at most `bars` equal buckets, first to last minute."""
    if not minutes:
        return ()
    first, last = min(minutes), max(minutes)
    width = max(1, -(-(last - first + 1) // bars))
    merged: dict[int, list[int]] = {}
    for minute, counts in minutes.items():
        slot = merged.setdefault((minute - first) // width, [0, 0, 0, 0])
        for i, n in enumerate(counts):
            slot[i] += n
    count = (last - first) // width + 1
    return tuple(
        Bucket(float((first + i * width) * 60), float(width * 60), *merged.get(i, [0, 0, 0, 0]))
        for i in range(count)
    )


# --- the whole run ------------------------------------------------------------------------------


class Correlation:
    """One run over named line streams; `audit_stats`/`decision_stats` say how reading went.

    Streams of one kind are merged by time (rotated files in any order, several API servers or
    webhook replicas), then the two kinds are merged with each other. An exception from a stream
    propagates; `failed_source()` then names the stream and the line being read.
    """

    def __init__(
        self,
        audit_logs: Sequence[tuple[str, Iterable[bytes]]],
        decision_logs: Sequence[tuple[str, Iterable[bytes]]],
        options: CorrelateOptions,
    ) -> None:
        self.options = options
        self._audit_logs = audit_logs
        self._decision_logs = decision_logs
        self.audit_stats = [SourceStats(name) for name, _ in audit_logs]
        self.decision_stats = [SourceStats(name) for name, _ in decision_logs]

    def run(self) -> Report:
        reader = AuditReader(self.options)
        pairs = zip(self._audit_logs, self.audit_stats, strict=True)
        audit = heapq.merge(*(reader.records(lines, s) for (_, lines), s in pairs), key=_stage_time)
        dpairs = zip(self._decision_logs, self.decision_stats, strict=True)
        decisions = heapq.merge(
            *(decision_records(lines, s) for (_, lines), s in dpairs), key=_decision_time
        )
        machine = Correlator(self.options)
        a = next(audit, None)  # primes every audit stream: their first times are known now
        machine.audit_start = _start(self.audit_stats)
        if a is None:
            machine.audit_finished(_end(self.audit_stats))
        d = next(decisions, None)
        while a is not None or d is not None:
            if d is None or (a is not None and a.stage_time <= d.time):
                assert a is not None
                machine.audit(a)
                a = next(audit, None)
                if a is None:
                    machine.audit_finished(_end(self.audit_stats))
            else:
                machine.decision(d)
                d = next(decisions, None)
        return machine.finish(self.audit_stats, self.decision_stats)

    def failed_source(self) -> SourceStats | None:
        """The stream whose reading raised, if any."""
        return next((s for s in (*self.audit_stats, *self.decision_stats) if s.error_line), None)


def correlate(
    audit_logs: Sequence[tuple[str, Iterable[bytes]]],
    decision_logs: Sequence[tuple[str, Iterable[bytes]]],
    options: CorrelateOptions,
) -> Report:
    """Join named audit-log and decision-log line streams into one Report."""
    return Correlation(audit_logs, decision_logs, options).run()


def _start(stats: Sequence[SourceStats]) -> float | None:
    starts = [s.first for s in stats if s.first is not None]
    return min(starts) if starts else None


def _end(stats: Sequence[SourceStats]) -> float | None:
    ends = [s.last for s in stats if s.last is not None]
    return max(ends) if ends else None


def _stage_time(record: AuditRecord) -> float:
    return record.stage_time


def _decision_time(record: DecisionRecord) -> float:
    return record.time
