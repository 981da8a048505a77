"""The monitor's HTTPS shell: `POST /audit` (the API server's audit webhook backend), `POST
/decisions` (`serve --decisions-to`: the webhook's sensitive decisions), probes.

Invariants:
- The sender is authenticated before its body is read: with a client CA at the TLS layer (no
  certificate signed by it, no connection), and with `--client-subject` only a certificate of
  those subjects (403: a cluster CA also signs kubelets and users); with a token file by
  `Authorization: Bearer` (401).
- An answer is one line: 200 `{}` once every event of the batch is counted and judged; 400 with a
  JSON reason for a body that is not an EventList; 413 over `MAX_BODY_BYTES` (with or without a
  Content-Length: the body is read to its end, with a running count) or over the item caps of
  `webhook.monitor.batch`. The API server drops a batch answered 4xx and sends again one
  answered late, which the feed de-duplicates.
- Bodies are read concurrently, within a budget and a minimum rate (`webhook.monitor.intake`:
  503 with Retry-After past the budget, 408 slower): slow senders cannot starve the API server's
  batches.
  Only a body read whole waits for the judging `lock`, at most `LOCK_WAIT_SECONDS` (then 503).
- One batch at a time is parsed and judged, a slice at a time as `batch.iter_items` parses it,
  in runs of `SLICE` events with the loop given back between them; no list of all its items is
  kept, and batches keep their order. A batch answered 200 before is skipped whole when sent
  again (`Feed.batch_taken`, its events counted as duplicates).
- Every 4xx body refusal is logged `monitor.batch_rejected` (code, reason, size; never content),
  and refused TLS handshakes are counted by kind.
- `POST /decisions` (with `--audit-gap-window`) is authenticated on the audit port as `/audit`
  is (the token, the client CA; `decision_subjects`, else `client_subjects`, the certificates
  allowed), and on the decisions port (`--decisions-port`, for a sender the API server's CA did
  not sign) by `--decisions-token-file` and/or `--decisions-client-ca` (`decision_subjects`,
  and a handshake without a certificate there when that CA is not given). Its body is a
  `DecisionList` of at most `DECISIONS_MAX_BYTES` and `DECISIONS_MAX_ITEMS` (413 over, 400 with
  the reason for one that is not); each item is held by the feed's `GapWatch` (an item that is
  no decision is counted malformed). Only the Lease holder holds them: a follower answers 200
  `{"held":0}` (the sender posts to every replica, or to the Service that routes to the holder)
  and counts them.
- Alert lines go through structlog, like the decision log: the `event` is the alert kind; each
  alert goes to the runtime's `sinks` too (`webhook.monitor.alertmanager`), which never wait.
- With leader election (`leading` not always True) only the holder of the monitor Lease is Ready
  and takes batches. A follower answers /readyz 503 (the Service routes to the holder) and a
  batch that reaches it anyway 503 with `Connection: close`: the audit webhook backend retries a
  failed send on any error (k8s.io/apiserver@v0.37.2 plugin/pkg/audit/webhook/webhook.go,
  `retryOnError`), on a new connection the Service routes to the holder, so detections are neither
  split between replicas nor counted twice. `took_over` gives the new holder a fresh feed.
- Certificates (and the token file) are re-read on change; SIGTERM turns /readyz 503, drains
  briefly and stops.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import hdrs, web

from webhook import exitcodes, listener, tls
from webhook.correlate.decision_reader import decision_record
from webhook.correlate.detect import Alert
from webhook.listener import listen
from webhook.metrics import CONTENT_TYPE
from webhook.monitor.batch import BatchError, iter_items
from webhook.monitor.feed import Feed
from webhook.monitor.intake import (
    BODY_BUDGET_BYTES,
    MAX_BODY_BYTES,
    BodyBudget,
    Hold,
    Refusal,
    read_body,
    too_large,
)
from webhook.monitor.metrics import MonitorMetrics
from webhook.peers import client_identity

SLICE = 100  # events judged between yields to the loop
LOCK_WAIT_SECONDS = 10.0  # a batch read waits this long for the one being judged, then 503
CHECK_INTERVAL = 1.0  # canary deadline and token file checks
DRAIN_SECONDS = 2.0
FOLLOWER_RETRY_AFTER = 1  # seconds: a follower's 503 asks the API server to re-send this soon
# A DecisionList: `serve` sends at most 100 records of ~600 bytes in one; the cap leaves room.
DECISIONS_MAX_BYTES = 1 << 20
DECISIONS_MAX_ITEMS = 1000
DECISIONS_READ_SECONDS = 10.0
DECISION_LIST = "DecisionList"
DECISION_API_VERSION = "kubefence.io/v1"

Job = Callable[["MonitorRuntime"], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class MonitorOptions:
    cert: Path
    key: Path
    client_ca: Path | None = None
    token_file: Path | None = None
    host: str = "0.0.0.0"  # noqa: S104 - in a Pod it listens on the Pod's addresses
    port: int = 8444
    probe_port: int | None = None
    drain_seconds: float = DRAIN_SECONDS  # after SIGTERM: /readyz 503, still receiving
    # A listener of POST /decisions alone, for senders the API server's client CA did not sign
    # (serve, with a token): its handshake asks for no certificate unless decisions_client_ca.
    decisions_port: int | None = None
    decisions_token_file: Path | None = None
    decisions_client_ca: Path | None = None
    cert_poll_seconds: float = tls.POLL_INTERVAL


@dataclass
class MonitorRuntime:
    feed: Feed
    log: Any
    metrics: MonitorMetrics = field(default_factory=MonitorMetrics)
    token: bytes | None = None
    client_subjects: tuple[str, ...] = ()  # with a client CA: the only senders (any when empty)
    shutting_down: bool = False
    received: int = 0  # events counted (duplicates not), for the stop line
    refused: int = 0  # batches answered 503 as a follower, for the stop line
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # judging; shutdown waits on it
    budget: BodyBudget = field(default_factory=lambda: BodyBudget(BODY_BUDGET_BYTES))
    leading: Callable[[], bool] = lambda: True  # holds the monitor Lease (always, unelected)
    lease: str | None = None  # "namespace/name" of that Lease; None: no election
    # POST /decisions: certificates allowed with a client CA (empty: `client_subjects`' rule)
    decision_subjects: tuple[str, ...] = ()
    decisions_token: bytes | None = None  # the decisions port's bearer token
    decisions_port: int | None = None  # the decisions port, once listening
    # Called with each alert beside its log line (`--alertmanager`'s sender); never waits.
    sinks: list[Callable[[Alert], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.metrics.leader.set_function(lambda: 1.0 if self.leading() else 0.0)

    def took_over(self) -> None:
        """This replica now holds the Lease: it starts from an empty feed. What the previous
        holder counted (probing windows, de-duplication, canaries) stayed with it."""
        self.feed = self.feed.renewed()

    def alert(self, alert: Alert) -> None:
        self.metrics.alerts.labels(alert.event, alert.cause).inc()
        self.log.warning(alert.event, **alert.fields())
        for sink in self.sinks:
            sink(alert)


RUNTIME = web.AppKey("monitor", MonitorRuntime)
DECISIONS_ONLY = web.AppKey("decisions_only", bool)  # the app of the decisions port


def build_decisions_app(runtime: MonitorRuntime) -> web.Application:
    """The decisions port's app: POST /decisions, authenticated by its own token and CA."""
    app = web.Application(client_max_size=DECISIONS_MAX_BYTES)
    app[RUNTIME] = runtime
    app[DECISIONS_ONLY] = True
    app.router.add_post("/decisions", receive_decisions)
    app.router.add_route("*", "/decisions", _method_not_allowed)
    app.router.add_route("*", "/{path:.*}", _not_found)
    app.on_response_prepare.append(_without_server_header)
    return app


