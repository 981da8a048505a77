"""`kubefence detections`' Sigma rules: how many each backend converts, and how fast DuckDB runs
them over real audit logs.

Run as `python tests/bench/bench_sigma.py [--audit-log FILE]... [--events N] [--threads 1]`;
prints numbers, asserts nothing about time. The input is real API-server audit logs (default:
the recorded ones of `tests/unit/fixtures/correlate/`; a kept e2e log with
`KUBEFENCE_E2E_KEEP=1` works as well), repeated into one JSON-lines file of at least N events.
Each rule's SQL is run over the `logs` view of `tests/sigma_kit.py` (the JSON parsed by DuckDB
in every query, as a view over the file does); the rate is events scanned per second of wall
time, rule by rule and for the whole set.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sigma.backends.elasticsearch import ESQLBackend, LuceneBackend
from sigma.backends.loki import LogQLBackend
from sigma.backends.opensearch import OpensearchLuceneBackend
from sigma.backends.splunk import SplunkBackend
from sigma.collection import SigmaCollection
from sigma.processing.pipeline import ProcessingPipeline
from sigma_backend_duckdb import DuckDBBackend
from sigma_kit import connect, queries, rule_files

from webhook.correlate.model import CorrelateOptions

FIXTURES = Path(__file__).resolve().parents[1] / "unit" / "fixtures" / "correlate"
EXEMPT = frozenset({"kube-system", "kube-public", "kube-node-lease"})


def conversions(options: CorrelateOptions) -> None:
    backends = {
        "duckdb": DuckDBBackend(ProcessingPipeline()),
        "lucene (elasticsearch)": LuceneBackend(),
        "esql (elasticsearch)": ESQLBackend(),
        "lucene (opensearch)": OpensearchLuceneBackend(),
        "loki": LogQLBackend(),
        "splunk": SplunkBackend(),
    }
    files = rule_files(options)
    for name, backend in backends.items():
        converted = refused = produced = 0
        for docs in files:
            try:
                produced += len(backend.convert(SigmaCollection.from_dicts(docs)))
                converted += 1
            except NotImplementedError:
                refused += 1
        print(
            f"{name:24} {converted} of {len(files)} rule files converted, {produced} queries"
            + (f"; {refused} refused (no correlation rules)" if refused else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--audit-log", action="append", type=Path)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    sources = args.audit_log or [FIXTURES / "outage.audit.log", FIXTURES / "edge.audit.log"]
    lines = [line for p in sources for line in p.read_bytes().splitlines(keepends=True) if line]
    repeat = max(1, -(-args.events // len(lines)))
    options = CorrelateOptions(webhook_names=("validate.kubefence.io",), exempt_namespaces=EXEMPT)
    conversions(options)
    files = rule_files(options)
    sql = queries(files)
    with tempfile.TemporaryDirectory() as work:
        log = Path(work) / "audit.log"
        with log.open("wb") as out:
            for _ in range(repeat):
                out.writelines(lines)
        events = len(lines) * repeat
        size = log.stat().st_size
        print(f"input: {events:,} events ({size / 2**20:.0f} MiB), {args.threads} DuckDB thread(s)")
        db = connect([log], files)
        db.execute(f"SET threads = {args.threads}")
        print("each query over the view (every query parses the JSON lines):")
        run(db, sql, events)
        started = time.perf_counter()
        db.execute("CREATE TABLE loaded AS SELECT * FROM logs")
        seconds = time.perf_counter() - started
        print(f"loaded once into a table of the rule fields: {events / seconds:,.0f} events/s")
        db.execute("CREATE OR REPLACE VIEW logs AS SELECT * FROM loaded")
        print("each query over the loaded table:")
        run(db, sql, events)


def run(db: Any, sql: dict[str, str], events: int) -> None:
    total = 0.0
    for name, query in sql.items():
        started = time.perf_counter()
        rows = len(db.execute(query).fetchall())
        seconds = time.perf_counter() - started
        total += seconds
        print(f"  {name:36} {events / seconds:>14,.0f} events/s  ({rows} rows)")
    print(f"  all {len(sql)} queries: {events * len(sql) / total:,.0f} events/s on average")


if __name__ == "__main__":
    main()
