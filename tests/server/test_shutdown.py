"""Graceful shutdown of a real `python -m webhook serve` process under steady load.

On SIGTERM `/readyz` turns 503 at once; every request that got a connection is answered, during
the drain and after (a request in flight when the listener closes completes); once the listener
is closed new connections are refused (a client goes to another endpoint); exit 0 within grace.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import structlog
from serving_kit import (
    HOST,
    LoadClient,
    ServeProcess,
    Server,
    TlsMaterial,
    close,
    read_response,
    serve_options,
)

from webhook.commands.demo import sample_review
from webhook.server import Runtime

DRAIN, GRACE = 2.0, 10.0


def serve_args(cert: Path, key: Path, state: Path, *extra: str) -> list[str]:
    return [
        "--state", str(state), "--cert", str(cert), "--key", str(key),
        "--host", HOST, "--port", "0", *extra,
    ]  # fmt: skip


async def get(port: int, ca_file: Path, path: str) -> int:
    context = ssl.create_default_context(cafile=str(ca_file))
    reader, writer = await asyncio.open_connection(HOST, port, ssl=context)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    status, _, _ = await read_response(reader)
    await close(writer)
    return status


class SlowRequest:
    """A review whose body arrives in two halves: in flight across the listener's close."""

    def __init__(self, port: int, ca_file: Path) -> None:
        self.port, self.ca_file = port, ca_file
        self.body = orjson.dumps(sample_review("slow-1", "shop", "web"))

    async def begin(self) -> None:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port, ssl=context)
        head = (
            f"POST /validate HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(self.body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + self.body[:100])
        await self.writer.drain()

    async def finish(self) -> tuple[int, str]:
        self.writer.write(self.body[100:])
        await self.writer.drain()
        status, _, payload = await read_response(self.reader)
        await close(self.writer)
        return status, orjson.loads(payload)["response"]["uid"]


class KeepAlive:
    """One connection for several requests; reports the Connection header of each answer."""

    @classmethod
    async def open(cls, port: int, ca_file: Path) -> KeepAlive:
        self = cls()
        context = ssl.create_default_context(cafile=str(ca_file))
        self.reader, self.writer = await asyncio.open_connection(HOST, port, ssl=context)
        return self

    async def request(self) -> str:
        body = orjson.dumps(sample_review("kept", "shop", "web"))
        self.writer.write(
            f"POST /validate HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status, headers, _ = await read_response(self.reader)
        assert status == 200
        return headers.get("connection", "keep-alive").lower()


async def test_sigterm_under_load_loses_no_request(
    serve_process: Callable[[list[str]], ServeProcess],
    tls_material: TlsMaterial,
    state_dir: Path,
    tmp_path: Path,
) -> None:
    cert, key = tls_material.write(tmp_path)
    args = serve_args(cert, key, state_dir, "--drain-seconds", str(DRAIN), "--grace-seconds", "10")
    server = serve_process(args)
    port = await server.start()
    ca = tls_material.ca_file
    assert await get(port, ca, "/readyz") == 200
    load = LoadClient(port, ca)
    load.start(keepalive=3, fresh=3)
    while load.ok < 100:
        await asyncio.sleep(0.05)
    slow = SlowRequest(port, ca)
    await slow.begin()
    kept = await KeepAlive.open(port, ca)
    assert await kept.request() == "keep-alive"

    sigterm = time.monotonic()
    server.signal(signal.SIGTERM)
    await asyncio.sleep(0.1)
    assert await kept.request() == "close"  # its client reconnects, to another endpoint
    assert await kept.reader.read() == b""
    while await get(port, ca, "/readyz") != 503:
        assert time.monotonic() - sigterm < 1.0, "/readyz still 200 a second after SIGTERM"
    not_ready_after = time.monotonic() - sigterm
    # Finish the slow request after the listener closed and the settle second passed: it was in
    # flight, it is answered.
    while time.monotonic() - sigterm < DRAIN + 1.8:
        await asyncio.sleep(0.05)
    slow_answer = await slow.finish()
    code = await server.wait(timeout=GRACE + 5)
    exited_after = time.monotonic() - sigterm
    await load.stop()

    assert code == 0
    assert load.failures == []
    assert slow_answer == (200, "slow-1")
    assert not_ready_after < 0.5
    assert exited_after < GRACE
    during_drain = [t for t in load.ok_times if sigterm + 0.1 < t < sigterm + DRAIN - 0.1]
    assert len(during_drain) > 50  # the listener kept serving through the drain
    assert load.no_connection > 0  # ... and then refused: the clients went elsewhere
    events = [line["event"] for line in server.lines if line["event"].startswith("server.")]
    assert events == ["server.started", "server.draining", "server.closing", "server.stopped"]


async def test_exit_within_grace_when_a_request_never_completes(
    serve_process: Callable[[list[str]], ServeProcess],
    tls_material: TlsMaterial,
    state_dir: Path,
    tmp_path: Path,
) -> None:
    cert, key = tls_material.write(tmp_path)
    args = serve_args(cert, key, state_dir, "--drain-seconds", "0.5", "--grace-seconds", "2.5")
    server = serve_process(args)
    port = await server.start()
    stuck = SlowRequest(port, tls_material.ca_file)
    await stuck.begin()  # the rest of the body never comes
    await asyncio.sleep(0.2)
    sigterm = time.monotonic()
    server.signal(signal.SIGTERM)
    code = await server.wait(timeout=10)
    exited_after = time.monotonic() - sigterm
    assert code == 0
    assert 2.0 < exited_after < 3.0
    assert await stuck.reader.read() == b""  # cut at the end of grace, without an answer


async def test_sigint_stops_like_sigterm_but_exits_130_as_ctrl_c(
    serve_process: Callable[[list[str]], ServeProcess],
    tls_material: TlsMaterial,
    state_dir: Path,
    tmp_path: Path,
) -> None:
    """README "Commands": 130 Ctrl-C, for serve too; SIGTERM (a Pod's stop) stays 0."""
    cert, key = tls_material.write(tmp_path)
    server = serve_process(serve_args(cert, key, state_dir, "--drain-seconds", "0"))
    await server.start()
    server.signal(signal.SIGINT)
    assert await server.wait(timeout=10) == 130
    assert server.stderr == b""
    assert len(server.events("server.stopped")) == 1  # drained as on SIGTERM, not cut


async def test_a_failed_background_job_is_logged_and_serving_goes_on(
    tls_material: TlsMaterial, tmp_path: Path
) -> None:
    async def informer(runtime: Runtime) -> None:
        await asyncio.sleep(0.1)
        raise RuntimeError("watch broke")

    cert, key = tls_material.write(tmp_path)
    with structlog.testing.capture_logs() as logs:
        async with Server(serve_options(cert, key), background=[informer]) as server:
            await asyncio.sleep(0.3)
            assert await get(server.port, tls_material.ca_file, "/readyz") == 200
    (failure,) = [e for e in logs if e["event"] == "server.job_failed"]
    assert "informer" in failure["job"]
    assert isinstance(failure["exc_info"], RuntimeError)
