"""A `kubefence monitor` in-process over real TLS, and EventList bodies: shared by the monitor's
server tests."""

from __future__ import annotations

import asyncio
import contextlib
import io
import ssl
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

import aiohttp
import structlog
import trustme
from correlate_kit import WEBHOOK

from webhook.correlate.model import CorrelateOptions
from webhook.monitor.canary import CanaryWatch
from webhook.monitor.feed import Feed
from webhook.monitor.server import MonitorOptions, MonitorRuntime, run_monitor

OPTIONS = CorrelateOptions(webhook_names=(WEBHOOK,), exempt_namespaces=frozenset({"kube-system"}))


class Monitor:
    def __init__(
        self,
        tmp: Path,
        *,
        mtls: bool,
        token: bytes | None = None,
        client_subjects: tuple[str, ...] = (),
    ) -> None:
        self.ca = trustme.CA()
        self.clients = trustme.CA()
        self.tmp = tmp
        server = self.ca.issue_cert("127.0.0.1")
        self.cert, self.key = tmp / "tls.crt", tmp / "tls.key"
        server.cert_chain_pems[0].write_to_path(str(self.cert))
        server.private_key_pem.write_to_path(str(self.key))
        client_ca = None
        if mtls:
            client_ca = tmp / "client-ca.crt"
            self.clients.cert_pem.write_to_path(str(client_ca))
        token_file = None
        if token is not None:
            token_file = tmp / "token"
            token_file.write_bytes(token + b"\n")
        self.options = MonitorOptions(
            self.cert, self.key, client_ca=client_ca, token_file=token_file, port=0, drain_seconds=0
        )
        self.runtime = MonitorRuntime(
            feed=Feed(OPTIONS, CanaryWatch(60.0)),
            log=structlog.get_logger(),
            token=token,
            client_subjects=client_subjects,
        )
        self.port = 0

    def context(self, with_cert: bool = True, client: str = "kube-apiserver") -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        if with_cert:
            self.clients.issue_cert("sender.client", common_name=client).configure_cert(context)
        return context

    async def post(
        self,
        body: bytes | io.BytesIO | AsyncIterable[bytes],
        *,
        with_cert: bool = True,
        headers: dict[str, str] | None = None,
        client: str = "kube-apiserver",
    ) -> tuple[int, bytes]:
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.context(with_cert, client))
            ) as session,
            session.post(
                f"https://127.0.0.1:{self.port}/audit", data=body, headers=headers
            ) as response,
        ):
            return response.status, await response.read()

    async def metrics(self) -> str:
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.context())) as session,
            session.get(f"https://127.0.0.1:{self.port}/metrics") as response,
        ):
            return (await response.read()).decode()


def event_list(events: list[bytes]) -> bytes:
    return (
        b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":['
        + b",".join(e.strip() for e in events)
        + b"]}"
    )


@contextlib.asynccontextmanager
async def running(m: Monitor) -> AsyncIterator[Monitor]:
    """`m` serving on a free port until the block ends; it must then stop with exit code 0."""
    stop = asyncio.Event()
    started = asyncio.Event()

    def on_start(port: int) -> None:
        m.port = port
        started.set()

    task = asyncio.create_task(run_monitor(m.options, m.runtime, started=on_start, stop=stop))
    await asyncio.wait_for(started.wait(), 10)
    try:
        yield m
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 10) == 0
