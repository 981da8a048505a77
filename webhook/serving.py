"""Running the webhook: the admission app on the shared listener (`webhook.listener`, which the
monitor sits on too), certificate and config reloads, graceful shutdown.

Start-up and shutdown live here, around the thin request layer of `webhook.server`. Invariants:
start-up either serves or fails with an InputError naming the file or address at fault; on
SIGTERM `/readyz` turns 503 at once and every response carries `Connection: close` (keep-alive
clients move to other endpoints), the listener keeps accepting for the drain period, then stops
accepting, requests in flight complete, and the process exits 0 no later than `grace_seconds`
after the signal.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web

from webhook import exitcodes, listener, tls
from webhook.cluster.view import ClusterView
from webhook.config import load_settings
from webhook.errors import InputError
from webhook.listener import listen
from webhook.server import (
    RUNTIME,
    Confirmer,
    Runtime,
    build_app,
    healthz,
    metrics,
    readyz,
    without_server_header,
)
from webhook.settings import Settings

RELOAD_INTERVAL = 2.0  # config file polling
KEEPALIVE_SECONDS = 30.0  # idle keep-alive connections are closed after this
SETTLE_SECONDS = 1.0  # after the listener closes, time for just-accepted clients to send

Job = Callable[[Runtime], Coroutine[Any, Any, None]]
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ServeOptions:
    cert: Path
    key: Path
    host: str = "0.0.0.0"  # noqa: S104 - a webhook in a Pod listens on the Pod's addresses
    port: int = 8443
    client_ca: Path | None = None
    client_subject: str | None = None  # with client_ca: the only caller whose approvals count
    config: Path | None = None
    drain_seconds: float = 5.0  # after SIGTERM: keep serving with /readyz failing
    grace_seconds: float = 25.0  # from SIGTERM to exit, drain included
    reuse_port: bool = False  # SO_REUSEPORT: several workers share the port
    probe_port: int | None = None  # plain HTTP /healthz, /readyz, /metrics (no client cert)
    parent_pid: int | None = None  # a worker: stop when this parent goes away
    cert_poll_seconds: float = tls.POLL_INTERVAL
    # The exit code after SIGINT: 130, as Ctrl-C is for every command (SIGTERM, a Pod's orderly
    # stop, is 0).
    sigint_code: int = exitcodes.INTERRUPTED


async def serve(
    options: ServeOptions,
    settings: Settings,
    cluster: ClusterView,
    *,
    background: list[Job] | None = None,
    confirmer: Confirmer | None = None,
    started: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT (or `stop` is set); returns the exit code.

    `background` jobs (an informer, say) run beside the server and are cancelled at shutdown;
    `confirmer` re-reads a namespace live before a denial that relied on cached state; `started`
    is told the port once the listener accepts.
    """
    reloader = tls.CertificateReloader(
        options.cert, options.key, options.client_ca, interval=options.cert_poll_seconds
    )
    runtime = Runtime(
        settings=settings,
        cluster=cluster,
        confirmer=confirmer,
        client_ca=options.client_ca is not None,
        client_subject=options.client_subject,
    )
    reloader.on_result = partial(_report_reload, runtime, options.cert)
    runtime.metrics.cert_not_after.set(reloader.pair.not_after)
    for result in ("applied", "rejected"):
        runtime.metrics.cert_reloads.labels(result)
    for kind in tls.HANDSHAKE_FAILURE_KINDS:
        runtime.metrics.handshake_failures.labels(kind)
    tls.count_handshake_failures(
        reloader.context, lambda kind: runtime.metrics.handshake_failures.labels(kind).inc()
    )
    app = build_app(runtime)
    app.on_response_prepare.append(_close_while_draining)
    sock = listen(options.host, options.port, reuse_port=options.reuse_port)
    probe_sock = listener.probe_listener(
        options.host, options.probe_port, sock, reuse_port=options.reuse_port
    )
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=KEEPALIVE_SECONDS,
        shutdown_timeout=0.5,  # connections are closed by _shut_down, within the grace period
    )
    await runner.setup()
    assert runner.server is not None  # set by setup()
    in_flight = _InFlight(runner.server.request_handler)
    runner.server.request_handler = in_flight
    server = await listener.serve_tls(runner, sock, reloader.context, backlog=listener.BACKLOG)
    probes = await _start_probes(runtime, probe_sock) if probe_sock is not None else None
    port = sock.getsockname()[1]
    # Before "server.started": a signal right after it stops the server in order.
    if stop is None:
        stop = asyncio.Event()
    signals = (signal.SIGTERM,) if options.parent_pid else listener.BOTH_SIGNALS
    got, unhandle_signals = listener.stop_on_signals(stop, signals)
    runtime.log.info(
        "server.started",
        port=port,
        probe_port=probe_sock.getsockname()[1] if probe_sock is not None else None,
        pid=os.getpid(),
        revision=settings.revision,
        cert_serial=reloader.pair.serial,
        client_ca=str(options.client_ca) if options.client_ca else None,
    )
    if started is not None:
        started(port)
    jobs = [
        reloader.run(),
        _watch_config(runtime, options.config),
        *(job(runtime) for job in background or ()),
    ]
    if options.parent_pid is not None:
        jobs.append(_watch_parent(runtime, options.parent_pid, stop))
    tasks = listener.start_jobs(jobs, runtime.log, "server.job_failed")
    try:
        await stop.wait()
        await _shut_down(runtime, server, runner, in_flight, options)
    finally:
        unhandle_signals()
        await listener.stop_jobs(tasks)
        if probes is not None:
            await probes.cleanup()
    runtime.log.info("server.stopped")
    return listener.exit_code(got, sigint=options.sigint_code, otherwise=exitcodes.OK)