def build_app(runtime: MonitorRuntime) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[RUNTIME] = runtime
    app.router.add_post("/audit", receive)
    app.router.add_post("/decisions", receive_decisions)
    _add_probes(app)
    app.router.add_route("*", "/audit", _method_not_allowed)
    app.router.add_route("*", "/decisions", _method_not_allowed)
    app.router.add_route("*", "/{path:.*}", _not_found)
    app.on_response_prepare.append(_without_server_header)
    return app


async def receive(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    response = await _receive(request, runtime)
    runtime.metrics.batches.labels(str(response.status)).inc()
    return response


async def _receive(request: web.Request, runtime: MonitorRuntime) -> web.Response:
    if runtime.token is not None and not _bearer_ok(request, runtime.token):
        response = _error(401, "a bearer token is required (the monitor's --token-file)")
        response.headers[hdrs.WWW_AUTHENTICATE] = "Bearer"
        return response
    if runtime.client_subjects:
        refused = _unlisted_sender(request, runtime)
        if refused is not None:
            return refused
    if not runtime.leading():
        return _follower(runtime, None)
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        return _too_large(runtime, length)
    hold = Hold(runtime.budget)
    try:
        body = await read_body(request.content, hold, length)
        if isinstance(body, Refusal):
            if body.status == 503:
                return _busy(runtime, body.reason)
            return _rejected(runtime, body.status, body.reason, body.size, close=True)
        try:  # one batch judged at a time, in the order they were read
            async with asyncio.timeout(LOCK_WAIT_SECONDS):
                await runtime.lock.acquire()
        except TimeoutError:
            waited = f"another batch is being judged for over {LOCK_WAIT_SECONDS:.0f}s"
            return _busy(runtime, waited)
        try:
            return await _judge(runtime, body)
        finally:
            runtime.lock.release()
    finally:
        hold.release()


async def receive_decisions(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    response = await _receive_decisions(request, runtime)
    runtime.metrics.decision_posts.labels(str(response.status)).inc()
    return response


async def _receive_decisions(request: web.Request, runtime: MonitorRuntime) -> web.Response:
    if request.app.get(DECISIONS_ONLY):  # the decisions port: its own token and certificates
        token, flag = runtime.decisions_token, "--decisions-token-file"
        subjects = runtime.decision_subjects if _has_cert(request) else ()
    else:  # the audit port: as /audit
        token, flag = runtime.token, "--token-file"
        subjects = runtime.decision_subjects or runtime.client_subjects
    if token is not None and not _bearer_ok(request, token):
        response = _error(401, f"a bearer token is required (the monitor's {flag})")
        response.headers[hdrs.WWW_AUTHENTICATE] = "Bearer"
        return response
    if subjects:
        refused = _unlisted_sender(request, runtime, subjects)
        if refused is not None:
            return refused
    if runtime.feed.gaps is None:
        return _error(404, "decisions are not taken: start the monitor with --audit-gap-window")
    length = request.content_length
    if length is not None and length > DECISIONS_MAX_BYTES:
        return _decisions_refused(runtime, 413, f"exceeds {DECISIONS_MAX_BYTES} bytes", length)
    body = await _read_small(request, DECISIONS_MAX_BYTES)
    if isinstance(body, Refusal):
        return _decisions_refused(runtime, body.status, body.reason, body.size)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _decisions_refused(runtime, 400, f"not JSON: {exc.msg}", len(body))
    if (
        not isinstance(doc, dict)
        or doc.get("kind") != DECISION_LIST
        or doc.get("apiVersion") != DECISION_API_VERSION
        or not isinstance(doc.get("items"), list)
    ):
        reason = f"not a {DECISION_API_VERSION} {DECISION_LIST} with a list of items"
        return _decisions_refused(runtime, 400, reason, len(body))
    items = doc["items"]
    if len(items) > DECISIONS_MAX_ITEMS:  # judged in one go: the loop is held that long
        reason = f"more than {DECISIONS_MAX_ITEMS} items in one DecisionList"
        return _decisions_refused(runtime, 413, reason, len(body))
    if not runtime.leading():  # the holder alerts; one sent here is the holder's too
        runtime.metrics.decisions.labels("follower").inc(len(items))
        return web.Response(body=b'{"held":0}\n', content_type="application/json")
    held = 0
    for item in items:
        record = decision_record(item)
        if record is None:
            runtime.metrics.decisions.labels("malformed").inc()
            continue
        held += 1
        for alert in runtime.feed.decision(record):
            runtime.alert(alert)
    runtime.metrics.decisions.labels("held").inc(held)
    return web.Response(body=orjson.dumps({"held": held}) + b"\n", content_type="application/json")


def _has_cert(request: web.Request) -> bool:
    transport = request.transport
    return transport is not None and bool(transport.get_extra_info("peercert"))


async def _read_small(request: web.Request, limit: int) -> bytes | Refusal:
    """A small body whole, within `limit` bytes and `DECISIONS_READ_SECONDS`."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(DECISIONS_READ_SECONDS):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    return Refusal(413, f"exceeds {limit} bytes", size)
                chunks.append(chunk)
    except TimeoutError:
        return Refusal(408, f"body not received within {DECISIONS_READ_SECONDS:.0f}s", size)
    return b"".join(chunks)


def _decisions_refused(
    runtime: MonitorRuntime, status: int, reason: str, size: int
) -> web.Response:
    runtime.log.warning("monitor.decisions_rejected", code=status, reason=reason, size=size)
    response = _error(status, reason)
    if status in (408, 413):
        response.force_close()  # the rest of the body is not read
    return response


async def _judge(runtime: MonitorRuntime, body: bytes) -> web.Response:
    """Count and judge the batch a slice at a time as it is parsed; 200 once all are taken."""
    if not runtime.leading():  # lost the Lease while this batch waited
        return _follower(runtime, None)
    started = time.perf_counter()
    feed = runtime.feed  # the whole batch to one feed, whatever the Lease does meanwhile
    digest = hashlib.blake2b(body, digest_size=16).digest()
    again = feed.batch_taken(digest)
    if again is not None:  # a re-send of a batch taken: its events all counted already
        runtime.metrics.duplicates.inc(again)
        return web.Response(body=b"{}\n", content_type="application/json")
    events = 0
    try:
        for part in iter_items(body):
            for start in range(0, len(part), SLICE):
                now = time.time()
                taken = feed.take(part[start : start + SLICE], now)
                _account(runtime, taken.stages, taken.duplicates, taken.malformed, now)
                if taken.unjudged:
                    runtime.metrics.unjudged.inc(taken.unjudged)
                if taken.before_registration:
                    runtime.metrics.before_registration.inc(taken.before_registration)
                for alert in taken.alerts:
                    runtime.alert(alert)
                await asyncio.sleep(0)  # a slice judged (or parsed): the loop is given back
            events += len(part)
            del part
    except BatchError as exc:
        return _rejected(runtime, 413 if exc.too_many else 400, str(exc), len(body))
    feed.took_batch(digest, events)
    runtime.metrics.batch_size.observe(events)
    runtime.metrics.batch_seconds.observe(time.perf_counter() - started)
    return web.Response(body=b"{}\n", content_type="application/json")


def _too_large(runtime: MonitorRuntime, size: int) -> web.Response:
    return _rejected(runtime, 413, too_large(size).reason, size, close=True)


def _rejected(
    runtime: MonitorRuntime, status: int, reason: str, size: int, *, close: bool = False
) -> web.Response:
    """A body refused (the API server retries it, then drops it): logged, never its content."""
    runtime.log.warning("monitor.batch_rejected", code=status, reason=reason, size=size)
    response = _error(status, reason)
    if close:  # the rest of the body is not read
        response.force_close()
    return response


def _busy(runtime: MonitorRuntime, reason: str) -> web.Response:
    """503 with Retry-After: client-go re-sends after it, the audit backend retries besides."""
    runtime.log.warning("monitor.batch_deferred", reason=reason)
    response = _error(503, reason)
    response.headers[hdrs.RETRY_AFTER] = str(FOLLOWER_RETRY_AFTER)
    response.force_close()
    return response


def _unlisted_sender(
    request: web.Request, runtime: MonitorRuntime, subjects: tuple[str, ...] = ()
) -> web.Response | None:
    """403 for a verified certificate of another subject than `--client-subject`'s (or
    `subjects`), else None."""
    allowed = subjects or runtime.client_subjects
    client = client_identity(request)
    if client is not None and any(client.matches(p) for p in allowed):
        return None
    subject = client.subject if client is not None else None
    runtime.log.warning(
        "monitor.sender_refused", reason="client certificate subject not allowed", client=subject
    )
    flag = "--decisions-subject" if subjects and subjects != runtime.client_subjects else None
    return _error(
        403,
        f"client certificate subject {subject!r} is not a {flag or '--client-subject'} of"
        " the monitor",
    )


def _account(
    runtime: MonitorRuntime,
    stages: dict[str, int],
    duplicates: int,
    malformed: int,
    now: float,
) -> None:
    m = runtime.metrics
    for stage, n in stages.items():
        m.events.labels(stage).inc(n)
        runtime.received += n
    if duplicates:
        m.duplicates.inc(duplicates)
    if malformed:
        m.malformed.inc(malformed)
    if stages:  # the receiver's clock: a forged stageTimestamp in the future cannot hide silence
        m.last_event.set(now)


def _follower(runtime: MonitorRuntime, events: int | None) -> web.Response:
    """A batch sent to a replica that does not hold the Lease: judged here it would split the
    detections, so it is refused with a status the API server retries, on a new connection (this
    one is closed) that the Service gives to the holder. Two retries stack: client-go's REST
    client re-sends a 5xx carrying Retry-After after that many seconds, up to 10 times
    (k8s.io/client-go@v0.37.2 rest/with_retry.go, `checkWait`; the EventList is re-readable
    bytes), and the audit backend retries any error from 10 s, times 1.5, 5 tries
    (k8s.io/apiserver@v0.37.2 plugin/pkg/audit/webhook/webhook.go, `retryOnError`)."""
    runtime.refused += 1
    runtime.log.warning(
        "monitor.batch_refused",
        reason="not the leader: another replica holds the monitor Lease",
        lease=runtime.lease,
        events=events,
    )
    response = _error(503, f"not the leader: another replica holds the Lease {runtime.lease}")
    response.headers[hdrs.RETRY_AFTER] = str(FOLLOWER_RETRY_AFTER)
    response.force_close()
    return response


def _bearer_ok(request: web.Request, token: bytes) -> bool:
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, given = header.partition(" ")
    try:
        presented = given.strip().encode()
    except UnicodeEncodeError:  # bytes that are not UTF-8 (aiohttp escapes them): not our token
        return False
    return scheme.lower() == "bearer" and hmac.compare_digest(presented, token)


def _error(status: int, reason: str) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps({"error": reason}) + b"\n", content_type="application/json"
    )


async def _method_not_allowed(request: web.Request) -> web.Response:
    what = "a DecisionList" if request.path == "/decisions" else "an audit EventList"
    response = _error(405, f"method {request.method} not allowed; POST {what}")
    response.headers["Allow"] = "POST"
    return response


async def _not_found(request: web.Request) -> web.Response:
    return _error(404, "not found; the monitor serves POST /audit and POST /decisions")


async def _without_server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.popall(hdrs.SERVER, None)
    if request.app[RUNTIME].shutting_down:
        response.force_close()


def _add_probes(app: web.Application) -> None:
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    if runtime.shutting_down:
        return web.Response(status=503, text="shutting down\n")
    if not runtime.leading():
        return web.Response(status=503, text=f"not the leader of Lease {runtime.lease}\n")
    return web.Response(text="ok\n")


async def _metrics(request: web.Request) -> web.Response:
    response = web.Response(body=request.app[RUNTIME].metrics.render())
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


def read_token(path: Path) -> bytes:
    """The bearer token in a file (surrounding whitespace dropped); OSError/ValueError if none."""
    token = path.read_bytes().strip()
    if not token:
        raise ValueError("empty")
    return token


async def _watch_token(
    runtime: MonitorRuntime, path: Path | None, *, decisions: bool = False
) -> None:
    """Re-read a rotated token file; an unreadable or empty one keeps the token in force."""
    if path is None:
        return

    def changed() -> bool:
        try:
            token = read_token(path)
        except (OSError, ValueError) as exc:
            runtime.log.error("monitor.token_rejected", file=str(path), reason=str(exc))
            return False
        if decisions:
            runtime.decisions_token = token
        else:
            runtime.token = token
        runtime.log.info("monitor.token_reloaded", file=str(path))
        return False  # a token names no other file

    await listener.watch_files(
        lambda: tls.file_signature(path), changed, interval=CHECK_INTERVAL * 2
    )


async def _watch_canary(runtime: MonitorRuntime) -> None:
    if runtime.feed.canary is None:
        return
    while True:
        await asyncio.sleep(CHECK_INTERVAL)
        canary = runtime.feed.canary
        if canary is None or not runtime.leading():  # a follower sends no canaries
            continue
        alert = runtime.feed.check(time.time())
        if alert is not None:
            runtime.alert(alert)
        seen = canary.last_seen
        if seen is not None:
            runtime.metrics.canary_seen.set(seen)


async def run_monitor(
    options: MonitorOptions,
    runtime: MonitorRuntime,
    *,
    background: list[Job] | None = None,
    started: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT (or `stop`); the exit code."""
    reloader = tls.CertificateReloader(
        options.cert, options.key, options.client_ca, interval=options.cert_poll_seconds
    )
    reloader.on_result = lambda result, pair, reason: _report_reload(runtime, options, pair, reason)
    tls.count_handshake_failures(
        reloader.context, lambda kind: runtime.metrics.handshake_failures.labels(kind).inc()
    )
    app = build_app(runtime)
    sock = listen(options.host, options.port)
    probe_sock = listener.probe_listener(options.host, options.probe_port, sock)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    server = await listener.serve_tls(runner, sock, reloader.context)
    probes = await _start_probes(runtime, probe_sock) if probe_sock is not None else None
    decisions = (
        await _start_decisions(runtime, options) if options.decisions_port is not None else None
    )
    port = sock.getsockname()[1]
    stop = stop or asyncio.Event()
    # Before "monitor.started": a signal right after it stops the monitor in order.
    got, unhandle_signals = listener.stop_on_signals(stop)
    runtime.log.info(
        "monitor.started",
        port=port,
        decisions_port=runtime.decisions_port,
        probe_port=probe_sock.getsockname()[1] if probe_sock is not None else None,
        pid=os.getpid(),
        client_ca=str(options.client_ca) if options.client_ca else None,
        client_subjects=list(runtime.client_subjects),
        token=options.token_file is not None,
        canary=runtime.feed.canary is not None,
        lease=runtime.lease,
    )
    if started is not None:
        started(port)
    jobs = [
        reloader.run(),
        _watch_token(runtime, options.token_file),
        _watch_token(runtime, options.decisions_token_file, decisions=True),
        _watch_canary(runtime),
        *([decisions[2].run()] if decisions is not None else []),
        *(job(runtime) for job in background or ()),
    ]
    tasks = listener.start_jobs(jobs, runtime.log, "monitor.job_failed")
    try:
        await stop.wait()
        runtime.shutting_down = True
        runtime.log.info("monitor.draining", seconds=options.drain_seconds)
        await asyncio.sleep(options.drain_seconds)
        server.close()
        if decisions is not None:
            decisions[1].close()
        async with runtime.lock:  # the batch being judged is answered first
            pass
        await runner.cleanup()
        await server.wait_closed()
        if decisions is not None:
            await decisions[0].cleanup()
            await decisions[1].wait_closed()
    finally:
        unhandle_signals()
        await listener.stop_jobs(tasks)
        if probes is not None:
            await probes.cleanup()
    runtime.log.info("monitor.stopped", events=runtime.received, refused=runtime.refused)
    return listener.exit_code(got, sigint=exitcodes.INTERRUPTED, otherwise=exitcodes.OK)


async def _start_decisions(
    runtime: MonitorRuntime, options: MonitorOptions
) -> tuple[web.AppRunner, asyncio.AbstractServer, tls.CertificateReloader]:
    """The decisions port: the serving pair, its own client CA (none: no certificate asked)."""
    assert options.decisions_port is not None
    reloader = tls.CertificateReloader(
        options.cert, options.key, options.decisions_client_ca, interval=options.cert_poll_seconds
    )
    reloader.on_result = lambda result, pair, reason: _report_reload(runtime, options, pair, reason)
    sock = listen(options.host, options.decisions_port)
    runner = web.AppRunner(
        build_decisions_app(runtime), access_log=None, handle_signals=False, shutdown_timeout=1.0
    )
    await runner.setup()
    server = await listener.serve_tls(runner, sock, reloader.context)
    runtime.decisions_port = sock.getsockname()[1]
    return runner, server, reloader


async def _start_probes(runtime: MonitorRuntime, sock: socket.socket) -> web.AppRunner:
    """Plain-HTTP health, readiness and metrics, for probes and scrapers without a client cert."""
    app = web.Application()
    app[RUNTIME] = runtime
    _add_probes(app)
    app.on_response_prepare.append(_without_server_header)
    return await listener.start_plain(app, sock)


def _report_reload(
    runtime: MonitorRuntime, options: MonitorOptions, pair: tls.KeyPair | None, reason: str
) -> None:
    if pair is None:
        runtime.log.error("certificate.rejected", cert=str(options.cert), reason=reason)
    else:
        runtime.log.info("certificate.reloaded", cert=str(options.cert), serial=pair.serial)
