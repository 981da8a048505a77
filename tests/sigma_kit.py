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

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import duckdb
import yaml
from sigma.collection import SigmaCollection
from sigma.processing.pipeline import ProcessingPipeline
from sigma_backend_duckdb import DuckDBBackend

from webhook.correlate.model import CorrelateOptions, Report
from webhook.correlate.sigma import UNNAMED, Guarded, field_path, sigma_rules
from webhook.correlate.timestamps import parse_time

# Columns every proof reads besides the rules' fields.
ALWAYS = ("auditID", "stage", "stageTimestamp", "user.username")
INTEGER_FIELDS = frozenset({"responseStatus.code"})


def rules_text(options: CorrelateOptions, guarded: Guarded = UNNAMED) -> str:
    docs = [doc for rule in sigma_rules(options, guarded) for doc in rule.documents]
    return yaml.safe_dump_all(docs, sort_keys=False)


def collection(options: CorrelateOptions, guarded: Guarded = UNNAMED) -> SigmaCollection:
    return SigmaCollection.from_yaml(rules_text(options, guarded))


def rule_fields(docs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every field a rule document names (detection keys without modifiers, group-by fields)."""
    found: dict[str, None] = dict.fromkeys(ALWAYS)

    def walk(value: object) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                if key != "condition":
                    found.setdefault(str(key).split("|")[0])
                walk(inner)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for doc in docs:
        for selection in (doc.get("detection") or {}).values():
            walk(selection)
        for field in (doc.get("correlation") or {}).get("group-by", []):
            found.setdefault(field)
    return list(found)


def json_path(field: str) -> str:
    steps = "".join(f'."{step}"' for step in field_path(field))
    return "$" + steps


def audit_view(db: duckdb.DuckDBPyConnection, logs: Iterable[Path], fields: Iterable[str]) -> None:
    """`logs`: a view over the JSON lines, one column per field named by its path."""
    columns = []
    for field in fields:
        path = json_path(field).replace("'", "''")
        if field in INTEGER_FIELDS:
            value = f"TRY_CAST(json_extract(json, '{path}') AS INTEGER)"
        else:
            value = f"json_extract_string(json, '{path}')"
        columns.append(f'{value} AS "{field}"')
    files = ", ".join("'" + str(p).replace("'", "''") + "'" for p in logs)
    db.execute(
        f"CREATE OR REPLACE VIEW logs AS SELECT {', '.join(columns)} "
        f"FROM read_json_objects([{files}], format = 'newline_delimited')"
    )


def connect(logs: Iterable[Path], options: CorrelateOptions, guarded: Guarded = UNNAMED) -> Any:
    """An in-memory DuckDB with the `logs` view over `logs` for every field of the rules."""
    docs = [doc for rule in sigma_rules(options, guarded) for doc in rule.documents]
    db = duckdb.connect()
    audit_view(db, logs, rule_fields(docs))
    return db


def queries(options: CorrelateOptions, guarded: Guarded = UNNAMED) -> dict[str, str]:
    """Each rule document's DuckDB SQL by name; a rule a correlation counts converts to nothing
    beside it, so each document is converted in a collection of its own file's documents up to
    it (the counted rule alone, then the correlation with it)."""
    backend = DuckDBBackend(ProcessingPipeline())
    out: dict[str, str] = {}
    for rule in sigma_rules(options, guarded):
        for i, doc in enumerate(rule.documents):
            converted = SigmaCollection.from_dicts(list(rule.documents[: i + 1]))
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


def reported(report: Report) -> dict[str, set[str]]:
    """What correlate found, keyed by the rule that should find the same events."""
    causes: dict[str, set[str]] = {"fail-open": set(), "dodged": set()}
    for b in report.bypasses:
        causes[b.cause].add(b.audit_id)
    removed: dict[str, set[str]] = {"decided": set(), "undecided": set()}
    for r in report.fence_removals:
        removed[r.cause].add(r.audit_id)
    return {
        "kubefence-bypass-fail-open": causes["fail-open"],
        "kubefence-bypass-dodged": causes["dodged"],
        "kubefence-sensitive-access": {a.audit_id for a in report.sensitive_access},
        "kubefence-fence-removed": removed["decided"],
        "kubefence-fence-removed-undecided": removed["undecided"],
        "kubefence-probing": {p.user for p in report.probers},
    }


def found(db: Any, options: CorrelateOptions, guarded: Guarded = UNNAMED) -> dict[str, set[str]]:
    """What each rule finds in the view: auditIDs, or the probers' users."""
    sql = queries(options, guarded)
    out = {
        name: matched(db, query)
        for name, query in sql.items()
        if name not in ("kubefence-probing", "kubefence-denied")
    }
    out["kubefence-probing"] = probers(
        db,
        sql["kubefence-probing"],
        sql["kubefence-denied"],
        options.probe_threshold,
        options.probe_window,
    )
    return out


def audit_events(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    import orjson

    for line in lines:
        if line.strip():
            yield orjson.loads(line)
