"""A quiet first day (issue 26 item 4): requests before kubefence's webhook configuration first
existed are counted, not bypasses; those made while it was deleted are, with cause
`unregistered`; nothing is assumed where the log cannot tell. Synthetic event sequences built
from the real events of `tests/unit/fixtures/correlate/outage.audit.log`, through the report
(`correlate`), the live detector (`monitor`, `correlate --follow`) and the command."""

from __future__ import annotations

import copy
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from correlate_kit import FIXTURES, OPTIONS, at, dump, real_event, run

from webhook.auditpolicy import load_policy
from webhook.correlate.audit_reader import AuditReader
from webhook.correlate.detect import BYPASS, Detector
from webhook.correlate.model import CorrelateOptions, Report
from webhook.correlate.records import SourceStats
from webhook.correlate.registration_windows import (
    RegistrationWindows,
    Standing,
    records_configuration_writes,
)
from webhook.correlate.render_html import render_html
from webhook.correlate.render_json import render_json
from webhook.correlate.render_text import render_text
from webhook.monitor.feed import Feed
from webhook.monitor.metrics import MonitorMetrics

CONFIGURATION = "kubefence"
REGISTERED = replace(OPTIONS, webhook_configuration=CONFIGURATION)
T0 = 1_800_000_000.0


def vwc(verb: str, t: float, *, code: int = 201, dry_run: bool = False, name: str = "") -> bytes:
    """A write of kubefence's ValidatingWebhookConfiguration received at `t`."""
    doc = at(real_event(b'"validatingwebhookconfigurations","name":"kubefence"'), t)
    doc["verb"] = verb
    doc["responseStatus"] = {"metadata": {}, "code": code}
    doc["objectRef"]["name"] = name or CONFIGURATION
    base = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
    doc["requestURI"] = base + ("" if verb == "create" else f"/{CONFIGURATION}")
    if dry_run:
        doc["requestURI"] += "?dryRun=All"
    doc["auditID"] = f"vwc-{verb}-{t}"
    return dump(doc)


def namespace_create(name: str, t: float) -> bytes:
    """A Namespace create that no webhook decided: a dodged bypass when kubefence was there."""
    doc = at(real_event(b'"verb":"create","user":{"username":"kubefence-admin"'), t)
    assert doc["objectRef"]["resource"] == "namespaces"
    doc["objectRef"]["name"] = name
    doc["auditID"] = f"ns-{name}"
    return dump(doc)


def decided(t: float) -> bytes:
    """A request kubefence decided (its decision-id annotation): a trace of it."""
    doc = at(real_event(b"validate.kubefence.io/decision-id"), t)
    doc["auditID"] = f"decided-{t}"
    return dump(doc)


def report(events: list[bytes], options: CorrelateOptions = REGISTERED) -> Report:
    return run(events, [], options)


def bypassed(r: Report) -> dict[str, str]:
    return {b.name: b.cause for b in r.bypasses}


def live(events: list[bytes], options: CorrelateOptions = REGISTERED) -> tuple[list[Any], int]:
    """What `correlate --follow` (and the monitor's detector) alert: (name, cause) of bypasses,
    and the requests counted before registration."""
    reader, detector = AuditReader(options), Detector(options)
    alerts = []
    for record in reader.records(iter(events), SourceStats("audit")):
        alerts += detector.feed(record)
    return [(a.name, a.cause) for a in alerts if a.event == BYPASS], detector.before_registration


# --- the first create -------------------------------------------------------------------------


def test_requests_before_the_first_create_are_counted_not_listed() -> None:
    events = [
        namespace_create("early", T0),
        vwc("create", T0 + 10),
        namespace_create("late", T0 + 30),
    ]
    r = report(events)
    assert bypassed(r) == {"late": "dodged"}  # after the grace, no decision: a real bypass
    assert r.summary.before_registration == 1
    assert r.summary.bypasses == 1
    assert r.first_registered == pytest.approx(T0 + 10.004)
    assert live(events) == ([("late", "dodged")], 1)


def test_a_request_within_the_grace_after_the_create_is_before_registration() -> None:
    events = [vwc("create", T0), namespace_create("informer-lag", T0 + 1)]
    assert report(events).summary.before_registration == 1
    assert bypassed(report(events)) == {}


