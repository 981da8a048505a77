"""The generated Sigma rules run by DuckDB over an audit log, beside what `correlate` reports.

Shared by the unit proof (the recorded real logs of `tests/unit/fixtures/correlate/`), the e2e
proof (a fresh log of the suite's API server) and `tests/bench/bench_sigma.py`.

The DuckDB backend names a column by the whole field (`"objectRef.resource"`), so the log is
given as a view with one column per rule field, named by its path and extracted from each JSON
line by that path (an annotation key, with its dots and slash, is one step of it). Its
correlation SQL groups over the whole log (the timespan is not in it), so `probers` applies the
window to the rows the counted rule matches, as correlate's sliding window does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import duckdb
import orjson
import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationTimespan as SigmaTimespan
from sigma.processing.pipeline import ProcessingPipeline
from sigma_backend_duckdb import DuckDBBackend

from webhook.correlate.model import CorrelateOptions, Report
from webhook.correlate.render_json import render_json
from webhook.correlate.sigma import UNNAMED, Guarded, sigma_rules
from webhook.correlate.sigma_fields import field_path
from webhook.correlate.timestamps import parse_time

# Columns every proof reads besides the rules' fields.
ALWAYS = ("auditID", "stage", "stageTimestamp", "user.username")
INTEGER_FIELDS = frozenset({"responseStatus.code"})
PROBING, DENIED = "kubefence-probing", "kubefence-denied"


Files = list[list[dict[str, Any]]]  # rule files, each its documents


def rule_files(options: CorrelateOptions, guarded: Guarded = UNNAMED) -> Files:
    return [list(rule.documents) for rule in sigma_rules(options, guarded)]


def read_rule_files(folder: Path) -> Files:
    """The files `kubefence detections --out DIR` wrote, in name order."""
    return [
        list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        for path in sorted(folder.glob("*.yml"))
    ]


def rule_fields(docs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every field a rule document names (detection keys without modifiers, group-by fields)."""
    found: dict[str, None] = dict.fromkeys(ALWAYS)

    def walk(value: object) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                found.setdefault(str(key).split("|")[0])
                walk(inner)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for doc in docs:
        for name, selection in (doc.get("detection") or {}).items():
            if name != "condition":
                walk(selection)
        for field in (doc.get("correlation") or {}).get("group-by", []):
            found.setdefault(field)
    return list(found)


def json_path(field: str) -> str:
    steps = "".join(f'."{step}"' for step in field_path(field))
    return "$" + steps


def audit_view(
    db: Any, logs: Iterable[Path], fields: Iterable[str], since: str = "", until: str = ""
) -> None:
    """`logs`: a view over the JSON lines, one column per field named by its path; `since` and
    `until` (the audit log's own timestamps) keep the requests received between them, as
    correlate's --since and --until do."""
    # One parse of each line for every path (a list of paths), then a column per field.
    fields = list(dict.fromkeys([*fields, "requestReceivedTimestamp"]))
    paths = ", ".join("'" + json_path(f).replace("'", "''") + "'" for f in fields)
    columns = []
    for i, field in enumerate(fields, start=1):
        value = f"v[{i}]"
        if field in INTEGER_FIELDS:
            value = f"TRY_CAST({value} AS INTEGER)"
        columns.append(f'{value} AS "{field}"')
    files = ", ".join("'" + str(p).replace("'", "''") + "'" for p in logs)
    inner = (
        f"SELECT {', '.join(columns)} FROM (SELECT json_extract_string(json, [{paths}]) AS v "
        f"FROM read_json_objects([{files}], format = 'newline_delimited'))"
    )
    where = []
    if since:
        where.append(f"\"requestReceivedTimestamp\" >= '{since}'")
    if until:
        where.append(f"\"requestReceivedTimestamp\" <= '{until}'")
    if where:
        inner = f"SELECT * FROM ({inner}) WHERE {' AND '.join(where)}"
    db.execute(f"CREATE OR REPLACE VIEW logs AS {inner}")


def connect(logs: Iterable[Path], files: Files, since: str = "", until: str = "") -> Any:
    """An in-memory DuckDB with the `logs` view over `logs` for every field of the rules."""
    db = duckdb.connect()
    audit_view(db, logs, rule_fields(doc for docs in files for doc in docs), since, until)
    return db


def queries(files: Files) -> dict[str, str]:
    """Each rule document's DuckDB SQL by name. A rule a correlation counts converts to nothing
    beside it, so each document is converted with its file's documents up to it (the counted
    rule alone, then the correlation with it)."""
    backend = DuckDBBackend(ProcessingPipeline())
    out: dict[str, str] = {}
    for docs in files:
        for i, doc in enumerate(docs):
            converted = SigmaCollection.from_dicts(docs[: i + 1])
            out[doc["name"]] = str(backend.convert(converted)[-1])
    return out


def matched(db: Any, sql: str) -> set[str]:
    """The auditIDs of the events a single-event rule's SQL selects."""
    return {row[0] for row in db.execute(f'SELECT DISTINCT "auditID" FROM ({sql})').fetchall()}


def probers(db: Any, sql: str, counted_sql: str, threshold: int, window: float) -> set[str]:
    """Users the correlation's SQL keeps whose counted events also fit `window` (sliding)."""
    users = {row[0] for row in db.execute(sql).fetchall()}
    rows = db.execute(f'SELECT "user.username", "stageTimestamp" FROM ({counted_sql})').fetchall()
    times: dict[str, list[float]] = {}
    for user, stamp in rows:
        times.setdefault(user, []).append(parse_time(stamp))
    return {u for u in users if _densest(sorted(times.get(u, [])), window) >= threshold}


def _densest(times: list[float], window: float) -> int:
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] > window:
            start += 1
        best = max(best, end - start + 1)
    return best


def found(db: Any, files: Files) -> dict[str, set[str]]:
    """What each rule finds in the view: auditIDs, or the probers' users (the threshold and
    window read from the correlation rule itself)."""
    sql = queries(files)
    correlation = next(d for docs in files for d in docs if "correlation" in d)["correlation"]
    out = {name: matched(db, q) for name, q in sql.items() if name not in (PROBING, DENIED)}
    out[PROBING] = probers(
        db,
        sql[PROBING],
        sql[DENIED],
        int(correlation["condition"]["gte"]),
        SigmaTimespan(correlation["timespan"]).seconds,
    )
    return out


def before_registration(report: Report) -> int:
    return int(report.summary.before_registration)


def reported(report: Report) -> dict[str, set[str]]:
    """What correlate found, keyed by the rule that should find the same events."""
    return reported_json(orjson.loads(render_json(report)))


def reported_json(report: Mapping[str, Any]) -> dict[str, set[str]]:
    """The same from `correlate --format json`. The dodged rule stands for correlate's `dodged`
    and `unregistered` bypasses, and for the requests made before kubefence was registered,
    which correlate counts (`before_registration`) and does not list."""

    def ids(items: str, cause: str | None = None) -> set[str]:
        return {i["auditID"] for i in report[items] if cause is None or i["cause"] == cause}

    return {
        "kubefence-bypass-fail-open": ids("bypasses", "fail-open"),
        # A single event cannot tell whether the configuration was deleted at the time.
        "kubefence-bypass-dodged": ids("bypasses", "dodged") | ids("bypasses", "unregistered"),
        "kubefence-sensitive-access": ids("sensitiveAccess"),
        "kubefence-fence-removed": ids("fenceRemovals", "decided"),
        "kubefence-fence-removed-undecided": ids("fenceRemovals", "undecided"),
        PROBING: {p["user"] for p in report["probers"]},
    }
