"""One correlate run over named line streams: readers, merge by time, the join, the Report."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

from webhook.correlate.audit_reader import AuditReader
from webhook.correlate.decision_reader import decision_records
from webhook.correlate.join import Correlator
from webhook.correlate.model import CorrelateOptions, Report
from webhook.correlate.records import AuditRecord, DecisionRecord, SourceStats


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
