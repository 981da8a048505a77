"""`kubefence correlate`: the join of real audit logs with real decision logs, and its edge cases.

The fixtures under `fixtures/correlate/` are unedited logs of a real kube-apiserver 1.37 with the
real webhook registered (see the README there). Synthetic events are copies of real ones with a
few fields changed.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from correlate_kit import (
    EXEMPT,
    FIXTURES,
    OPTIONS,
    WEBHOOK,
    at,
    dump,
    lines,
    real_decision,
    real_event,
    run,
)

from webhook.cli import main
from webhook.correlate.audit_reader import AuditReader
from webhook.correlate.correlation import Correlation
from webhook.correlate.decision_reader import decision_records
from webhook.correlate.join import Correlator
from webhook.correlate.model import CorrelateOptions
from webhook.correlate.records import DecisionRecord, SourceStats
from webhook.correlate.render_json import to_json
from webhook.correlate.render_text import render_text
from webhook.correlate.timestamps import format_time, parse_time

# --- the real logs --------------------------------------------------------------------------------


def test_outage_fixture_bypasses_retries_and_joins() -> None:
    report = run(lines("outage.audit.log"), lines("outage.decisions.log"))
    s = report.summary
    assert (s.decisions, s.joined, s.retried, s.audit_gaps, s.uncovered) == (204, 60, 144, 0, 0)
    assert (s.bypasses, s.fail_open, s.dodged) == (8, 2, 6)
    assert s.malformed_lines == 0
    assert s.audit_events == len(lines("outage.audit.log"))
    by_name = {b.name: b for b in report.bypasses}
    # Made before the webhook was registered: no trace of it.
    assert {n for n, b in by_name.items() if b.cause == "dodged"} == {
        "fenced",
        "open",
        "default-deny",
        "default-deny-2",
        "dodged",
        "dodged-dry",
    }
    # Made while it was registered with failurePolicy Ignore and stopped.
    assert by_name["during-outage"].cause == "fail-open"
    assert by_name["during-outage"].webhook == WEBHOOK
    assert by_name["during-outage"].audit_id == "3ca541a9-0567-43f2-98b8-a7a8136151cc"
    assert by_name["web"].resource == "pods"
    assert by_name["dodged-dry"].dry_run
    # Never bypasses: scale and status writes (the webhook is not registered for them), the
    # exempt kube-system, failed CONNECTs (400: no node).
    assert not [b for b in report.bypasses if b.subresource or b.namespace == "kube-system"]
    assert s.sensitive_access == 0
    # Every retry of the 48 conflicting patches pairs with a request that recorded another call.
    assert {(r.operation, r.resource, r.namespace, r.name) for r in report.retried} == {
        ("UPDATE", "apps/deployments", "fenced", "web")
    }
    assert all(r.recorded_decision_id and r.audit_id for r in report.retried)
    assert (s.denials, report.denials_by_rule, report.denials_by_namespace) == (
        2,
        {"default-deny": 2},
        {"open": 2},
    )


def test_edge_fixture_stages_impersonation_collections() -> None:
    report = run(lines("edge.audit.log"), lines("edge.decisions.log"))
    s = report.summary
    # RequestReceived is logged here: every request has two events, folded into one.
    assert s.audit_events == len(lines("edge.audit.log"))
    assert (s.decisions, s.joined, s.retried, s.audit_gaps) == (20, 18, 2, 0)
    # deletecollection of NetworkPolicies: items b and c were decided after item a, whose
    # decision-id is the one the collection's audit event kept.
    assert {(r.name, r.collection) for r in report.retried} == {("b", True), ("c", True)}
    assert {r.audit_id for r in report.retried} == {"eb8ea1a6-1999-4d10-ba2f-1d8e805c9cfd"}
    # The empty collection called no webhook: indistinguishable from a dodge, reported.
    (empty,) = [b for b in report.bypasses if b.namespace == "empty"]
    assert (empty.verb, empty.cause, empty.name) == ("deletecollection", "dodged", "")
    assert [b.name for b in report.bypasses if b.cause == "fail-open"] == ["during-outage"]
    # Impersonated requests are keyed by the user the webhook saw.
    assert report.denials_by_user == {"alice": 3, "kubefence-admin": 1}


def test_fixture_dedupes_stages_by_request_not_by_audit_id() -> None:
    # The client chose its own Audit-ID; the request still joins through the decision-id.
    report = run(lines("edge.audit.log"), lines("edge.decisions.log"))
    assert report.summary.joined == 18
    line = next(x for x in lines("edge.audit.log") if b"client-chosen-id" in x and b"Complete" in x)
    twin = orjson.loads(line)
    twin["annotations"] = {"authorization.k8s.io/decision": "allow"}
    twin["objectRef"]["name"] = "smuggled"
    twin["requestReceivedTimestamp"] = format_time(parse_time(twin["stageTimestamp"]) + 1)
    twin["stageTimestamp"] = format_time(parse_time(twin["stageTimestamp"]) + 1.01)
    # A second request reusing that Audit-ID is judged on its own: a bypass, not a duplicate.
    report = run([*lines("edge.audit.log"), dump(twin)], lines("edge.decisions.log"))
    assert "smuggled" in {b.name for b in report.bypasses}


def test_a_request_reusing_an_open_sessions_audit_id_is_judged_on_its_own() -> None:
    session = real_event(
        b'"stage":"ResponseStarted","requestURI":"/api/v1/namespaces/fenced/pods/web/exec'
    )
    dodge = real_event(b'"dodged"')
    dodge["auditID"] = session["auditID"]  # Audit-ID is a request header the client may set
    t0 = parse_time(session["requestReceivedTimestamp"])
    report = run([dump(at(session, t0)), dump(at(dodge, t0 + 1))], [])
    assert [b.name for b in report.bypasses] == ["dodged"]


# --- audit gaps, retries, late answers -----------------------------------------------------------


def test_a_decision_whose_event_is_missing_is_an_audit_gap() -> None:
    missing = b"cbdda709-6861-4f67-9aff-72734265d2f6"  # the create of fenced/web
    audit = [x for x in lines("outage.audit.log") if missing not in x]
    report = run(audit, lines("outage.decisions.log"))
    (gap,) = report.audit_gaps
    assert (gap.decision_id, gap.operation, gap.namespace, gap.name) == (
        missing.decode(),
        "CREATE",
        "fenced",
        "web",
    )
    assert report.summary.joined == 59


def test_an_event_whose_decision_no_log_holds_is_counted() -> None:
    missing = b"cbdda709-6861-4f67-9aff-72734265d2f6"
    decisions = [x for x in lines("outage.decisions.log") if missing not in x]
    s = run(lines("outage.audit.log"), decisions).summary
    assert (s.audit_without_decision, s.joined, s.decisions) == (1, 59, 203)


def test_retries_need_the_same_user_and_object() -> None:
    decisions = []
    for line in lines("outage.decisions.log"):
        doc = orjson.loads(line)
        if doc.get("operation") == "UPDATE" and doc.get("name") == "web":
            doc["user"] = "mallory"  # the unjoined calls no longer match the recorded request
        decisions.append(dump(doc))
    report = run(lines("outage.audit.log"), decisions)
    assert report.summary.retried == 0
    assert report.summary.audit_gaps == 144


def test_a_create_is_never_the_retry_of_another_create() -> None:
    """Two denied CREATEs of open/web half a second apart: the second one's event is missing.
    The API server never calls a webhook twice for one create: that is an audit gap."""
    first = real_decision(b"91b078e3-9bf8-45a7-a48e-92073fd413e0")
    second = dict(
        first,
        decision_id="second-create",
        timestamp=format_time(parse_time(first["timestamp"]) + 0.5),
    )
    report = run(lines("outage.audit.log"), sorted_decisions([dump(second)]))
    assert [g.decision_id for g in report.audit_gaps] == ["second-create"]
    assert "second-create" not in {r.decision_id for r in report.retried}
    assert all(r.operation != "CREATE" for r in report.retried)


def test_a_denied_update_called_once_more_is_a_retry() -> None:
    """A denied UPDATE is called again when the first try used a stale cached object (and every
    conflict retry re-runs validation): the second call is a retry of the denied request."""
    update = real_event(b'"verb":"patch"')
    recorded = real_decision(update["annotations"][f"{WEBHOOK}/decision-id"].encode())
    assert recorded["operation"] == "UPDATE"
    update["responseStatus"] = {"metadata": {}, "status": "Failure", "code": 403}
    recorded.update(decision="deny", allowed=False)
    t0 = parse_time(update["requestReceivedTimestamp"])
    event = at(update, t0, duration=0.05)
    calls = [
        dict(recorded, timestamp=format_time(t0 + 0.01)),
        dict(recorded, decision_id="stale-cache-retry", timestamp=format_time(t0 + 0.03)),
    ]
    report = run([dump(event)], [dump(c) for c in calls])
    (retried,) = report.retried
    assert (retried.decision_id, retried.operation) == ("stale-cache-retry", "UPDATE")
    assert retried.recorded_decision_id == recorded["decision_id"]
    assert report.summary.audit_gaps == 0


def sorted_decisions(extra: list[bytes]) -> list[bytes]:
    """The outage decisions with `extra` lines, in time order (as a log is written)."""

    def time_of(line: bytes) -> float:
        return parse_time(orjson.loads(line)["timestamp"])

    decisions = [x for x in lines("outage.decisions.log") if b"admission.decision" in x]
    return sorted([*decisions, *extra], key=time_of)


def test_a_decision_made_after_the_api_server_failed_open_points_at_the_bypass() -> None:
    outage = real_event(b'"during-outage"')
    decision = real_decision(b'"web"')
    decision.update(
        decision_id="late-1",
        operation="CREATE",
        namespace="open",
        name="during-outage",
        timestamp=format_time(parse_time(outage["requestReceivedTimestamp"]) + 0.002),
    )
    report = run(lines("outage.audit.log"), [*lines("outage.decisions.log"), dump(decision)])
    (gap,) = report.audit_gaps
    assert gap.decision_id == "late-1"
    assert gap.failed_open_audit_id == outage["auditID"]


def test_decisions_outside_the_audit_logs_are_not_gaps() -> None:
    audit = lines("outage.audit.log")
    end = max(parse_time(orjson.loads(x)["stageTimestamp"]) for x in audit)
    decision = real_decision(b'"web"')
    decision.update(decision_id="after-the-log", timestamp=format_time(end + 3600))
    before = dict(decision, decision_id="before-the-log", timestamp=format_time(end - 86400))
    report = run(audit, [dump(before), *lines("outage.decisions.log"), dump(decision)])
    assert report.summary.uncovered == 2
    assert report.summary.audit_gaps == 0


def test_an_exec_session_joins_on_response_started_however_long_it_lasts() -> None:
    start = real_event(
        b'"stage":"ResponseStarted","requestURI":"/api/v1/namespaces/fenced/pods/web/exec'
    )
    t0 = parse_time(start["requestReceivedTimestamp"])
    started = at(start, t0)
    started["responseStatus"] = {"metadata": {}, "code": 101}
    complete = dict(copy.deepcopy(started), stage="ResponseComplete")
    complete["stageTimestamp"] = format_time(t0 + 3600)
    # An hour of other traffic between the two stages.
    filler_doc = real_event(b'"verb":"get"')
    filler = [dump(at(filler_doc, t0 + 60 * k)) for k in range(1, 60)]
    decision = real_decision(b'"CONNECT"')
    report = run([dump(started), *filler, dump(complete)], [dump(decision)])
    s = report.summary
    assert (s.joined, s.audit_gaps, s.sensitive_access, s.bypasses) == (1, 0, 1, 0)
    (access,) = report.sensitive_access
    assert (access.subresource, access.code, access.decision_id) == (
        "exec",
        101,
        decision["decision_id"],
    )


# --- bypass rules -------------------------------------------------------------------------------


def test_fail_open_of_another_webhook_is_a_dodge_for_ours() -> None:
    outage = real_event(b'"during-outage"')
    outage["annotations"] = {
        "failed-open.validating.webhook.admission.k8s.io/round_0_index_1": "policy.example.com"
    }
    (bypass,) = run([dump(outage)], []).bypasses
    assert bypass.cause == "dodged"
    report = run(
        [dump(outage)], [], CorrelateOptions(webhook_names=(WEBHOOK, "policy.example.com"))
    )
    assert report.bypasses[0].cause == "fail-open"


@pytest.mark.parametrize("value", [{"a": 1}, ["validate.kubefence.io"], 7, None])
def test_a_failed_open_annotation_that_is_not_a_string_is_no_fail_open(value: object) -> None:
    """A forged event (the monitor's feed, a doctored file) may put any JSON there."""
    outage = real_event(b'"during-outage"')
    outage["annotations"] = {
        "failed-open.validating.webhook.admission.k8s.io/round_0_index_0": value
    }
    (bypass,) = run([dump(outage)], []).bypasses
    assert bypass.cause == "dodged"


def test_any_configured_webhook_name_joins() -> None:
    event = real_event(b'"name":"web","apiGroup":"apps"')
    event["annotations"] = {
        k.replace(WEBHOOK, "pods.kubefence.io"): v for k, v in event["annotations"].items()
    }
    assert run([dump(event)], []).summary.bypasses == 1
    two = CorrelateOptions(webhook_names=(WEBHOOK, "pods.kubefence.io"), exempt_namespaces=EXEMPT)
    assert run([dump(event)], [], two).summary.bypasses == 0


@pytest.mark.parametrize(
    ("change", "bypass"),
    [
        ({}, True),
        ({"code": 403}, False),  # refused before or by admission: nothing got in
        ({"code": 409}, False),
        ({"namespace": "kube-system"}, False),  # exempt
        ({"subresource": "status", "verb": "patch"}, False),  # never sent to the webhook
        ({"subresource": "scale", "verb": "update"}, False),
        ({"verb": "get"}, False),
        ({"verb": "delete"}, False),  # workload deletes are not registered
        ({"verb": "patch"}, True),
        ({"verb": "update"}, True),
        ({"group": "example.com"}, False),  # a CRD that happens to be called deployments
    ],
)
def test_what_should_have_been_decided(change: dict[str, Any], bypass: bool) -> None:
    event = real_event(b'"dodged"')
    ref = event["objectRef"]
    if "code" in change:
        event["responseStatus"]["code"] = change["code"]
    for key, field in (
        ("namespace", "namespace"),
        ("subresource", "subresource"),
        ("group", "apiGroup"),
    ):
        if key in change:
            ref[field] = change[key]
    if "verb" in change:
        event["verb"] = change["verb"]
    report = run([dump(event)], [])
    assert report.summary.bypasses == (1 if bypass else 0)


@pytest.mark.parametrize("verb", ["get", "create", "update", "patch", "delete", ""])
def test_a_proxy_request_no_webhook_decided_is_a_bypass(verb: str) -> None:
    event = real_event(
        b'"stage":"ResponseComplete","requestURI":"/api/v1/namespaces/fenced/pods/web/exec'
    )
    event["objectRef"].update(resource="pods", subresource="proxy", namespace="fenced")
    event["verb"] = verb
    event["responseStatus"]["code"] = 200
    event["annotations"] = {}
    report = run([dump(event)], [])
    assert report.summary.bypasses == 1


def test_network_policy_deletes_and_namespace_creates_are_decided() -> None:
    policy = real_event(b'"verb":"delete","user"')
    assert policy["objectRef"]["resource"] == "networkpolicies"
    policy["annotations"] = {}
    namespace = real_event(
        b'"name":"open","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":201}'
    )
    exempt_ns = copy.deepcopy(namespace)
    exempt_ns["objectRef"]["name"] = "kube-public"
    report = run([dump(policy), dump(namespace), dump(exempt_ns)], [])
    assert [(b.resource, b.name) for b in report.bypasses] == [
        ("networking.k8s.io/networkpolicies", "default-deny-2"),
        ("namespaces", "open"),
    ]


def test_the_namespace_controller_emptying_a_namespace_is_not_a_dodge() -> None:
    empty = real_event(b'"verb":"deletecollection"', "edge.audit.log")
    empty = dict(empty, stage="ResponseComplete")
    assert run([dump(empty)], []).summary.bypasses == 1
    empty["user"] = {"username": "system:serviceaccount:kube-system:namespace-controller"}
    assert run([dump(empty)], []).summary.bypasses == 0


# --- sensitive access ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "code", "namespace", "counted"),
    [
        ("create pods/exec", 101, "fenced", True),
        ("get pods/exec", 101, "fenced", True),  # websocket exec
        ("create pods/attach", 101, "fenced", True),
        ("get pods/portforward", 101, "fenced", True),
        ("get pods/proxy", 200, "fenced", True),
        ("get services/proxy", 200, "fenced", True),
        ("delete pods/proxy", 200, "fenced", True),  # a proxy takes every HTTP method
        (" pods/proxy", 200, "fenced", True),  # OPTIONS is recorded with the verb ""
        ("get nodes/proxy", 200, "", True),  # the kubelet's API: exec into any pod on the node
        ("patch pods/ephemeralcontainers", 200, "fenced", True),  # kubectl debug
        ("create pods/exec", 403, "fenced", False),
        ("create pods/exec", 400, "fenced", False),
        ("create pods/exec", 101, "kube-system", False),
        ("get pods/log", 200, "fenced", False),
    ],
)
def test_sensitive_access(call: str, code: int, namespace: str, counted: bool) -> None:
    verb, _, path = call.partition(" ")
    verb = verb.strip()
    resource, _, sub = path.partition("/")
    event = real_event(
        b'"stage":"ResponseComplete","requestURI":"/api/v1/namespaces/fenced/pods/web/exec'
    )
    event["objectRef"].update(resource=resource, subresource=sub, namespace=namespace)
    event["verb"] = verb
    event["responseStatus"]["code"] = code
    report = run([dump(event)], [])
    assert report.summary.sensitive_access == (1 if counted else 0)
    if counted:
        assert report.sensitive_by_user == {"kubefence-admin": 1}


