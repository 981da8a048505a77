"""Benchmark: where the CPU of one admission request goes, stage by stage, through the real handler.

Run: `python tests/bench/bench_stages.py [--number 5000] [--repeat 5]`. For four reviews of the
common path (a Pod CREATE and a Deployment CREATE in the demo's fenced namespace `shop`, a
Deployment UPDATE that changes the image, a NetworkPolicy CREATE there), with the e2e suite's audit
Policy in force (tests/e2e/audit-policy.yaml, so `audit-scope` evaluates it), it prints the best
of `--repeat` runs in microseconds per request for:

  body read     `_read_body` of a whole body that arrived with the headers (a stand-in request)
  JSON decode   `orjson.loads` of the body (the whole document, what the old parser did)
  parse         `parse_review`: decode and the typed request
  subject       `subject_of`: pod template and UPDATE ratchet, or the policy analysed
  rule <id>     each rule that concerns the resource, on a fresh subject's memo
  audit Policy  `out_of_scope_verbs`: the audit Policy's evaluation for the request's verbs
                (the rule remembers its answer per request key; this is the evaluation itself)
  decide        `decide` as a whole (subject, rules, verdict, annotations)
  response      `render_response(decision.response())`
  metrics       the histogram observation and the decision counters
  record        `_record`: metrics and the decision log line (to /dev/null)
  log line      record minus metrics
  handler       `validate` end to end on a stand-in request (NetworkPolicy: its worker thread)

The TLS and HTTP cost of aiohttp itself is not here: `bench_server.py` measures it with wrk.
Numbers vary with the machine's load; compare runs of the same sitting.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import streams
from bench_server import sample_review, workload_update

from webhook import decisionlog
from webhook.admission import parse_review, render_response
from webhook.config import load_settings
from webhook.decide import _RULES_BY_RESOURCE, decide
from webhook.rules.audit_scope import out_of_scope_verbs
from webhook.server import RUNTIME, Runtime, _read_body, _record, build_app, validate
from webhook.subject import subject_of

ROOT = Path(__file__).resolve().parents[2]


def pod_create(uid: str) -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
    }
    review = sample_review(uid, "shop", "web-1")
    request = review["request"]
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    request.update(kind=gvk, requestKind=gvk, resource=gvr, requestResource=gvr, object=pod)
    return review


def policy_create(uid: str) -> dict[str, Any]:
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-web", "namespace": "shop"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"app": "shop"}}}],
                    "ports": [{"protocol": "TCP", "port": 8080}],
                }
            ],
        },
    }
    review = sample_review(uid, "shop", "allow-web")
    request = review["request"]
    gvk = {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"}
    gvr = {"group": "networking.k8s.io", "version": "v1", "resource": "networkpolicies"}
    request.update(kind=gvk, requestKind=gvk, resource=gvr, requestResource=gvr, object=policy)
    return review


REVIEWS: dict[str, Callable[[str], dict[str, Any]]] = {
    "Pod CREATE": pod_create,
    "Deployment CREATE": lambda uid: sample_review(uid, "shop", "web"),
    "Deployment UPDATE": workload_update,
    "NetworkPolicy CREATE": policy_create,
}


def best(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Best of `repeat` runs of `number` calls, in microseconds per call."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - start) / number * 1e6)
    return min(runs)


def abest(
    loop: asyncio.AbstractEventLoop, fn: Callable[[], Any], number: int, repeat: int
) -> float:
    async def run() -> float:
        start = time.perf_counter()
        for _ in range(number):
            await fn()
        return (time.perf_counter() - start) / number * 1e6

    return min(loop.run_until_complete(run()) for _ in range(repeat))


def mocked(app: Any, body: bytes, loop: asyncio.AbstractEventLoop) -> Any:
    """What `validate` reads of an aiohttp request whose whole body came with the headers,
    without `make_mocked_request`'s Mock objects (their cost would swamp the handler's)."""
    payload = streams.StreamReader(_PROTOCOL, 2**16, loop=loop)
    payload.feed_data(body)
    payload.feed_eof()
    return _Request(app, payload, len(body))


class _Protocol:
    """The little of a BaseProtocol a StreamReader calls."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


_PROTOCOL: Any = _Protocol()


