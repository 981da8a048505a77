"""`kubefence detections --format sigma`: rules pySigma parses, every backend converts, and that
find in the real recorded audit logs exactly what `correlate` reports there, rule by rule."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
import yaml
from correlate_kit import FIXTURES, OPTIONS, lines, run
from sigma.backends.elasticsearch import ESQLBackend, LuceneBackend
from sigma.backends.loki import LogQLBackend
from sigma.backends.opensearch import OpensearchLuceneBackend
from sigma.backends.splunk import SplunkBackend
from sigma.collection import SigmaCollection
from sigma.conversion.base import TextQueryBackend
from sigma.correlations import SigmaCorrelationRule
from sigma.processing.pipeline import ProcessingPipeline
from sigma_backend_duckdb import DuckDBBackend
from sigma_kit import (
    before_registration,
    connect,
    found,
    queries,
    reported,
    rule_fields,
    rule_files,
)

from webhook.cli import main
from webhook.correlate.model import CorrelateOptions
from webhook.correlate.sigma import RULE_NAMESPACE, Guarded, rule_id, sigma_rules
from webhook.correlate.sigma_fields import WRITES, field_path

SINGLE_EVENT = (
    "kubefence-bypass-fail-open",
    "kubefence-bypass-dodged",
    "kubefence-sensitive-access",
    "kubefence-fence-removed",
    "kubefence-fence-removed-undecided",
    "kubefence-admission-change",
)
# The top-level keys of an audit.k8s.io/v1 Event that the rules read.
EVENT_KEYS = frozenset(
    {"auditID", "stage", "verb", "requestURI", "user", "objectRef", "responseStatus"}
    | {"annotations", "stageTimestamp"}
)


def generated(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["detections", *args]) == 0
    return capsys.readouterr().out


def test_every_rule_parses_and_names_what_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    text = generated(capsys)
    collection = SigmaCollection.from_yaml(text)
    assert collection.errors == []
    names = [str(r.name) for r in collection.rules]
    assert names == [*SINGLE_EVENT, "kubefence-denied", "kubefence-probing"]
    for rule in collection.rules:
        assert rule.id == uuid.uuid5(RULE_NAMESPACE, str(rule.name))
        assert rule.level is not None
        assert rule.references
        assert all(ref.startswith("README.md#") for ref in rule.references)
    probing = collection.rules[-1]
    assert isinstance(probing, SigmaCorrelationRule)
    assert list(probing.group_by) == ["user.username"]
    assert probing.timespan.seconds == 600
    assert probing.condition.count == 10


def test_rule_ids_are_stable_across_configurations(capsys: pytest.CaptureFixture[str]) -> None:
    default = [doc["id"] for doc in yaml.safe_load_all(generated(capsys))]
    other = [
        doc["id"]
        for doc in yaml.safe_load_all(
            generated(capsys, "--webhook-name", "other.example.com", "--probe-threshold", "3")
        )
    ]
    assert default == other
    assert len(set(default)) == len(default)
    assert default[0] == rule_id("kubefence-bypass-fail-open")


def test_each_rule_says_what_only_correlate_sees(capsys: pytest.CaptureFixture[str]) -> None:
    for doc in yaml.safe_load_all(generated(capsys)):
        notes = " ".join([doc["description"], *doc["falsepositives"]])
        assert "correlate" in notes, doc["name"]
        if doc["name"] in SINGLE_EVENT:
            assert "auditID" in notes, doc["name"]  # one alert per event, not per request


def test_fields_are_audit_event_paths(capsys: pytest.CaptureFixture[str]) -> None:
    docs = list(yaml.safe_load_all(generated(capsys)))
    fields = rule_fields(docs)
    assert {field_path(f)[0] for f in fields} <= EVENT_KEYS
    assert "annotations.validate.kubefence.io/decision-id" in fields
    assert field_path("annotations.validate.kubefence.io/decision-id") == (
        "annotations",
        "validate.kubefence.io/decision-id",
    )
    assert "objectRef.resource" in fields


def test_the_config_decides_names_exemptions_and_guarded_objects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "webhookNames: [new.example.com, old.example.com]\n"
        "exemptions: {namespaces: [infra]}\n"
        "drift: {webhookConfiguration: fence-hook, admissionPolicy: fence-guard,"
        " binding: fence-guard-binding, expected: []}\n"
    )
    docs = {d["name"]: d for d in yaml.safe_load_all(generated(capsys, "--config", str(config)))}
    dodged = docs["kubefence-bypass-dodged"]["detection"]
    assert dodged["decided"] == [
        {"annotations.new.example.com/decision-id|exists": True},
        {"annotations.old.example.com/decision-id|exists": True},
    ]
    assert dodged["exempt"][0]["objectRef.namespace"] == ["infra"]
    assert dodged["failed_open"][0][
        "annotations.failed-open.validating.webhook.admission.k8s.io/round_0_index_0"
    ] == ["new.example.com", "old.example.com"]
    ours = docs["kubefence-admission-change"]["detection"]["ours"]
    named = {(o["objectRef.resource"], str(o["objectRef.name"])) for o in ours}
    assert ("validatingwebhookconfigurations", "['fence-hook']") in named
    assert ("validatingadmissionpolicies", "['fence-guard']") in named
    assert ("validatingadmissionpolicybindings", "['fence-guard-binding']") in named
    denied = docs["kubefence-denied"]["detection"]["denied"]
    assert denied == [
        {"annotations.new.example.com/decision": "deny"},
        {"annotations.old.example.com/decision": "deny"},
    ]


def test_without_a_drift_section_every_webhook_configuration_is_watched() -> None:
    (rule,) = [r for r in sigma_rules(OPTIONS) if r.name == "kubefence-admission-change"]
    (ours,) = rule.documents[0]["detection"]["ours"]
    assert ours["objectRef.resource"] == "validatingwebhookconfigurations"
    assert "objectRef.name" not in ours


def test_out_writes_one_file_per_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rules"
    written = generated(capsys, "--out", str(out)).split()
    assert sorted(Path(p).name for p in written) == sorted(
        f"{n}.yml" for n in (*SINGLE_EVENT, "kubefence-probing")
    )
    probing = SigmaCollection.from_yaml((out / "kubefence-probing.yml").read_text())
    assert [str(r.name) for r in probing.rules] == ["kubefence-denied", "kubefence-probing"]
    assert generated(capsys, "--out", str(out)).split() == written  # rewritten in place


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "splunk"], "argument --format: invalid choice: 'splunk'"),
        (["--probe-window", "soon"], "'soon' is not a duration"),
        (["--webhook-slots", "0"], "'0' is not a positive number of webhooks"),
        (["--config", "/nonexistent/config.yaml"], "/nonexistent/config.yaml: cannot read"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["detections", *args])
    except SystemExit as exited:  # argparse's own errors exit from within
        code = int(str(exited.code))
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("kubefence detections: ")
    assert message in err


def test_a_bad_config_field_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("exemptions: {namespaces: 7}\n")
    assert main(["detections", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kubefence detections: {config}")
    assert "exemptions.namespaces" in err
    assert err.count("\n") == 1


def test_out_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    taken = tmp_path / "rules"
    taken.write_text("")
    assert main(["detections", "--out", str(taken)]) == 2
    assert capsys.readouterr().err == f"kubefence detections: {taken}: not a folder\n"


# --- every backend ---------------------------------------------------------------------------------


class SlashEscapingLucene(LuceneBackend):
    """Lucene reads `/` as the start of a regular expression; pySigma escapes only whitespace and
    `*` in field names, so a field with an annotation key needs `/` escaped too."""

    field_escape_pattern: ClassVar[re.Pattern[str]] = re.compile(r"[\s*/]")


# (backend, whether it converts correlation rules)
BACKENDS: list[tuple[str, type[TextQueryBackend], bool]] = [
    ("duckdb", DuckDBBackend, True),
    ("lucene", LuceneBackend, False),
    ("esql", ESQLBackend, True),
    ("opensearch", OpensearchLuceneBackend, False),
    ("loki", LogQLBackend, True),
    ("splunk", SplunkBackend, True),
]


def backend(cls: type[TextQueryBackend]) -> Any:
    # DuckDB's default pipeline maps Sysmon fields; the audit log's own names are wanted.
    return cls(ProcessingPipeline()) if cls is DuckDBBackend else cls()


@pytest.mark.parametrize(("name", "cls", "correlations"), BACKENDS, ids=[b[0] for b in BACKENDS])
def test_every_rule_converts_with_every_backend(
    name: str, cls: type[TextQueryBackend], correlations: bool
) -> None:
    rules = sigma_rules(OPTIONS, Guarded(("kubefence",)))
    converter = backend(cls)
    for rule in rules:
        collection = SigmaCollection.from_dicts(list(rule.documents))
        if rule.name == "kubefence-probing" and not correlations:
            # Lucene has no correlations: the backend says so rather than returning nothing.
            with pytest.raises(NotImplementedError, match="does not support correlation"):
                converter.convert(collection)
            continue
        queries = converter.convert(collection)
        assert queries, (name, rule.name)
        assert all(isinstance(q, str) and q for q in queries), (name, rule.name)


def test_loki_parses_the_lines_as_json_and_splunk_quotes_annotation_fields() -> None:
    (rule,) = [r for r in sigma_rules(OPTIONS) if r.name == "kubefence-fence-removed"]
    collection = SigmaCollection.from_dicts(list(rule.documents))
    (loki,) = LogQLBackend().convert(collection)
    assert " | json | " in loki
    assert "annotations_validate_kubefence_io_fence_lost" in loki  # Loki's json label names
    (splunk,) = SplunkBackend().convert(collection)
    assert '"annotations.validate.kubefence.io/fence-lost"' in splunk


def test_lucene_needs_the_slash_of_an_annotation_key_escaped() -> None:
    (rule,) = [r for r in sigma_rules(OPTIONS) if r.name == "kubefence-fence-removed"]
    collection = SigmaCollection.from_dicts(list(rule.documents))
    (plain,) = LuceneBackend().convert(collection)
    assert "_exists_:annotations.validate.kubefence.io/fence-lost" in plain  # as pySigma writes it
    (escaped,) = SlashEscapingLucene().convert(collection)
    assert r"_exists_:annotations.validate.kubefence.io\/fence-lost" in escaped
    assert re.search(r"[^\\]/", escaped) is None


# --- the proof on the recorded real logs -----------------------------------------------------------


@pytest.mark.parametrize("configuration", ["", "kubefence"], ids=["unnamed", "registration"])
@pytest.mark.parametrize("log", ["outage", "edge"])
def test_duckdb_finds_what_correlate_reports_in_a_real_log(log: str, configuration: str) -> None:
    """The recorded logs of the real API server: bypasses failed open and dodged, a
    deletecollection with no decision (an undecided fence removal), impersonated denials. A
    threshold of 2 makes probers of their few denials. With the webhook configuration's name
    (the fixtures' config.yaml) correlate counts the requests made before kubefence was first
    registered and lists them as no bypass: the dodged rule, one event at a time, finds those too,
    and exactly as many."""
    options: CorrelateOptions = replace(
        OPTIONS, probe_threshold=2, webhook_configuration=configuration
    )
    report = run(lines(f"{log}.audit.log"), lines(f"{log}.decisions.log"), options)
    files = rule_files(options)
    db = connect([FIXTURES / f"{log}.audit.log"], files)
    want, got = reported(report), found(db, files)
    dodged = "kubefence-bypass-dodged"
    for rule, events in want.items():
        if rule != dodged:
            assert got[rule] == events, rule
    assert got[dodged] >= want[dodged]
    assert len(got[dodged] - want[dodged]) == before_registration(report)
    if configuration and log == "outage":
        assert before_registration(report)  # the namespaces made before registering it
    # No correlate finding for it: the writes to webhook configurations, read plainly.
    writes = {
        e["auditID"]
        for e in map(orjson.loads, lines(f"{log}.audit.log"))
        if (e.get("objectRef") or {}).get("resource") == "validatingwebhookconfigurations"
        and e["verb"] in WRITES
        and e["stage"] != "RequestReceived"
        and e.get("responseStatus", {}).get("code", 0) < 400
    }
    assert writes
    assert got["kubefence-admission-change"] == writes
    assert want["kubefence-bypass-fail-open"]
    assert want["kubefence-bypass-dodged"]
    assert want["kubefence-probing"]
    if log == "edge":
        assert want["kubefence-fence-removed-undecided"]


def test_the_probing_window_is_applied_where_duckdb_groups_the_whole_log() -> None:
    """The two recorded logs deny the same user twice, then four times about 5 minutes later:
    probing at 5 denials within 10 minutes, none within one, though the correlation's SQL (GROUP
    BY ... HAVING over the whole log) keeps the user either way."""
    audit = [FIXTURES / "outage.audit.log", FIXTURES / "edge.audit.log"]
    decisions = lines("outage.decisions.log") + lines("edge.decisions.log")
    for window, probing in ((600.0, True), (60.0, False)):
        options = replace(OPTIONS, probe_threshold=5, probe_window=window)
        report = run([p.read_bytes().splitlines(keepends=True) for p in audit], decisions, options)
        files = rule_files(options)
        db = connect(audit, files)
        sql = queries(files)
        assert {row[0] for row in db.execute(sql["kubefence-probing"]).fetchall()}
        assert found(db, files)["kubefence-probing"] == reported(report)["kubefence-probing"]
        assert bool(reported(report)["kubefence-probing"]) is probing


# --- the README shows what the converters write ----------------------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"


def at_scale() -> str:
    section = README.read_text(encoding="utf-8").split("\n## At scale\n", 1)[1]
    return " ".join(section.split("\n## ", 1)[0].split())


@pytest.mark.parametrize(
    ("rule", "cls"),
    [
        *(("kubefence-fence-removed", cls) for cls in (DuckDBBackend, ESQLBackend)),
        *(("kubefence-fence-removed", cls) for cls in (OpensearchLuceneBackend, LogQLBackend)),
        ("kubefence-fence-removed", SplunkBackend),
        ("kubefence-fence-removed", SlashEscapingLucene),
        *(("kubefence-probing", cls) for cls in (ESQLBackend, LogQLBackend, SplunkBackend)),
    ],
)
def test_the_readme_shows_each_backends_real_output(rule: str, cls: type[TextQueryBackend]) -> None:
    (found_rule,) = [r for r in sigma_rules(OPTIONS) if r.name == rule]
    query = backend(cls).convert(SigmaCollection.from_dicts(list(found_rule.documents)))[-1]
    assert " ".join(str(query).split()) in at_scale()