# --- denials and probing ------------------------------------------------------------------------


def denials(user: str, times: list[float]) -> list[bytes]:
    template = real_decision(b'"deny"')
    return [
        dump(dict(template, decision_id=f"{user}-{i}", user=user, timestamp=format_time(t)))
        for i, t in enumerate(times)
    ]


def test_probing_is_threshold_denials_within_the_sliding_window() -> None:
    t0 = parse_time("2026-11-26T06:52:01Z")
    fast = denials("eve", [t0 + 50 * k for k in range(10)])  # 10 within 450s
    slow = denials("sam", [t0 + 90 * k for k in range(12)])  # never 10 within 600s
    nine = denials("ivy", [t0 + k for k in range(9)])
    options = CorrelateOptions(webhook_names=(WEBHOOK,))
    report = run(
        [], sorted([*fast, *slow, *nine], key=lambda x: orjson.loads(x)["timestamp"]), options
    )
    assert [(p.user, p.denials) for p in report.probers] == [("eve", 10)]
    (eve,) = report.probers
    assert (eve.window_start, eve.window_end) == (format_time(t0), format_time(t0 + 450))
    assert report.denials_by_user == {"sam": 12, "eve": 10, "ivy": 9}
    # The window and the threshold are options.
    wider = CorrelateOptions(webhook_names=(WEBHOOK,), probe_window=1200, probe_threshold=9)
    users = {p.user for p in run([], sorted([*fast, *slow, *nine]), wider).probers}
    assert users == {"eve", "sam", "ivy"}