class _Transport:
    """A connection from 10.0.0.1 without a client certificate."""

    def get_extra_info(self, name: str) -> object:
        return ("10.0.0.1", 40000) if name == "peername" else None


_TRANSPORT = _Transport()


class _Request:
    method = "POST"
    transport = _TRANSPORT

    def __init__(self, app: Any, content: streams.StreamReader, length: int) -> None:
        self.query = {"timeout": "10s"}
        self.app = app
        self.content = content
        self.content_length = length


def measure_stages(
    body: bytes, app: Any, loop: asyncio.AbstractEventLoop, *, n: int, r: int
) -> dict[str, float]:
    runtime = app[RUNTIME]
    settings, cluster = runtime.settings, runtime.cluster
    row: dict[str, float] = {}
    mock_us = best(lambda: mocked(app, body, loop), n, r)
    read_us = abest(loop, lambda: _read_body(mocked(app, body, loop), 1 << 20), n, r)
    row["body read"] = max(0.0, read_us - mock_us)
    row["JSON decode"] = best(lambda: orjson.loads(body), n, r)
    row["parse"] = best(lambda: parse_review(body), n, r)
    review = parse_review(body)
    row["subject"] = best(lambda: subject_of(review, settings.limits), n, r)
    subject = subject_of(review, settings.limits)
    memo = getattr(subject, "_memo", None)
    rules = _RULES_BY_RESOURCE.get((review.resource.group, review.resource.resource), ())
    for rule in rules:

        def check(rule: Any = rule) -> object:
            if memo is not None:
                memo.clear()
            return rule.check(subject, cluster, settings)

        row[f"rule {rule.id}"] = best(check, n, r)
    if settings.audit_policy is not None and review.resource.resource != "networkpolicies":
        audit = settings.audit_policy
        row["audit Policy (unmemoised)"] = best(
            lambda: out_of_scope_verbs(review, audit, settings.min_level),
            n,
            r,
        )
    row["decide"] = best(lambda: decide(review, cluster, settings), n, r)
    decision = decide(review, cluster, settings)
    row["response"] = best(
        lambda: render_response(decision.response(), review.api_version),
        n,
        r,
    )
    metrics = runtime.metrics
    failures = [(x.rule, x.mode.value) for x in decision.failed]

    def count() -> None:
        metrics.duration.observe(0.0004)
        metrics.count_decision(decision.verdict, review.operation, failures)

    row["metrics"] = best(count, n, r)
    request = mocked(app, body, loop)
    row["record"] = best(
        lambda: _record(runtime, request, review, decision, 0.0004, client=None),
        n,
        r,
    )
    row["log line"] = max(0.0, row["record"] - row["metrics"])
    handler_us = abest(loop, lambda: validate(mocked(app, body, loop)), n // 2 or 1, r)
    row["handler"] = handler_us - mock_us
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--number", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    opts = parser.parse_args()
    n, r = opts.number, opts.repeat

    work = Path(tempfile.mkdtemp(prefix="kubefence-stages-"))
    config = work / "config.yaml"
    policy = ROOT / "tests" / "e2e" / "audit-policy.yaml"
    config.write_text(f"auditScope:\n  policyFile: {policy}\n")
    settings = load_settings(config)
    from webhook.commands.demo import demo_cluster

    cluster = demo_cluster()
    devnull = open(os.devnull, "wb")  # noqa: SIM115 - open for the whole run
    decisionlog.configure(devnull)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    runtime = Runtime(settings=settings, cluster=cluster)
    app = build_app(runtime)

    rows = {
        name: measure_stages(orjson.dumps(make("0d5f2c1e-bench")), app, loop, n=n, r=r)
        for name, make in REVIEWS.items()
    }
    stages: list[str] = []
    for row in rows.values():
        stages.extend(s for s in row if s not in stages)
    names = list(rows)
    print(f"us per request, best of {r} x {n}; audit Policy: {policy.name}")
    print(f"{'stage':28}" + "".join(f"{x:>22}" for x in names))
    for stage in stages:
        cells = "".join(
            f"{rows[x][stage]:>22.1f}" if stage in rows[x] else f"{'-':>22}" for x in names
        )
        print(f"{stage:28}{cells}")
    devnull.close()
    loop.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
