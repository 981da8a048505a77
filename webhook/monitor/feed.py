"""The monitor's intake, pure: the items of an audit.k8s.io/v1 EventList in, counts and alerts out.

`Feed` takes the items `webhook.monitor.batch` parsed: each event is counted once by stage,
de-duplicated because the API server sends a batch again when it was answered late, screened and
judged by the shared `webhook.correlate.detect.Detector`, and a canary's event is handed to the
`CanaryWatch` as well (and judged like any other: a user agent is the client's to choose).

Invariants:
- An event is a duplicate only when its request key (auditID, received time, authenticated
  user, verb, URI: what the batch join and the Detector fold a request's stages on), stage and
  stageTimestamp are all the same as an event's already taken: a batch sent again is
  byte-identical, whereas the auditID alone is the client's `Audit-ID` header
  (k8s.io/apiserver@v0.37.2 pkg/endpoints/filters/audit_init.go), which another request can
  reuse to pass as a duplicate.
- A batch the API server sends again is the same EventList encoded again, byte for byte
  (k8s.io/apiserver@v0.37.2 plugin/pkg/audit/webhook/webhook.go `processEvents`: the list is
  built once and `Body(&list)` re-encodes it per try; its maps encode with sorted keys), and
  its tries span minutes (5 from 10 s, x1.5, 30 s each: ~4 min), longer than `MAX_SEEN` events
  last at 4,000/s. So the digest of every batch taken is kept for the newest `MAX_BATCHES`
  (about 7 min of the API server's 10 batches/s), and one seen again is skipped whole.
- Whether kubefence was registered is the feed's to tell (the Detector's registration windows,
  `webhook.correlate.registration_windows`); the audit clock for the bypasses it holds meanwhile
  is the newest stageTimestamp of each slice.
- No I/O and no clock of its own (times are passed in); memory is bounded by count and bytes:
  the de-duplication window is the newest `MAX_SEEN` events, each a 16-byte digest
  (`detect.request_digest`); the detector bounds the rest.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from webhook.correlate.audit_reader import AuditReader
from webhook.correlate.detect import UNJUDGED, Alert, Detector, request_digest
from webhook.correlate.model import CorrelateOptions
from webhook.correlate.records import DecisionRecord
from webhook.correlate.timestamps import format_time, parse_time
from webhook.monitor.batch import Unjudged
from webhook.monitor.canary.watch import CanaryWatch
from webhook.monitor.gaps import GapWatch

MAX_SEEN = 200_000  # events remembered: > 20 s of a 4,000 events/s feed, twice
MAX_BATCHES = 4096  # batch digests remembered (~100 bytes each): > 6 min at 10 batches/s


@dataclass(slots=True)
class Taken:
    """What one slice of a batch gave: events new by stage, duplicates, malformed, alerts."""

    stages: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    malformed: int = 0
    unjudged: int = 0
    before_registration: int = 0  # would-be bypasses made before kubefence was registered
    alerts: list[Alert] = field(default_factory=list)


class Feed:
    """One monitor's detection state across batches."""

    def __init__(
        self,
        options: CorrelateOptions,
        canary: CanaryWatch | None = None,
        gaps: GapWatch | None = None,
    ) -> None:
        self.options = options
        self.reader = AuditReader(options)
        self.detector = Detector(options)
        self.canary = canary
        self.gaps = gaps  # the webhook's sensitive decisions against the feed (--decisions)
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._batches: OrderedDict[bytes, int] = OrderedDict()

    def batch_taken(self, digest: bytes) -> int | None:
        """The events of a batch of this digest already taken (a re-sent batch), else None."""
        return self._batches.get(digest)

    def took_batch(self, digest: bytes, events: int) -> None:
        """Remember a batch answered 200, for its re-sends; the oldest beyond MAX_BATCHES go."""
        self._batches[digest] = events
        if len(self._batches) > MAX_BATCHES:
            self._batches.popitem(last=False)

    def take(self, items: Iterable[Any], now: float) -> Taken:
        """Count and judge events; `now` is the receiver's clock (for the canary)."""
        taken = Taken()
        seen = self._seen
        gaps = self.gaps
        detector = self.detector
        before = detector.before_registration
        latest = ""  # the newest stageTimestamp: the API server's layout sorts as text
        for item in items:
            if not isinstance(item, dict):
                if isinstance(item, Unjudged):
                    taken.unjudged += 1
                    taken.alerts.append(unjudged_alert(item, now))
                else:
                    taken.malformed += 1
                continue
            audit_id, stage = item.get("auditID"), item.get("stage")
            if not isinstance(audit_id, str) or not isinstance(stage, str):
                taken.malformed += 1
                continue
            user = item.get("user")
            key = request_digest(
                audit_id,
                item.get("requestReceivedTimestamp"),
                user.get("username") if isinstance(user, dict) else None,
                item.get("verb"),
                item.get("requestURI"),
                stage,
                item.get("stageTimestamp"),
            )
            if key in seen:
                taken.duplicates += 1
                continue
            seen[key] = None
            if len(seen) > MAX_SEEN:
                seen.popitem(last=False)
            stamp = item.get("stageTimestamp")
            if isinstance(stamp, str) and stamp > latest:
                latest = stamp
            taken.stages[stage] = taken.stages.get(stage, 0) + 1
            agent = item.get("userAgent")
            if self.canary is not None and isinstance(agent, str):
                self.canary.seen(agent, now)
            record = self.reader.relevant(item)
            if record is not None:
                taken.alerts += detector.feed(record)
                if gaps is not None:
                    taken.alerts += gaps.audit(record)
        if latest:
            # not a time: no clock from it (the event was judged all the same)
            with contextlib.suppress(ValueError):
                reached = parse_time(latest)
                taken.alerts += detector.reached(reached)  # held bypasses whose hold is over
                if gaps is not None:
                    taken.alerts += gaps.reached(reached)
        taken.before_registration = detector.before_registration - before
        return taken

    def decision(self, record: DecisionRecord) -> list[Alert]:
        """A sensitive decision the webhook sent (`POST /decisions`): held against the feed."""
        return self.gaps.decision(record) if self.gaps is not None else []

    def reconfigured(self, options: CorrelateOptions) -> None:
        """Judge from now on with `options` (a config file changed: exemptions, webhook names);
        what is remembered (de-duplication, judged requests, probing windows, canaries) stays."""
        self.options = options
        self.reader = AuditReader(options)
        self.detector.options = options
        self.detector.registration.name = options.webhook_configuration

    def renewed(self) -> Feed:
        """A feed with the same options and nothing remembered: what a replica that takes over
        the monitor Lease starts from (its canaries too: those sent before went to the other;
        its gaps' coverage starts again with the first batch it takes)."""
        canary = CanaryWatch(self.canary.timeout) if self.canary is not None else None
        gaps = GapWatch(self.gaps.options) if self.gaps is not None else None
        return Feed(self.options, canary, gaps)

    def check(self, now: float) -> Alert | None:
        """A `evasion.feed_silent` alert when a canary is overdue."""
        return self.canary.check(now) if self.canary is not None else None


def unjudged_alert(item: Unjudged, now: float) -> Alert:
    """`evasion.unjudged`: an event the parser could not judge, with what it read of it (the
    receiver's time: the event's own was not read)."""
    f = item.fields
    ref = f.get("objectRef")
    ref = ref if isinstance(ref, dict) else {}
    group, resource = _s(ref.get("apiGroup")), _s(ref.get("resource"))
    return Alert(
        event=UNJUDGED,
        time=format_time(now),
        audit_id=_s(f.get("auditID")),
        user=_s(f.get("username")),
        verb=_s(f.get("verb")),
        resource=f"{group}/{resource}" if group else resource,
        subresource=_s(ref.get("subresource")),
        namespace=_s(ref.get("namespace")),
        name=_s(ref.get("name")),
        cause=item.cause,
        user_agent=_s(f.get("userAgent")),
    )


def _s(value: object) -> str:
    return value if isinstance(value, str) else ""