# --- windows, formats, robustness ---------------------------------------------------------------


def test_since_and_until_select_the_reported_window() -> None:
    since = parse_time("2026-11-26T06:52:02Z")
    until = parse_time("2026-11-26T06:52:03Z")
    options = CorrelateOptions(
        webhook_names=(WEBHOOK,), exempt_namespaces=EXEMPT, since=since, until=until
    )
    report = run(lines("outage.audit.log"), lines("outage.decisions.log"), options)
    assert {b.name for b in report.bypasses} == {"during-outage", "web"}
    assert report.summary.decisions == 0
    everything = run(lines("outage.audit.log"), lines("outage.decisions.log"))
    assert 0 < report.summary.audit_events < everything.summary.audit_events


def test_malformed_lines_are_counted_and_skipped() -> None:
    audit = lines("outage.audit.log")
    truncated = audit[40][: len(audit[40]) // 2] + b"\n"
    not_event = b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":1}\n'
    report = run(
        [*audit[:40], truncated, b"garbage\n", not_event, *audit[40:]],
        lines("outage.decisions.log"),
    )
    assert report.summary.malformed_lines == 3
    assert report.summary.bypasses == 8


def test_rotated_files_in_any_order_and_any_layout_give_the_same_report() -> None:
    audit = lines("outage.audit.log")
    whole = to_json(run(audit, lines("outage.decisions.log")))
    # Keys sorted and spaces added, as a log shipper may re-serialize: no fast path applies.
    shipped = [
        json.dumps(json.loads(x), sort_keys=True, indent=None).encode() + b"\n" for x in audit
    ]
    split = to_json(run([shipped[70:], audit[:70]], lines("outage.decisions.log")))
    assert split["summary"] == whole["summary"]
    assert split["bypasses"] == whole["bypasses"]


def test_an_event_list_line_is_read_item_by_item() -> None:
    items = [orjson.loads(x) for x in lines("outage.audit.log")]
    batch = dump({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items})
    report = run([batch], lines("outage.decisions.log"))
    assert (report.summary.bypasses, report.summary.joined) == (8, 60)


def test_decision_lines_may_carry_a_prefix() -> None:
    prefixed = [b"[pod/kubefence-7d9/webhook] " + x for x in lines("outage.decisions.log")]
    report = run(lines("outage.audit.log"), [b"Traceback (most recent call last):\n", *prefixed])
    assert report.summary.joined == 60


def test_the_fast_path_never_skips_a_line_that_matters() -> None:
    reader = AuditReader(OPTIONS)
    for name in ("outage.audit.log", "edge.audit.log"):
        for line in lines(name):
            record = reader._record(orjson.loads(line))
            assert record is not None
            matters = record.stage != "RequestReceived" and (
                record.registered or record.sensitive or bool(record.decision_ids)
            )
            if matters:
                assert not reader._cannot_matter(line), line[:200]


def test_memory_is_bounded_by_the_join_window() -> None:
    # An UPDATE (a patch of fenced/web): updates are what the API server calls webhooks again for.
    joined_event = real_event(b'"verb":"patch"')
    decision = real_decision(joined_event["annotations"][f"{WEBHOOK}/decision-id"].encode())
    machine = Correlator(CorrelateOptions(webhook_names=(WEBHOOK,), join_window=60))
    machine.audit_start = 0.0
    reader = AuditReader(machine.options)
    t0 = parse_time("2026-01-01T00:00:00Z")
    for k in range(20_000):  # 20,000 requests over 5.5 hours, one in ten retried once
        t = t0 + k
        doc = at(joined_event, t)
        doc["annotations"][f"{WEBHOOK}/decision-id"] = f"id-{k}"
        machine.decision(decision_at(decision, f"id-{k}", t - 0.001))
        if k % 10 == 0:
            machine.decision(decision_at(decision, f"retry-{k}", t + 0.001))
        record = reader._record(doc)
        assert record is not None
        machine.audit(record)
        assert len(machine._pending) < 200
        assert sum(map(len, machine._seen.values())) < 400
    report = machine.finish([], [])
    assert (report.summary.joined, report.summary.retried, report.summary.audit_gaps) == (
        20_000,
        2_000,
        0,
    )


def decision_at(template: dict[str, Any], decision_id: str, t: float) -> DecisionRecord:
    doc = dict(template, decision_id=decision_id, timestamp=format_time(t))
    return next(decision_records([dump(doc)], SourceStats("test")))


def test_json_keys() -> None:
    data = to_json(run(lines("outage.audit.log"), lines("outage.decisions.log")))
    assert set(data["summary"]) >= {
        "auditEvents",
        "decisions",
        "joined",
        "bypasses",
        "auditGaps",
        "denials",
        "probers",
        "sensitiveAccess",
        "malformedLines",
    }
    assert all(isinstance(v, int) for v in data["summary"].values())
    for key in ("bypasses", "auditGaps", "probers", "sensitiveAccess", "retried"):
        assert isinstance(data[key], list)
    assert set(data["denials"]) == {"byRule", "byNamespace", "byUser"}
    assert {"auditID", "decisionID", "recordedDecisionID"} <= set(data["retried"][0])
    assert set(data["bypasses"][0]) >= {"auditID", "cause", "user", "namespace", "name"}


# --- the command --------------------------------------------------------------------------------


def test_cli_exit_codes_formats_gzip_and_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    audit = lines("outage.audit.log")
    old = tmp_path / "audit-old.log.gz"
    new = tmp_path / "audit.log"
    with gzip.open(old, "wb") as f:
        f.writelines(audit[:70])
    new.write_bytes(b"".join(audit[70:]))
    decisions = FIXTURES / "outage.decisions.log"
    rc = main(["correlate", "--audit-log", str(new), "--audit-log", str(old),
               "--decision-log", str(decisions), "--format", "json"])  # fmt: skip
    assert rc == 1
    data = json.loads(capsys.readouterr().out)
    assert (data["summary"]["bypasses"], data["summary"]["joined"]) == (8, 60)
    # stdin, a window without bypasses: exit 0; text format.
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"".join(audit))))
    rc = main(["correlate", "--audit-log", "-", "--decision-log", str(decisions),
               "--since", "2026-11-26T06:52:01.3Z", "--until", "2026-11-26T06:52:02Z"])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "BYPASSES: 0" in out
    assert "RETRIED: 144" in out
    html_out = tmp_path / "report.html"
    rc = main(["correlate", "--audit-log", str(new), "--decision-log", str(decisions),
               "--format", "html", "--out", str(html_out)])  # fmt: skip
    assert rc == 1
    assert html_out.read_text().startswith("<!DOCTYPE html>")


