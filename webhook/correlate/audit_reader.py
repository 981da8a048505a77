"""Reading audit logs: Event lines (or EventList batches) in, the AuditRecords that can matter out.

Invariants:
- "Should have been decided" is exactly `registration.DEFAULT_RULES` (or the rules given): a write
  that never reaches the webhook (status, scale) is never a bypass.
- A line that cannot matter (verb/resource no rule registers, no decision-id annotation) is
  recognised from a few byte searches on the API server's canonical encoding and never parsed;
  it is still counted in the source's stats. Our `fence-lost` annotation comes in the same
  AdmissionResponse as its `decision-id` (the API server stores both, `<webhook name>/<key>`), so
  the decision-id screen keeps every line that carries one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from webhook.correlate.model import CorrelateOptions
from webhook.correlate.records import AuditRecord, SourceStats
from webhook.correlate.registration_windows import CONFIGURATION_GROUP, CONFIGURATION_RESOURCE
from webhook.correlate.timestamps import format_time, parse_time
from webhook.registration import is_registered

FAILED_OPEN_PREFIX = "failed-open.validating.webhook.admission.k8s.io/"
CONNECT_SUBRESOURCES = frozenset({"exec", "attach", "portforward"})
# The API server's tunnels into pods (and the kubelet's API), and debug containers.
SENSITIVE = frozenset(
    {("pods", "exec"), ("pods", "attach"), ("pods", "portforward"), ("pods", "proxy")}
    | {("services", "proxy"), ("nodes", "proxy"), ("pods", "ephemeralcontainers")}
)
# Audit verb -> the admission operations it may reach the webhook as (docs/kubernetes-facts.md,
# "Admission and webhooks": a patch is UPDATE, or CREATE for a server-side apply that creates).
# create/get on a CONNECT subresource is CONNECT.
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


class AuditReader:
    """Turns audit log lines into the AuditRecords that can matter; counts the rest."""

    def __init__(self, options: CorrelateOptions) -> None:
        self._options = options
        self._rules = options.rules
        self._decision_keys = tuple(f"{n}/decision-id" for n in options.webhook_names)
        self._verdict_keys = tuple(f"{n}/decision" for n in options.webhook_names)
        self._fence_keys = tuple(f"{n}/fence-lost" for n in options.webhook_names)
        self._names = frozenset(options.webhook_names)
        self._groups = tuple({g for r in options.rules for g in r.api_groups} | {""})
        self._relevant: dict[tuple[bytes, bytes, bytes], bool] = {}
        self._since = _canonical_bytes(options.since)
        self._until = _canonical_bytes(options.until)

    def records(self, lines: Iterable[bytes], stats: SourceStats) -> Iterator[AuditRecord]:
        """Yield the records of one audit log; `stats` is complete once the iterator is done."""
        windowed = self._since is not None or self._until is not None
        n = events = malformed = records = 0
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
                        records += 1
                        if not windowed or self._line_in_window(line):
                            events += 1
                        continue
                try:
                    doc = orjson.loads(line)
                except orjson.JSONDecodeError:
                    if line.strip():
                        malformed += 1
                        stats.other(n, line)
                    continue
                for item in _events(doc):
                    record = self._record(item)
                    if record is None:
                        malformed += 1
                        stats.other(n, line)
                        continue
                    records += 1
                    if not last_line:
                        stats.first = record.stage_time
                    last_line = line
                    latest = max(latest, record.stage_time)
                    if self._in_window(record.received):
                        events += 1
                    if record.stage != "RequestReceived" and (
                        record.registered
                        or record.sensitive
                        or record.decision_ids
                        or record.configuration
                    ):
                        yield record
        except Exception:
            stats.error_line = n + 1
            raise
        finally:
            stats.lines, stats.events, stats.malformed = n, events, malformed
            stats.records = records
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
        if (r, s) in SENSITIVE or r == CONFIGURATION_RESOURCE:
            return True
        return any(
            is_registered(self._rules, op, g, r, s) for op in operations(v, s) for g in self._groups
        )

    def relevant(self, doc: Any) -> AuditRecord | None:
        """The record of one parsed Event if it can matter (as `records` yields), else None.

        For events that arrive parsed (the webhook backend's EventList): the same verb, resource
        and annotation screen as `_cannot_matter`, on the parsed object, before the full record.
        """
        if not isinstance(doc, dict) or doc.get("stage") == "RequestReceived":
            return None
        ref = doc.get("objectRef")
        if not isinstance(ref, dict):
            return None
        key = (
            _s(doc.get("verb")).encode(),
            _s(ref.get("resource")).encode(),
            _s(ref.get("subresource")).encode(),
        )
        wanted = self._relevant.get(key)
        if wanted is None:
            wanted = self._relevant[key] = self._might_matter(*key)
        if not wanted:
            notes = doc.get("annotations")
            if not isinstance(notes, dict) or not any(k in notes for k in self._decision_keys):
                return None
        record = self._record(doc)
        if record is None or not (
            record.registered or record.sensitive or record.decision_ids or record.configuration
        ):
            return None
        return record

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
        lost = next(
            (v for k in self._fence_keys if isinstance(v := annotations.get(k), str) and v), ""
        )
        failed_open = ""
        for key, value in annotations.items():
            if (
                key.startswith(FAILED_OPEN_PREFIX)
                and isinstance(value, str)  # a forged event may carry any JSON here
                and value in self._names
            ):
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
        as_user = _s(impersonated.get("username")) if isinstance(impersonated, dict) else ""
        effective = as_user or auth_user
        groups = user.get("groups")
        ips = doc.get("sourceIPs")
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
            denied=any(annotations.get(k) == "deny" for k in self._verdict_keys),
            fence_lost=tuple(d for d in lost.split(",") if d),
            impersonated_user=as_user,
            groups=_strings(groups),
            source_ips=_strings(ips),
            user_agent=_s(doc.get("userAgent")),
            configuration=group == CONFIGURATION_GROUP and resource == CONFIGURATION_RESOURCE,
        )


def operations(verb: str, subresource: str) -> tuple[str, ...]:
    """The admission operations an audit verb may reach a webhook as.

    A proxy accepts every HTTP method, each recorded as its own verb (OPTIONS as ""), and every
    one reaches admission as CONNECT (apiserver endpoints/handlers/rest.go).
    """
    if subresource in CONNECT_SUBRESOURCES and verb in ("create", "get"):
        return ("CONNECT",)
    if subresource == "proxy":
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


def _strings(value: object) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()
