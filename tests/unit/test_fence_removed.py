"""`evasion.fence_removed`: a NetworkPolicy removal that left a namespace unfenced, from the audit log.

The webhook's `<name>/fence-lost` annotation says so; a removal no kubefence webhook decided may
have taken any fence away. Synthetic events are copies of a real decided delete in
fixtures/correlate (outage.audit.log) with a few fields changed. `correlate --follow` (lines) and
`monitor` (parsed EventList items) must classify them alike.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from correlate_kit import OPTIONS, WEBHOOK, detector_alerts, dump, parsed_alerts, real_event, run

from webhook.correlate.audit_reader import AuditReader
from webhook.correlate.detect import BYPASS, FENCE_REMOVED, Detector, findings
from webhook.correlate.model import CorrelateOptions
from webhook.registration import DEFAULT_RULES

DELETE = real_event(b'"auditID":"8b514446-311e-4904-92f9-d6b8630c20c6","stage":"ResponseComplete"')


def event(
    audit_id: str,
    *,
    verb: str = "delete",
    lost: str = "",
    decided: bool = True,
    code: int = 200,
    dry_run: bool = False,
    namespace: str = "fenced",
    query: str = "",
) -> dict[str, Any]:
    doc = copy.deepcopy(DELETE)
    doc["auditID"], doc["verb"] = audit_id, verb
    doc["responseStatus"]["code"] = code
    doc["objectRef"]["namespace"] = namespace
    doc["requestURI"] = doc["requestURI"].replace("/fenced/", f"/{namespace}/")
    if dry_run:
        doc["requestURI"] += "?dryRun=All"
    doc["requestURI"] += query
    notes = doc["annotations"]
    if lost:
        notes[f"{WEBHOOK}/fence-lost"] = lost
    if not decided:
        for key in [k for k in notes if k.startswith(f"{WEBHOOK}/")]:
            del notes[key]
    return doc


def kinds(doc: dict[str, Any], options: CorrelateOptions = OPTIONS) -> list[tuple[str, str]]:
    record = AuditReader(options).relevant(doc)
    assert record is not None
    return list(findings(record, options.exempt_namespaces))


@pytest.mark.parametrize("verb", ["delete", "deletecollection", "update", "patch"])
def test_a_removal_kubefence_let_through_unfenced_is_alerted_decided(verb: str) -> None:
    assert kinds(event("a", verb=verb, lost="Ingress,Egress")) == [(FENCE_REMOVED, "decided")]


def test_the_alert_names_who_removed_the_fence_and_where() -> None:
    record = AuditReader(OPTIONS).relevant(event("a", lost="Egress"))
    assert record is not None
    assert record.fence_lost == ("Egress",)
    (alert,) = Detector(OPTIONS).feed(record)
    fields = alert.fields()
    assert (alert.event, fields["cause"], fields["user"]) == (
        FENCE_REMOVED,
        "decided",
        "kubefence-admin",
    )
    assert (fields["namespace"], fields["name"], fields["verb"]) == (
        "fenced",
        "default-deny-2",
        "delete",
    )


def test_a_decided_removal_that_left_the_namespace_fenced_is_no_alert() -> None:
    assert kinds(event("a")) == []  # the real event: an older fence stayed


def test_a_removal_no_kubefence_webhook_decided_is_undecided_and_a_bypass() -> None:
    for verb in ("delete", "deletecollection", "update", "patch"):
        assert kinds(event("a", verb=verb, decided=False)) == [
            (BYPASS, "dodged"),
            (FENCE_REMOVED, "undecided"),
        ]


def test_the_namespace_controller_emptying_a_namespace_is_no_alert() -> None:
    doc = event("a", verb="deletecollection", decided=False)
    doc["user"]["username"] = "system:serviceaccount:kube-system:namespace-controller"
    assert kinds(doc) == []


@pytest.mark.parametrize(
    "doc",
    [
        event("a", dry_run=True),
        event("a", lost="Egress", code=409),
        event("a", lost="Egress", namespace="kube-system"),
    ],
    ids=["dry-run", "failed", "exempt-namespace"],
)
def test_no_fence_was_removed(doc: dict[str, Any]) -> None:
    assert (FENCE_REMOVED, "decided") not in kinds(doc)


def test_another_webhooks_fence_lost_annotation_is_not_ours() -> None:
    doc = event("a")
    doc["annotations"]["other.example.com/fence-lost"] = "Ingress"
    assert kinds(doc) == []


def test_the_prescreen_keeps_the_annotated_line_even_where_no_rule_registers_it() -> None:
    # With rules that do not register NetworkPolicies, the line is kept for its decision-id,
    # which comes in the same response as `fence-lost`.
    unregistered = CorrelateOptions(
        webhook_names=(WEBHOOK,), rules=tuple(r for r in DEFAULT_RULES if "pods" in r.resources)
    )
    lines = [dump(event("a", lost="Ingress")), dump(event("b", decided=False))]
    assert detector_alerts(lines, unregistered) == [(FENCE_REMOVED, "a")]
    assert parsed_alerts(lines, unregistered) == [(FENCE_REMOVED, "a")]


def test_correlate_follow_and_monitor_alert_fence_removals_alike() -> None:
    docs = [
        event("teardown", lost="Ingress,Egress"),
        event("covered"),
        event("warn-update", verb="update", lost="Egress"),
        event("outage", verb="patch", decided=False),
        event("dry", dry_run=True),  # the webhook saw a dry run: no `fence-lost`
        event("hidden", lost="Egress", dry_run=True),  # `?dryRun=All` with a body `{}`
        event("conflict", verb="update", lost="Egress", code=409),
    ]
    # The canonical encoding of the file backend: the keys in the API server's order.
    lines = [orjson.dumps(d) + b"\n" for d in docs]
    lines.append(lines[0])  # a line seen twice is judged once
    expected = sorted(
        [
            (FENCE_REMOVED, "teardown"),
            (FENCE_REMOVED, "warn-update"),
            (FENCE_REMOVED, "outage"),
            (FENCE_REMOVED, "hidden"),
            (BYPASS, "outage"),
        ]
    )
    assert sorted(detector_alerts(lines, OPTIONS)) == expected
    assert sorted(parsed_alerts(lines, OPTIONS)) == expected
    # ... and the batch report lists the same removals, with who and what was left unfenced.
    report = run(lines, [])
    assert report.summary.fence_removals == 4
    assert sorted((f.audit_id, f.cause, f.unfenced) for f in report.fence_removals) == [
        ("hidden", "decided", ("Egress",)),
        ("outage", "undecided", ()),
        ("teardown", "decided", ("Ingress", "Egress")),
        ("warn-update", "decided", ("Egress",)),
    ]
    assert {f.user for f in report.fence_removals} == {DELETE["user"]["username"]}


# The API server ignores parameters it does not know and accepts only `dryRun=All` (any other
# value of `dryRun` is a 400): only the exact parameter, every repetition `All`, is a dry run.
NOT_DRY_RUNS = [
    "?x=dryRun=",
    "?x=dryRun%3DAll",
    "?propagationPolicy=Background&note=dryRun=All",
    "?dryrun=All",
    "?DryRun=All",
    "?dryRun=all",
    "?dryRun=",
    "?dryRun",
    "?dryRun=All&dryRun=Yes",
    "#dryRun=All",
]
DRY_RUNS = [
    "?dryRun=All",
    "?dryRun=All&dryRun=All",
    "?gracePeriodSeconds=0&dryRun=All",
    "?dry%52un=%41ll",
]


@pytest.mark.parametrize("query", NOT_DRY_RUNS)
def test_a_uri_that_only_mentions_dry_run_is_a_real_removal_live_and_in_the_report(
    query: str,
) -> None:
    decided = event("decided", lost="Ingress", query=query)
    bypass = event("bypass", decided=False, query=query)
    assert kinds(decided) == [(FENCE_REMOVED, "decided")]
    assert kinds(bypass) == [(BYPASS, "dodged"), (FENCE_REMOVED, "undecided")]
    lines = [dump(decided), dump(bypass)]
    expected = [(BYPASS, "bypass"), (FENCE_REMOVED, "bypass"), (FENCE_REMOVED, "decided")]
    assert sorted(detector_alerts(lines, OPTIONS)) == expected
    report = run(lines, [])
    assert sorted((f.audit_id, f.cause) for f in report.fence_removals) == [
        ("bypass", "undecided"),
        ("decided", "decided"),
    ]
    assert [(b.audit_id, b.dry_run) for b in report.bypasses] == [("bypass", False)]


@pytest.mark.parametrize("query", DRY_RUNS)
def test_a_dry_run_uri_hides_no_removal_the_webhook_saw_go(query: str) -> None:
    # A DELETE's body overrides its URI's `dryRun` (apiserver handlers/delete.go): `curl -X
    # DELETE '...?dryRun=All' -d '{}'` really deletes. The webhook sees the truth and writes
    # `fence-lost` only for a real removal, so the annotation is believed over the URI.
    decided = event("decided", lost="Ingress", query=query)
    assert kinds(decided) == [(FENCE_REMOVED, "decided")]
    # The webhook's own dry run carries no annotation and is no alert.
    assert kinds(event("dry", query=query)) == []
    lines = [dump(decided)]
    assert detector_alerts(lines, OPTIONS) == [(FENCE_REMOVED, "decided")]
    assert parsed_alerts(lines, OPTIONS) == [(FENCE_REMOVED, "decided")]
    report = run(lines, [])
    assert [(f.audit_id, f.cause, f.unfenced) for f in report.fence_removals] == [
        ("decided", "decided", ("Ingress",))
    ]


@pytest.mark.parametrize("query", DRY_RUNS)
@pytest.mark.parametrize("verb", ["delete", "deletecollection"])
def test_an_undecided_delete_is_a_removal_whatever_its_uri_says(verb: str, query: str) -> None:
    # Its body may override the URI's `dryRun`: a false alarm is the safe way to be wrong, and
    # the bypass is not called a dry run.
    bypass = event("bypass", verb=verb, decided=False, query=query)
    assert kinds(bypass) == [(BYPASS, "dodged"), (FENCE_REMOVED, "undecided")]
    lines = [dump(bypass)]
    assert sorted(detector_alerts(lines, OPTIONS)) == [
        (BYPASS, "bypass"),
        (FENCE_REMOVED, "bypass"),
    ]
    report = run(lines, [])
    assert [(f.audit_id, f.cause) for f in report.fence_removals] == [("bypass", "undecided")]
    assert [(b.audit_id, b.dry_run) for b in report.bypasses] == [("bypass", False)]


@pytest.mark.parametrize("query", DRY_RUNS)
@pytest.mark.parametrize("verb", ["update", "patch"])
def test_an_undecided_dry_run_update_removes_no_fence_and_its_bypass_says_dry_run(
    verb: str, query: str
) -> None:
    # An update or patch takes `dryRun` from its query alone: the URI is the truth.
    bypass = event("bypass", verb=verb, decided=False, query=query)
    assert kinds(bypass) == [(BYPASS, "dodged")]
    report = run([dump(bypass)], [])
    assert report.fence_removals == ()
    assert [(b.audit_id, b.dry_run) for b in report.bypasses] == [("bypass", True)]


def test_a_create_that_neutralised_the_fence_is_alerted_live_and_in_the_report() -> None:
    # An allow-all created in warn or audit mode, or by an exempt user: `fence-lost` says so.
    created = event("allow-all", verb="create", lost="Ingress")
    assert kinds(created) == [(FENCE_REMOVED, "decided")]
    # A create our webhook let through without the annotation opened nothing that was fenced;
    # one it never decided is a bypass, not a removal it could know of.
    assert kinds(event("plain", verb="create")) == []
    assert kinds(event("dodged", verb="create", decided=False)) == [(BYPASS, "dodged")]
    lines = [dump(created)]
    assert detector_alerts(lines, OPTIONS) == [(FENCE_REMOVED, "allow-all")]
    assert parsed_alerts(lines, OPTIONS) == [(FENCE_REMOVED, "allow-all")]
    report = run(lines, [])
    assert [(f.audit_id, f.verb, f.cause, f.unfenced) for f in report.fence_removals] == [
        ("allow-all", "create", "decided", ("Ingress",))
    ]