def test_cli_config_supplies_names_and_exemptions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "kubefence.yaml"
    config.write_text("webhookNames: [other.kubefence.io]\nexemptions: {namespaces: [open]}\n")
    rc = main(["correlate", "--audit-log", str(FIXTURES / "outage.audit.log"), "--decision-log",
               str(FIXTURES / "outage.decisions.log"), "--config", str(config), "--format",
               "json"])  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert data["webhookNames"] == ["other.kubefence.io"]
    # No annotation carries that name: every registered write outside "open" is a bypass.
    assert all(b["namespace"] != "open" for b in data["bypasses"])
    assert data["summary"]["joined"] == 0


def test_cli_unreadable_input_exits_2_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    decisions = str(FIXTURES / "outage.decisions.log")
    rc = main(["correlate", "--audit-log", str(tmp_path / "nope.log"), "--decision-log", decisions])
    assert rc == 2
    assert "nope.log: cannot read" in capsys.readouterr().err
    corrupt = tmp_path / "audit.log.gz"
    data = gzip.compress(b"".join(lines("outage.audit.log")))
    corrupt.write_bytes(data[: len(data) // 2])  # cut off mid-stream
    rc = main(["correlate", "--audit-log", str(corrupt), "--decision-log", decisions])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{corrupt}: line " in err
    assert "cannot read" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["correlate", "--audit-log", decisions, "--decision-log", decisions,
              "--since", "yesterday"])  # fmt: skip
    assert exit_info.value.code == 2
    assert "not an RFC 3339 time" in capsys.readouterr().err


def test_text_report_names_both_kinds_of_bypass() -> None:
    text = render_text(run(lines("outage.audit.log"), lines("outage.decisions.log")))
    assert "BYPASSES: 8 (2 fail-open, 6 dodged)" in text
    assert "3ca541a9-0567-43f2-98b8-a7a8136151cc" in text
    assert "dodged (dry run)" in text


def test_stats_name_the_failing_source() -> None:
    def broken() -> Iterator[bytes]:
        yield lines("outage.audit.log")[0]
        raise OSError("disk on fire")

    correlation = Correlation([("a.log", broken())], [], OPTIONS)
    with pytest.raises(OSError, match="disk on fire"):
        correlation.run()
    failed = correlation.failed_source()
    assert failed is not None
    assert (failed.name, failed.error_line) == ("a.log", 2)
    assert isinstance(failed, SourceStats)


# --- the timeline ---------------------------------------------------------------------------------


def test_timeline_buckets_are_readable_widths_within_120() -> None:
    from webhook.correlate.tally import SECOND_SLOTS, Tally, timeline

    def widths(seconds: list[int]) -> set[float]:
        slots = {s: [1, 0, 0, 0, 0] for s in seconds}
        buckets = timeline(slots)
        assert len(buckets) <= 120
        assert sum(b.allowed for b in buckets) == len(seconds)
        assert all(b.start % b.seconds == 0 for b in buckets)  # aligned with the clock
        return {b.seconds for b in buckets}

    t0 = 1_780_000_000
    assert widths([t0, t0 + 3]) == {1.0}
    assert widths([t0, t0 + 90]) == {1.0}
    assert widths([t0, t0 + 400]) == {5.0}
    assert widths([t0, t0 + 3 * 3600]) == {120.0}
    assert widths([t0, t0 + 20 * 86400]) == {21600.0}
    assert widths([t0, t0 + 400 * 86400]) == {4 * 86400.0}
    # Past SECOND_SLOTS busy seconds the counts fold into minutes: memory stays bounded.
    tally = Tally(OPTIONS)
    for k in range(SECOND_SLOTS + 10):
        tally.bucket(float(t0 + 2 * k))[0] += 1
    assert len(tally._slots) <= SECOND_SLOTS
    folded = timeline(tally._slots, tally._resolution)
    assert sum(b.allowed for b in folded) == SECOND_SLOTS + 10
    assert all(b.seconds % 60 == 0 for b in folded)


def test_text_counts_agree_with_their_nouns() -> None:
    """`1 malformed line`, `1 user`, `1 event`: never `1 malformed lines` or `1 users`."""
    audit = lines("outage.audit.log")
    one_bad = [*audit[:40], b"garbage\n", *audit[40:]]
    options = CorrelateOptions(
        webhook_names=(WEBHOOK,), exempt_namespaces=EXEMPT, probe_threshold=2
    )
    text = render_text(run(one_bad, lines("outage.decisions.log"), options))
    assert ", 1 malformed line\n" in text
    assert "PROBING: 1 user denied 2+ times" in text
    assert "1 users" not in text
    assert "1 malformed lines" not in text


# --- input that cannot be what its flag says ------------------------------------------------------


@pytest.mark.parametrize(
    ("audit", "decisions", "message"),
    [
        (
            "outage.decisions.log",
            "outage.audit.log",
            "outage.decisions.log: no audit.k8s.io/v1 Event in 207 lines; line 1 is a "
            "'server.started' log line",
        ),
        ("empty", "outage.decisions.log", "empty.log: empty: no audit.k8s.io/v1 Event in it"),
        ("binary", "outage.decisions.log", "binary.log: no audit.k8s.io/v1 Event in"),
        ("outage.audit.log", "empty", "empty.log: empty: no kubefence admission.decision line"),
        (
            "outage.audit.log",
            "outage.audit.log",
            "outage.audit.log: no kubefence admission.decision line in 133 lines; line 1 is a "
            "kube-apiserver audit Event: give this file with --audit-log",
        ),
        (
            "decision-lines",
            "outage.decisions.log",
            "decision-lines.log: no audit.k8s.io/v1 Event in 2 lines; line 1 is a kubefence "
            "decision line: give this file with --decision-log",
        ),
    ],
    ids=["swapped", "empty-audit", "binary", "empty-decisions", "audit-twice", "decisions-only"],
)
def test_a_file_without_one_record_of_its_kind_exits_2(
    audit: str,
    decisions: str,
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Swapped, empty or binary logs were a silent "BYPASSES: 0", exit 0: a cron job's pass."""
    decision_lines = [x for x in lines("outage.decisions.log") if b"admission.decision" in x]
    made = {
        "empty": b"",
        "binary": bytes(range(256)) * 16,  # say, a tarball given by mistake
        "decision-lines": b"".join(decision_lines[:2]),
    }

    def path(name: str) -> str:
        if name in made:
            file = tmp_path / f"{name}.log"
            file.write_bytes(made[name])
            return str(file)
        return str(FIXTURES / name)

    rc = main(["correlate", "--audit-log", path(audit), "--decision-log", path(decisions)])
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    assert err.startswith("kubefence correlate: ")
    assert message in err
    assert len(err.splitlines()) == 1


def test_logs_that_do_not_overlap_in_time_warn_in_every_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    audit, decisions = str(FIXTURES / "outage.audit.log"), str(FIXTURES / "edge.decisions.log")
    rc = main(["correlate", "--audit-log", audit, "--decision-log", decisions])
    text, err = capsys.readouterr()
    assert rc == 1  # the audit log's own bypasses still count
    assert "  WARNING: the decision logs (2026-11-26T06:56:49.969430Z .. " in text
    assert "do not overlap in time: no decision can join" in text
    assert err == ""
    main(["correlate", "--audit-log", audit, "--decision-log", decisions, "--format", "json"])
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert data["summary"]["logsOverlap"] is False
    assert data["summary"]["uncovered"] == 20
    assert len(data["warnings"]) == 1
    assert "do not overlap in time" in data["warnings"][0]
    assert "warning: the decision logs" in err  # cron sees it without parsing the JSON
    page = tmp_path / "report.html"
    main(["correlate", "--audit-log", audit, "--decision-log", decisions, "--format", "html",
          "--out", str(page)])  # fmt: skip
    assert '<p class="warning">warning: the decision logs' in page.read_text()
    # Logs of one period: no warning, logsOverlap true.
    main(["correlate", "--audit-log", audit, "--decision-log", str(FIXTURES /
          "outage.decisions.log"), "--format", "json"])  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    assert (data["summary"]["logsOverlap"], data["warnings"]) == (True, [])