def test_the_first_decision_after_the_create_ends_the_grace() -> None:
    events = [vwc("create", T0), decided(T0 + 1), namespace_create("after-decision", T0 + 2)]
    assert bypassed(report(events)) == {"after-decision": "dodged"}


def test_a_dry_run_create_is_not_the_first_create() -> None:
    # Were the dry run the first create, "between" (past its grace) would be a dodged bypass.
    events = [
        vwc("create", T0, dry_run=True),
        namespace_create("between", T0 + 20),
        vwc("create", T0 + 40),
    ]
    r = report(events)
    assert bypassed(r) == {}
    assert r.summary.before_registration == 1
    assert r.first_registered == pytest.approx(T0 + 40.004)


def test_a_failed_create_is_not_the_first_create() -> None:
    events = [
        vwc("create", T0, code=409),
        namespace_create("between", T0 + 20),
        vwc("create", T0 + 40),
    ]
    assert report(events).summary.before_registration == 1
    assert bypassed(report(events)) == {}


def test_another_configuration_created_is_not_kubefence_registered() -> None:
    events = [vwc("create", T0, name="someone-else"), namespace_create("after", T0 + 20)]
    r = report(events)
    assert bypassed(r) == {"after": "dodged"}  # nothing tells: assumed nothing
    assert r.notices == ()  # the log does record webhook configurations


def test_a_decision_before_the_create_keeps_earlier_requests_bypasses() -> None:
    # kubefence decided before this "first" create: it was registered before the log shows.
    events = [decided(T0), namespace_create("early", T0 + 5), vwc("create", T0 + 10)]
    r = report(events)
    assert bypassed(r) == {"early": "dodged"}
    assert r.summary.before_registration == 0
    assert live(events) == ([("early", "dodged")], 0)


# --- delete, act, re-create -------------------------------------------------------------------


def test_delete_act_recreate_is_an_unregistered_bypass() -> None:
    events = [
        vwc("create", T0),
        decided(T0 + 2),
        vwc("delete", T0 + 10, code=200),
        namespace_create("while-deleted", T0 + 12),
        vwc("create", T0 + 14),
        namespace_create("informer-lag", T0 + 15),  # within the re-create's grace: still loud
        namespace_create("later", T0 + 60),
    ]
    r = report(events)
    assert bypassed(r) == {
        "while-deleted": "unregistered",
        "informer-lag": "unregistered",
        "later": "dodged",
    }
    assert (r.summary.unregistered, r.summary.dodged, r.summary.bypasses) == (2, 1, 3)
    assert sum(b.unregistered for b in r.timeline) == 2
    alerts, before = live(events)
    assert sorted(alerts) == [
        ("informer-lag", "unregistered"),
        ("later", "dodged"),
        ("while-deleted", "unregistered"),
    ]
    assert before == 0


def test_a_failed_delete_opens_no_window() -> None:
    events = [
        vwc("create", T0),
        vwc("delete", T0 + 10, code=404),
        namespace_create("after", T0 + 12),
    ]
    assert bypassed(report(events)) == {"after": "dodged"}


def test_a_delete_first_means_registered_before_it() -> None:
    events = [namespace_create("before-delete", T0), vwc("delete", T0 + 5, code=200)]
    assert bypassed(report(events)) == {"before-delete": "dodged"}
    assert report(events).summary.before_registration == 0


# --- where the log cannot tell ----------------------------------------------------------------


def test_no_event_of_any_webhook_configuration_is_a_notice_and_assumes_nothing() -> None:
    events = [namespace_create("early", T0), decided(T0 + 10)]
    r = report(events)
    assert bypassed(r) == {"early": "dodged"}
    assert len(r.notices) == 1
    assert "no event of validatingwebhookconfigurations" in r.notices[0]


def test_an_audit_policy_that_does_not_record_the_writes_assumes_nothing() -> None:
    events = [namespace_create("early", T0), vwc("create", T0 + 10)]
    r = report(events, replace(REGISTERED, configuration_recorded=False))
    assert bypassed(r) == {"early": "dodged"}
    assert r.summary.before_registration == 0
    assert "does not record writes of validatingwebhookconfigurations" in r.notices[0]


