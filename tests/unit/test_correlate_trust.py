"""Who asked (issue 17 §1, §5) and the one detection core (issue 18) of correlate and the monitor.

Synthetic events are copies of the real denial in fixtures/correlate with a few fields changed.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
from correlate_kit import (
    OPTIONS,
    WEBHOOK,
    at,
    detector_alerts,
    dump,
    lines,
    parsed_alerts,
    real_decision,
    real_event,
    run,
)

from webhook.correlate.detect import BYPASS, PROBING, SENSITIVE_ACCESS
from webhook.correlate.model import CorrelateOptions
from webhook.correlate.render_html import render_html
from webhook.correlate.render_json import to_json
from webhook.correlate.render_text import render_text
from webhook.correlate.timestamps import format_time, parse_time

DENIAL_ID = b"91b078e3-9bf8-45a7-a48e-92073fd413e0"
SA = "system:serviceaccount:team:builder"


def denial_pair(i: int, t: float, *, as_user: str | None = None) -> tuple[bytes, bytes]:
    """An audit event and the decision it joins: a Deployment create denied, the `i`th."""
    event = at(real_event(DENIAL_ID), t)
    decision = copy.deepcopy(real_decision(DENIAL_ID))
    ident = f"00000000-0000-4000-8000-{i:012d}"
    event["auditID"] = f"a{i}"
    event["annotations"][f"{WEBHOOK}/decision-id"] = ident
    decision["decision_id"] = ident
    decision["timestamp"] = format_time(t + 0.001)
    if as_user is not None:
        event["impersonatedUser"] = {"username": as_user, "groups": ["system:serviceaccounts"]}
        decision["user"] = as_user
    return dump(event), dump(decision)


def test_probing_counts_the_authenticated_user_not_the_impersonated_one() -> None:
    t0 = parse_time("2026-11-26T06:52:01Z")
    pairs = [denial_pair(i, t0 + i, as_user=f"{SA}-{i % 3}") for i in range(12)]
    options = CorrelateOptions(webhook_names=(WEBHOOK,), probe_threshold=10)
    report = run([a for a, _ in pairs], [d for _, d in pairs], options)
    assert [(p.user, p.denials) for p in report.probers] == [("kubefence-admin", 12)]
    # The denials table still says whom the webhook saw.
    assert set(report.denials_by_user) == {f"{SA}-0", f"{SA}-1", f"{SA}-2"}


def test_impersonated_bypass_shows_the_authenticated_user_beside() -> None:
    event = real_event(b"during-outage")
    event["impersonatedUser"] = {"username": SA}
    report = run([dump(event)], lines("outage.decisions.log"))
    (bypass,) = report.bypasses
    assert (bypass.user, bypass.auth_user) == (SA, "kubefence-admin")
    assert f"kubefence-admin as {SA}" in render_text(report)
    (listed,) = to_json(report)["bypasses"]
    assert (listed["user"], listed["authenticatedUser"]) == (SA, "kubefence-admin")


def _forged(decision: bytes, client: str, ident: str) -> bytes:
    doc = orjson.loads(decision)
    doc["decision_id"], doc["client"], doc["peer"] = ident, client, "10.0.0.9"
    return dump(doc)


def test_unrecorded_decisions_of_other_clients_are_listed_apart_never_counted() -> None:
    t0 = parse_time("2026-11-26T06:52:01Z")
    audit, decision = denial_pair(1, t0)
    recorded = _forged(decision, "unauthenticated", orjson.loads(decision)["decision_id"])
    forged = [
        _forged(decision, "unauthenticated", "f1"),
        _forged(decision, "commonName=kubelet", "f2"),
    ]
    trusted = _forged(decision, "commonName=kube-apiserver,organizationName=x", "f3")
    options = CorrelateOptions(
        webhook_names=(WEBHOOK,), probe_threshold=1, client_subjects=frozenset({"kube-apiserver"})
    )
    # The audit log runs past the decisions, so an unjoined API-server decision is a gap.
    later = at(real_event(DENIAL_ID), t0 + 30)
    report = run([audit, dump(later)], [recorded, *forged, trusted], options)
    s = report.summary
    assert (s.decisions, s.joined, s.audit_gaps, s.unverified) == (2, 1, 1, 2)
    assert s.denials == 2
    assert report.denials_by_user == {"kubefence-admin": 2}
    assert [(u.decision_id, u.client, u.peer) for u in report.unverified] == [
        ("f1", "unauthenticated", "10.0.0.9"),
        ("f2", "commonName=kubelet", "10.0.0.9"),
    ]
    text = render_text(report)
    assert "UNVERIFIED CLIENTS: 2" in text
    assert "commonName=kubelet" in text
    assert to_json(report)["summary"]["unverifiedClients"] == 2
    page = render_html(report)
    assert "<h2>Unverified clients (2)</h2>" in page
    assert "<td>commonName=kubelet</td><td>10.0.0.9</td>" in page
    assert "<code>f2</code>" in page
    assert "<b>2</b><span>unverified clients</span>" in page


def test_the_html_page_escapes_an_unverified_client_and_lists_none_when_there_are_none() -> None:
    t0 = parse_time("2026-11-26T06:52:01Z")
    audit, decision = denial_pair(1, t0)
    options = CorrelateOptions(webhook_names=(WEBHOOK,), client_subjects=frozenset({"apiserver"}))
    hostile = _forged(decision, "commonName=<script>x</script>", "f1")
    page = render_html(run([audit], [decision, hostile], options))
    assert "commonName=&lt;script&gt;x&lt;/script&gt;" in page
    assert "<script>" not in page
    clean = render_html(run([audit], [decision], options))
    assert "Unverified clients" not in clean
    assert "unverified clients" not in clean


def test_correlate_follow_and_monitor_classify_alike() -> None:
    t0 = parse_time("2026-11-26T06:52:10Z")
    pairs = [denial_pair(i, t0 + i) for i in range(10)]
    probes = [audit for audit, _ in pairs]
    # An exec that ran (101) without a decision: sensitive access, and a bypass of CONNECT.
    exec_event: dict[str, Any] = real_event(b'"stage":"ResponseStarted"', "edge.audit.log")
    exec_event["auditID"] = "exec-ran"
    exec_event["responseStatus"] = {"code": 101}
    complete = {**copy.deepcopy(exec_event), "stage": "ResponseComplete"}
    events = [
        *lines("outage.audit.log"),
        *lines("edge.audit.log"),
        *probes,
        dump(exec_event),
        dump(complete),
    ]
    options = CorrelateOptions(
        webhook_names=(WEBHOOK,), exempt_namespaces=OPTIONS.exempt_namespaces
    )
    decisions = lines("outage.decisions.log") + lines("edge.decisions.log")
    report = run(events, decisions + [d for _, d in pairs], options)
    batch = sorted(
        [(BYPASS, b.audit_id) for b in report.bypasses]
        + [(SENSITIVE_ACCESS, a.audit_id) for a in report.sensitive_access]
        + [(PROBING, p.user) for p in report.probers]
    )
    resent = [*events, dump(exec_event)]  # the live feed may send a batch again
    live = sorted(x for x in detector_alerts(resent, options) if x[0] != "evasion.fence_removed")
    parsed = sorted(x for x in parsed_alerts(resent, options) if x[0] != "evasion.fence_removed")
    assert live == batch == parsed
    assert (PROBING, "kubefence-admin") in batch
    assert (SENSITIVE_ACCESS, "exec-ran") in batch
    assert sum(1 for kind, _ in batch if kind == BYPASS) >= 8