async def _shut_down(
    runtime: Runtime,
    server: asyncio.Server,
    runner: web.AppRunner,
    in_flight: _InFlight,
    options: ServeOptions,
) -> None:
    """Drain, stop accepting, let requests in flight finish; all within the grace period."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + options.grace_seconds
    runtime.shutting_down = True
    runtime.log.info("server.draining", seconds=options.drain_seconds)
    await asyncio.sleep(max(0.0, min(options.drain_seconds, options.grace_seconds)))
    server.close()  # stop accepting; connections already made go on
    web_server = runner.server
    assert web_server is not None
    # A connection accepted just before the close may still be in its TLS handshake (aiohttp does
    # not know it yet) or not have sent its request; a request whose body is still arriving would
    # lose the rest once aiohttp starts closing. Give the first a moment, the second its time.
    settle = loop.time() + SETTLE_SECONDS
    while loop.time() < deadline and (in_flight.count or loop.time() < settle):
        await asyncio.sleep(0.05)
    runtime.log.info(
        "server.closing", connections=len(web_server.connections), in_flight=in_flight.count
    )
    web_server.pre_shutdown()  # idle connections close now, busy ones after their response
    remaining = max(0.05, deadline - loop.time())  # aiohttp reads 0 as "no limit"
    try:
        async with asyncio.timeout(remaining):  # aiohttp may wait twice its timeout
            await web_server.shutdown(remaining)
    except TimeoutError:
        for connection in web_server.connections:
            connection.force_close()
    await runner.cleanup()
    await server.wait_closed()
    if runtime.offloop is not None:
        runtime.offloop.close()  # an analysis still running finishes; none queued starts


class _InFlight:
    """Wraps the request handler to count requests between their headers and their answer."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.count = 0

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        self.count += 1
        try:
            return await self.handler(request)
        finally:
            self.count -= 1


async def _close_while_draining(request: web.Request, response: web.StreamResponse) -> None:
    """While draining, no connection is kept alive: its client reconnects, to another endpoint."""
    if request.app[RUNTIME].shutting_down:
        response.force_close()
        response.headers[hdrs.CONNECTION] = "close"


async def _start_probes(runtime: Runtime, sock: socket.socket) -> web.AppRunner:
    """Plain-HTTP health, readiness and metrics for kubelet and Prometheus, which have no client
    certificate to show a `--client-ca` listener."""
    app = web.Application()
    app[RUNTIME] = runtime
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.on_response_prepare.append(without_server_header)
    return await listener.start_plain(app, sock)


def _report_reload(
    runtime: Runtime, cert: Path, result: str, pair: tls.KeyPair | None, reason: str
) -> None:
    runtime.metrics.cert_reloads.labels(result).inc()
    if pair is None:
        runtime.log.error("certificate.rejected", cert=str(cert), reason=reason)
        return
    runtime.metrics.cert_not_after.set(pair.not_after)
    expiry = dt.datetime.fromtimestamp(pair.not_after, dt.UTC).isoformat()
    runtime.log.info("certificate.reloaded", cert=str(cert), serial=pair.serial, not_after=expiry)


async def _watch_parent(runtime: Runtime, parent: int, stop: asyncio.Event) -> None:
    """A worker whose supervisor is gone (killed outright) stops like on SIGTERM."""
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    runtime.log.warning("server.orphaned", parent=parent)
    stop.set()


async def _watch_config(runtime: Runtime, path: Path | None) -> None:
    """Re-read the config (and the audit policy it names) when either file changes."""
    if path is None:
        return

    def watched() -> tuple[object, ...]:
        policy = runtime.settings.audit_policy_file
        return tls.file_signature(path, *([policy] if policy else []))

    def changed() -> bool:
        try:
            settings = load_settings(path)
        except InputError as exc:
            runtime.metrics.config_reloads.labels("rejected").inc()
            runtime.log.error("config.rejected", file=str(path), reason=str(exc))
            return False
        runtime.metrics.policy_revision.clear()
        runtime.metrics.policy_revision.labels(settings.revision).set(1)
        runtime.settings = settings
        runtime.metrics.config_reloads.labels("applied").inc()
        runtime.log.info("config.applied", file=str(path), revision=settings.revision)
        return True  # the policy file named may have changed

    await listener.watch_files(watched, changed, interval=RELOAD_INTERVAL)