def test_without_a_configuration_name_nothing_is_assumed() -> None:
    events = [namespace_create("early", T0), vwc("create", T0 + 10)]
    r = report(events, OPTIONS)
    assert bypassed(r) == {"early": "dodged"}
    assert "drift.webhookConfiguration" in r.notices[0]


def test_records_configuration_writes_reads_the_policy_as_the_api_server() -> None:
    minimal = load_policy(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n"
        "  - level: Metadata\n    resources: [{group: '', resources: [pods]}]\n",
        "minimal.yaml",
    )
    everything = load_policy(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n", "all.yaml"
    )
    no_final = load_policy(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [ResponseComplete]\n"
        "rules:\n  - level: Metadata\n",
        "nofinal.yaml",
    )
    assert not records_configuration_writes(minimal, CONFIGURATION)
    assert records_configuration_writes(everything, CONFIGURATION)
    assert not records_configuration_writes(no_final, CONFIGURATION)


def test_windows_standing_in_order() -> None:
    windows = RegistrationWindows(CONFIGURATION, grace=5.0)
    assert windows.standing(T0) is Standing.UNKNOWN
    records = list(
        AuditReader(REGISTERED).records(
            iter(
                [vwc("create", T0 + 10), vwc("delete", T0 + 20, code=200), vwc("create", T0 + 30)]
            ),
            SourceStats("audit"),
        )
    )
    for record in records:
        windows.observe(record)
    assert windows.standing(T0) is Standing.BEFORE
    assert windows.standing(T0 + 16) is Standing.REGISTERED
    assert windows.standing(T0 + 25) is Standing.UNREGISTERED
    assert windows.standing(T0 + 34) is Standing.UNREGISTERED  # re-create + grace
    assert windows.standing(T0 + 40) is Standing.REGISTERED


# --- the monitor's feed -----------------------------------------------------------------------


def items(events: list[bytes]) -> list[Any]:
    return [orjson.loads(e) for e in events]


def test_the_monitor_holds_a_bypass_until_the_feed_tells() -> None:
    feed = Feed(REGISTERED)
    first = feed.take(items([namespace_create("default", T0)]), T0)  # the API server's own
    assert first.alerts == []
    second = feed.take(items([vwc("create", T0 + 10)]), T0 + 10)
    assert second.alerts == []
    assert second.before_registration == 1


def test_the_monitor_alerts_a_held_bypass_when_its_hold_is_over() -> None:
    feed = Feed(REGISTERED)
    assert feed.take(items([namespace_create("quiet", T0)]), T0).alerts == []
    later = copy.deepcopy(orjson.loads(namespace_create("kube-system", T0 + 61)))
    later["objectRef"]["name"] = "kube-system"  # exempt: no finding, only the clock
    taken = feed.take([later], T0 + 61)
    assert [(a.event, a.name, a.cause) for a in taken.alerts] == [(BYPASS, "quiet", "dodged")]


def test_the_monitor_alerts_unregistered_at_once() -> None:
    feed = Feed(REGISTERED)
    feed.take(items([vwc("create", T0), decided(T0 + 1), vwc("delete", T0 + 10, code=200)]), T0)
    taken = feed.take(items([namespace_create("while-deleted", T0 + 12)]), T0 + 12)
    assert [(a.name, a.cause) for a in taken.alerts] == [("while-deleted", "unregistered")]


# --- the command ------------------------------------------------------------------------------


