"""`kubefence serve --workers N`: N serving processes sharing one port through SO_REUSEPORT.

Each worker is a whole `kubefence serve` (its own event loop, cluster view, certificate reloader
and metrics registry) in a spawned process; the kernel spreads new connections over their
listeners. The parent only supervises. Invariants: a SIGTERM or SIGINT to the parent reaches every
worker as SIGTERM (each drains as a single server does); when one worker exits on its own the
others are stopped too, so the Pod restarts whole rather than serving at reduced strength
unnoticed; the parent exits with the worst worker exit code (130 after a SIGINT that they all
stopped cleanly on, as a single server); a worker whose parent is gone stops.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from webhook import exitcodes
from webhook.commands.running import run_command
from webhook.decisionlog import get_logger
from webhook.listener import listen

Serve = Callable[[argparse.Namespace], int]  # `serve.run`: module-level, so a spawn can pickle it


def supervise(args: argparse.Namespace, serve: Serve) -> int:
    """Run `args.workers` copies of `serve` on one port until they stop; the worst exit code."""
    log = get_logger()
    # Held, bound but not listening, for the parent's lifetime: they fix the ports (0 picks one
    # for all workers) and keep them ours while workers come and go. They take no connections.
    reservations = [listen(args.host, args.port, reuse_port=True, backlog=None)]
    if args.probe_port is not None:
        reservations.append(listen(args.host, args.probe_port, reuse_port=True, backlog=None))
    port, *probe = (r.getsockname()[1] for r in reservations)
    worker_args = argparse.Namespace(**vars(args))
    worker_args.workers, worker_args.port, worker_args.worker_of = 1, port, os.getpid()
    worker_args.probe_port = probe[0] if probe else None
    spawn = multiprocessing.get_context("spawn")
    procs = [
        spawn.Process(target=_worker, args=(serve, worker_args), name=f"kubefence-worker-{i}")
        for i in range(args.workers)
    ]
    stopping = False
    signals: list[int] = []  # what the parent was sent, first first

    def stop_all(signum: int | None = None, frame: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True
        if signum is not None:
            signals.append(signum)
        for proc in procs:
            if proc.pid is not None and proc.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, stop_all) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for proc in procs:
            proc.start()
        if stopping:  # a signal came while starting: reach the late ones too
            stop_all()
        log.info("workers.started", port=port, pids=[p.pid for p in procs])
        running = list(procs)
        while running:
            ended = multiprocessing.connection.wait([p.sentinel for p in running])
            for proc in [p for p in running if p.sentinel in ended]:
                proc.join()
                running.remove(proc)
                if not stopping:
                    log.error("workers.worker_exited", pid=proc.pid, code=proc.exitcode)
                    stop_all()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for reservation in reservations:
            reservation.close()
    code = worst(p.exitcode for p in procs)
    if code == exitcodes.OK and signals[:1] == [signal.SIGINT]:
        code = exitcodes.INTERRUPTED  # Ctrl-C, as one process reports it (workers get SIGTERM)
    log.info("workers.stopped", code=code)
    return code


def worst(codes: Iterable[int | None]) -> int:
    """The exit code that says most went wrong; death by signal N counts as 128 + N."""
    return max((128 - c if c < 0 else c for c in codes if c is not None), default=exitcodes.OK)


def _stop_before_serving(signum: int, frame: FrameType | None) -> Any:
    raise SystemExit(exitcodes.OK)  # asked to stop before serving anything: nothing to drain


def _worker(serve: Serve, args: argparse.Namespace) -> None:
    """A worker's body: the same `serve` as one process, with the error handling of the CLI."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which forwards it
    signal.signal(signal.SIGTERM, _stop_before_serving)  # until the server's own handler
    sys.exit(run_command("serve", serve, args))
