"""Batch `correlate` judges an audit event repeated in its logs once, as the monitor does: the
same request at the same stage written twice (in one file, or in two files given together) is
not a second bypass, probe or sensitive access; another request reusing a client-chosen auditID
is still judged."""

from __future__ import annotations

from correlate_kit import OPTIONS, at, dump, lines, real_event, run

from webhook.correlate.model import Report
from webhook.correlate.timestamps import parse_time

DODGED = b'"name":"dodged"'  # a Deployment create no kubefence webhook saw


def findings(report: Report) -> tuple[int, int, int, int, int]:
    s = report.summary
    return (s.bypasses, s.fail_open, s.dodged, s.sensitive_access, s.denials)


def test_every_event_written_twice_in_one_file_is_judged_once() -> None:
    audit, decisions = lines("outage.audit.log"), lines("outage.decisions.log")
    once = run(audit, decisions)
    twice = run([line for line in audit for _ in range(2)], decisions)
    assert findings(twice) == findings(once)
    assert findings(once)[0] == 8  # the fixture's bypasses, so the comparison means something
    assert [b.audit_id for b in twice.bypasses] == [b.audit_id for b in once.bypasses]


def test_the_same_file_given_twice_is_judged_once() -> None:
    audit, decisions = lines("outage.audit.log"), lines("outage.decisions.log")
    once = run(audit, decisions)
    assert findings(run([audit, list(audit)], decisions)) == findings(once)


def test_a_repeat_later_than_the_join_window_is_no_longer_remembered() -> None:
    t0 = parse_time("2026-11-26T06:52:01Z")
    dodged = real_event(DODGED)
    first = dump(at(dodged, t0))
    filler = dump(at({**dodged, "auditID": "filler"}, t0 + OPTIONS.join_window + 5))
    report = run([first, first, filler, first], lines("outage.decisions.log"))
    # once at first, once more for the filler, once for the stray copy beyond the window
    assert report.summary.dodged == 3


def test_a_client_chosen_audit_id_reused_by_another_request_is_still_judged() -> None:
    t0 = parse_time("2026-11-26T06:52:01Z")
    dodged = real_event(DODGED)
    # The same auditID (a client may send its own Audit-ID header), a request of its own.
    report = run([dump(at(dodged, t0)), dump(at(dodged, t0 + 1))], lines("outage.decisions.log"))
    assert report.summary.dodged == 2