def correlate(tmp_path: Path, events: list[bytes], *args: str) -> subprocess.CompletedProcess[str]:
    audit = tmp_path / "audit.log"
    audit.write_bytes(b"".join(events))
    decisions = FIXTURES / "outage.decisions.log"
    return subprocess.run(
        [sys.executable, "-m", "webhook", "correlate", "--audit-log", str(audit),
         "--decision-log", str(decisions), "--format", "json", *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"drift:\n  webhookConfiguration: {CONFIGURATION}\n")
    return path


def test_the_command_counts_requests_before_registration(tmp_path: Path) -> None:
    events = [namespace_create("early", T0), vwc("create", T0 + 10)]
    result = correlate(tmp_path, events, "--config", str(config(tmp_path)))
    assert result.returncode == 0, result.stderr  # no bypass
    out = orjson.loads(result.stdout)
    assert out["summary"]["beforeRegistration"] == 1
    assert out["summary"]["bypasses"] == 0
    assert out["registration"]["webhookConfiguration"] == CONFIGURATION
    assert "notice" not in result.stderr


def test_the_command_without_config_says_so_once(tmp_path: Path) -> None:
    result = correlate(tmp_path, [namespace_create("early", T0), vwc("create", T0 + 10)])
    assert result.returncode == 1  # nothing assumed: a bypass
    assert result.stderr.count("notice: no --config") == 1
    assert len(orjson.loads(result.stdout)["notices"]) == 1


def test_the_command_with_a_policy_that_leaves_the_writes_out(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n"
        "  - level: None\n    resources: [{group: admissionregistration.k8s.io}]\n"
        "  - level: Metadata\n"
    )
    events = [namespace_create("early", T0), vwc("create", T0 + 10)]
    result = correlate(
        tmp_path, events, "--config", str(config(tmp_path)), "--audit-policy", str(policy)
    )
    assert result.returncode == 1
    assert result.stderr.count("does not record writes of validatingwebhookconfigurations") == 1


def test_follow_starts_at_the_end_unless_from_start(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(namespace_create("old", T0))

    def followed(*args: str) -> list[str]:
        """The names alerted until a line appended after start-up is: new lines are appended
        until one comes out (the follower's start is not observable otherwise)."""
        process = subprocess.Popen(
            [sys.executable, "-m", "webhook", "correlate", "--follow", str(log), *args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        names: list[str] = []
        reader = threading.Thread(
            target=lambda: names.extend(
                orjson.loads(line)["name"]
                for line in iter(process.stdout.readline, b"")  # type: ignore[union-attr]
            ),
            daemon=True,
        )
        reader.start()
        deadline = time.monotonic() + 60
        try:
            n = 0
            while not any(name.startswith("new") for name in names):
                assert time.monotonic() < deadline, "nothing appended was alerted"
                n += 1
                with log.open("ab") as out:
                    out.write(namespace_create(f"new{n}-{len(args)}", T0 + n))
                time.sleep(0.5)
        finally:
            process.terminate()
            process.wait(10)
            reader.join(10)
            assert process.stdout is not None
            process.stdout.close()
        return names

    assert "old" not in followed()
    assert followed("--from-start")[0] == "old"


def test_the_report_and_the_live_detector_agree_on_the_recorded_outage() -> None:
    """The real outage log (its configuration created after the first namespaces, deleted before
    the last Deployments): the same bypasses and causes, the same count before registration."""
    events = (FIXTURES / "outage.audit.log").read_bytes().splitlines(keepends=True)
    r = report(events)
    alerts, before = live(events)
    assert sorted((b.name, b.cause) for b in r.bypasses) == sorted(alerts)
    assert {cause for _, cause in alerts} == {"fail-open", "unregistered"}
    assert before == r.summary.before_registration == 4


def test_every_rendering_and_the_metrics_name_the_unregistered_cause() -> None:
    events = [
        vwc("create", T0),
        namespace_create("early", T0 - 5),
        decided(T0 + 1),
        vwc("delete", T0 + 10, code=200),
        namespace_create("while-deleted", T0 + 12),
        vwc("create", T0 + 14),
    ]
    r = report(sorted(events, key=lambda e: orjson.loads(e)["stageTimestamp"]))
    text = render_text(r)
    assert "BYPASSES: 1 (0 fail-open, 0 dodged, 1 unregistered)" in text
    assert "1 request before kubefence was registered (kubefence first created" in text
    data = orjson.loads(render_json(r))
    assert data["summary"]["unregisteredBypasses"] == 1
    assert data["summary"]["beforeRegistration"] == 1
    assert [b["cause"] for b in data["bypasses"]] == ["unregistered"]
    assert sum(b["unregistered"] for b in data["timeline"]) == 1
    page = render_html(r)
    assert '<span class="tag unregistered">unregistered</span>' in page
    assert "1 unregistered bypass at" in page  # the timeline's marker
    metrics = MonitorMetrics().render().decode()
    assert (
        'kubefence_monitor_alerts_total{cause="unregistered",kind="evasion.bypass"} 0.0' in metrics
    )
