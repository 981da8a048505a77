"""The HTTPS shell both apps sit on: the admission webhook (`webhook.serving`) and the audit
receiver (`webhook.monitor.server`).

What is the same for both lives here once: the listening socket, a TLS server over an aiohttp
runner with the reloader's context, the plain-HTTP probe listener, SIGTERM/SIGINT into one stop
event (and the exit code they mean), background jobs whose failure is logged but never stops
serving, and the one file-watch loop that re-reads a rotated file (the config, a token file).
What differs (routes, readiness, drain order, log event names) is each app's own and passed in.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from aiohttp import web

from webhook.errors import InputError

HANDSHAKE_TIMEOUT = 10.0
BACKLOG = 1024  # connections the kernel queues before kubefence accepts them
BOTH_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def listen(
    host: str, port: int, *, reuse_port: bool = False, backlog: int | None = BACKLOG
) -> socket.socket:
    """A TCP socket on host:port (port 0 picks one), listening and non-blocking.

    With `backlog` None it is only bound: a reservation that holds the port and takes no
    connections. InputError names the address when the port cannot be had.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if backlog is not None:
            sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    if backlog is not None:
        sock.setblocking(False)
    return sock


async def serve_tls(
    runner: web.AppRunner, sock: socket.socket, context: Any, **kwargs: Any
) -> asyncio.Server:
    """The runner's aiohttp server on `sock`, over TLS with `context` (a reloader's, whose
    certificate changes under it); `kwargs` go to `create_server` (a backlog, say)."""
    assert runner.server is not None  # set by setup()
    return await asyncio.get_running_loop().create_server(
        runner.server, sock=sock, ssl=context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT, **kwargs
    )


def probe_listener(host: str, port: int | None, beside: socket.socket, **kwargs: Any) -> Any:
    """The probe port's socket (None without one); the main socket `beside` is closed when the
    probe port cannot be had, so a refused start holds no port."""
    if port is None:
        return None
    try:
        return listen(host, port, **kwargs)
    except Exception:
        beside.close()
        raise


async def start_plain(app: web.Application, sock: socket.socket) -> web.AppRunner:
    """`app` over plain HTTP on `sock`: the probes, for kubelet and Prometheus, which have no
    client certificate to show a `--client-ca` listener."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner


def stop_on_signals(
    stop: asyncio.Event, signals: Iterable[int] = BOTH_SIGNALS
) -> tuple[list[int], Callable[[], None]]:
    """Each of `signals` sets `stop`: the list they come in (first first), and the undo."""
    loop = asyncio.get_running_loop()
    got: list[int] = []
    chosen = tuple(signals)

    def on_signal(signum: int) -> None:
        got.append(signum)
        stop.set()

    for signum in chosen:
        loop.add_signal_handler(signum, on_signal, signum)

    def undo() -> None:
        for signum in chosen:
            loop.remove_signal_handler(signum)

    return got, undo


def exit_code(got: list[int], *, sigint: int, otherwise: int) -> int:
    """SIGINT first (Ctrl-C) is `sigint` as for every command; SIGTERM, a Pod's orderly stop,
    and a `stop` set in process are `otherwise`."""
    return sigint if got[:1] == [signal.SIGINT] else otherwise


def start_jobs(
    jobs: Iterable[Coroutine[Any, Any, None]], log: Any, event: str
) -> list[asyncio.Task[None]]:
    """Run `jobs` beside the server; one that fails is logged `event` with its traceback, and
    serving goes on: stopping would turn a broken side job into an outage of every replica at
    once (a broken informer shows as cache staleness, which `cache.onStale` already answers)."""

    def ended(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            job = getattr(task.get_coro(), "__qualname__", task.get_name())
            log.error(event, job=job, exc_info=task.exception())

    tasks = [asyncio.create_task(job) for job in jobs]
    for task in tasks:
        task.add_done_callback(ended)
    return tasks


async def stop_jobs(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def watch_files(
    signature: Callable[[], object], changed: Callable[[], bool], *, interval: float
) -> None:
    """Call `changed` whenever `signature()` (`tls.file_signature` of the files watched) differs
    from the last one seen, checked every `interval` seconds, until cancelled. `changed` returns
    whether it applied something that may name other files: the signature is then taken again,
    so the next check compares with the files now named."""
    seen = signature()
    while True:
        await asyncio.sleep(interval)
        current = signature()
        if current == seen:
            continue
        seen = current
        if changed():
            seen = signature()
