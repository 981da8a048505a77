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
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import hdrs, web

from webhook import exitcodes, listener, tls
from webhook.listener import listen
from webhook.metrics import CONTENT_TYPE
from webhook.monitor.audit import receive
from webhook.monitor.decisions import DECISIONS_MAX_BYTES, receive_decisions
from webhook.monitor.intake import MAX_BODY_BYTES
from webhook.monitor.runtime import DECISIONS_ONLY, RUNTIME, Job, MonitorRuntime
from webhook.monitor.senders import error

CHECK_INTERVAL = 1.0  # canary deadline and token file checks
DRAIN_SECONDS = 2.0


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


async def _method_not_allowed(request: web.Request) -> web.Response:
    what = "a DecisionList" if request.path == "/decisions" else "an audit EventList"
    response = error(405, f"method {request.method} not allowed; POST {what}")
    response.headers["Allow"] = "POST"
    return response


async def _not_found(request: web.Request) -> web.Response:
    return error(404, "not found; the monitor serves POST /audit and POST /decisions")


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


__all__ = [
    "CHECK_INTERVAL",
    "MAX_BODY_BYTES",
    "Job",
    "MonitorOptions",
    "MonitorRuntime",
    "read_token",
    "run_monitor",
]
