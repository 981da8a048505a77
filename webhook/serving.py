"""Running the webhook: TLS listener, config and certificate reloads, graceful shutdown.

Start-up and shutdown live here, around the thin request layer of `webhook.server`. On SIGTERM
`/readyz` turns 503 at once, the listener keeps serving for the drain period (the Service needs
time to drop the endpoint), in-flight requests complete, then the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from webhook.cluster.view import ClusterView
from webhook.config import Settings, load_settings
from webhook.errors import InputError
from webhook.server import Confirmer, Runtime, build_app
from webhook.tls import CertificateReloader, file_signature, not_after, server_context

RELOAD_INTERVAL = 2.0


@dataclass(frozen=True)
class ServeOptions:
    cert: Path
    key: Path
    host: str = "0.0.0.0"  # noqa: S104 - a webhook in a Pod listens on the Pod's addresses
    port: int = 8443
    client_ca: Path | None = None
    config: Path | None = None
    drain_seconds: float = 5.0
    grace_seconds: float = 25.0
    reuse_port: bool = False


async def serve(
    options: ServeOptions,
    settings: Settings,
    cluster: ClusterView,
    *,
    background: list[Callable[[Runtime], Coroutine[Any, Any, None]]] | None = None,
    confirmer: Confirmer | None = None,
    started: Callable[[int], None] | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code.

    `background` jobs (an informer, say) run beside the server and are cancelled at shutdown;
    `confirmer` re-reads a namespace live before a denial that relied on cached state.
    """
    context = server_context(options.cert, options.key, options.client_ca)
    runtime = Runtime(settings=settings, cluster=cluster, confirmer=confirmer)
    runtime.metrics.cert_not_after.set(not_after(options.cert))
    app = build_app(runtime)
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=30.0,
        shutdown_timeout=options.grace_seconds,
    )
    await runner.setup()
    loop = asyncio.get_running_loop()
    sock = _listen(options.host, options.port, options.reuse_port)
    assert runner.server is not None  # set by setup()
    server = await loop.create_server(
        runner.server, sock=sock, ssl=context, ssl_handshake_timeout=10.0, backlog=1024
    )
    port = sock.getsockname()[1]
    runtime.log.info("server.started", port=port, revision=settings.revision)
    if started is not None:
        started(port)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    tasks = [
        asyncio.create_task(_watch_certificates(runtime, context, options)),
        asyncio.create_task(_watch_config(runtime, options.config)),
        *(asyncio.create_task(job(runtime)) for job in background or ()),
    ]
    await stop.wait()
    runtime.shutting_down = True
    runtime.log.info("server.draining", seconds=options.drain_seconds)
    await asyncio.sleep(options.drain_seconds)
    server.close()  # stop accepting; open connections go on
    await runner.cleanup()  # closes idle connections, waits for in-flight handlers
    await server.wait_closed()
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    runtime.log.info("server.stopped")
    return 0


def _listen(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def _watch_certificates(
    runtime: Runtime, context: ssl.SSLContext, options: ServeOptions
) -> None:
    def report(result: str, expiry: float | None, reason: str) -> None:
        runtime.metrics.cert_reloads.labels(result).inc()
        if expiry is not None:
            runtime.metrics.cert_not_after.set(expiry)
            runtime.log.info("certificate.reloaded", cert=str(options.cert))
        else:
            runtime.log.error("certificate.rejected", cert=str(options.cert), reason=reason)

    await CertificateReloader(context, options.cert, options.key, report).run()


async def _watch_config(runtime: Runtime, path: Path | None) -> None:
    """Re-read the config (and the audit policy it names) when either file changes."""
    if path is None:
        return

    def watched() -> tuple[object, ...]:
        policy = runtime.settings.audit_policy_file
        return file_signature(path, *([policy] if policy else []))

    signature = watched()
    while True:
        await asyncio.sleep(RELOAD_INTERVAL)
        current = watched()
        if current == signature:
            continue
        signature = current
        try:
            settings = load_settings(path)
        except InputError as exc:
            runtime.metrics.config_reloads.labels("rejected").inc()
            runtime.log.error("config.rejected", file=str(path), reason=str(exc))
            continue
        runtime.metrics.policy_revision.clear()
        runtime.metrics.policy_revision.labels(settings.revision).set(1)
        runtime.settings = settings
        runtime.metrics.config_reloads.labels("applied").inc()
        runtime.log.info("config.applied", file=str(path), revision=settings.revision)
        signature = watched()  # the policy file named may have changed
