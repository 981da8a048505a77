"""What the serving tests drive a server with: TLS material, a Secret-style mount, steady load,
and a `python -m webhook serve` process.

The load client speaks HTTP/1.1 over real TLS sockets and accounts for every request: answered
(200 with the right uid), failed after a connection was made, or never connected (refused, or
reset before the TLS handshake finished: a client retries those elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from webhook import certs
from webhook.commands.demo import demo_cluster, sample_review
from webhook.config import parse_settings
from webhook.serving import Job, ServeOptions, serve

HOST = "127.0.0.1"
SETTINGS = parse_settings("{}", "config.yaml", Path())


@dataclass(frozen=True)
class Pair:
    cert_pem: bytes
    key_pem: bytes
    serial: str


@dataclass
class TlsMaterial:
    """A CA written to `ca_file` that issues serving pairs for 127.0.0.1 and localhost."""

    directory: Path
    ca_cert: x509.Certificate
    ca_key: certs.PrivateKey
    ca_file: Path

    def issue(self, key_type: certs.KeyType = "ecdsa", days: int = 30) -> Pair:
        cert, key = certs.issue_serving_cert(
            self.ca_cert, self.ca_key, ["localhost"], [HOST], days=days, key_type=key_type
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return Pair(
            cert.public_bytes(serialization.Encoding.PEM), key_pem, f"{cert.serial_number:x}"
        )

    def write(self, directory: Path, pair: Pair | None = None) -> tuple[Path, Path]:
        """Plain files tls.crt and tls.key in `directory`."""
        pair = pair or self.issue()
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "tls.crt").write_bytes(pair.cert_pem)
        (directory / "tls.key").write_bytes(pair.key_pem)
        return directory / "tls.crt", directory / "tls.key"


class SecretMount:
    """A folder laid out as kubelet mounts a `kubernetes.io/tls` Secret, updated as kubelet does.

    `tls.crt -> ..data/tls.crt`, `..data -> ..<timestamp>/`; an update writes a new timestamped
    folder, points `..data_tmp` at it and renames that over `..data` (atomic), then removes the old.
    """

    def __init__(self, directory: Path, pair: Pair) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._versions = itertools.count()
        self.update(pair)
        for name in ("tls.crt", "tls.key"):
            (directory / name).symlink_to(Path("..data") / name)

    @property
    def cert(self) -> Path:
        return self.directory / "tls.crt"

    @property
    def key(self) -> Path:
        return self.directory / "tls.key"

    def update(self, pair: Pair) -> None:
        self.write_files(pair.cert_pem, pair.key_pem)

    def write_files(self, cert_pem: bytes, key_pem: bytes) -> None:
        data = self.directory / "..data"
        old = os.readlink(data) if data.is_symlink() else None
        stamp = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{next(self._versions)}"
        version = self.directory / stamp
        version.mkdir()
        (version / "tls.crt").write_bytes(cert_pem)
        (version / "tls.key").write_bytes(key_pem)
        tmp = self.directory / "..data_tmp"
        tmp.symlink_to(stamp)
        tmp.rename(data)
        if old is not None:
            shutil.rmtree(self.directory / old)


def serial_of(der: bytes) -> str:
    return f"{x509.load_der_x509_certificate(der).serial_number:x}"


@dataclass
class LoadClient:
    """Steady admission load over keep-alive and new connections; every outcome is counted."""

    port: int
    ca_file: Path
    client_cert: tuple[Path, Path] | None = None
    namespace: str = "shop"
    ok: int = 0
    ok_times: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    no_connection: int = 0
    serials: list[tuple[float, str]] = field(default_factory=list)  # (time, serial) per connection

    def __post_init__(self) -> None:
        self.context = ssl.create_default_context(cafile=str(self.ca_file))
        if self.client_cert is not None:
            self.context.load_cert_chain(*self.client_cert)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._uids = itertools.count()

    def start(self, keepalive: int = 2, fresh: int = 2) -> None:
        self._tasks += [asyncio.create_task(self._keepalive_loop()) for _ in range(keepalive)]
        self._tasks += [asyncio.create_task(self._fresh_loop()) for _ in range(fresh)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), 20)

    def serials_since(self, moment: float) -> set[str]:
        return {serial for at, serial in self.serials if at >= moment}

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(HOST, self.port, ssl=self.context), 5
            )
        except (OSError, ssl.SSLError, TimeoutError):
            self.no_connection += 1
            await asyncio.sleep(0.02)
            return None
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        self.serials.append((time.monotonic(), serial_of(der)))
        return reader, writer

    async def _request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """One review; True when the connection may be reused."""
        uid = f"load-{next(self._uids)}"
        body = orjson.dumps(sample_review(uid, self.namespace, "web"))
        head = (
            f"POST /validate HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        try:
            writer.write(head.encode() + body)
            await writer.drain()
            status, headers, payload = await asyncio.wait_for(read_response(reader), 10)
            answer = orjson.loads(payload)
            if status != 200 or answer["response"]["uid"] != uid:
                self.failures.append(f"{uid}: HTTP {status} {payload[:200]!r}")
                return False
        except Exception as exc:
            self.failures.append(f"{uid}: {exc.__class__.__name__}: {exc}")
            return False
        self.ok += 1
        self.ok_times.append(time.monotonic())
        return headers.get("connection", "").lower() != "close"

    async def _keepalive_loop(self) -> None:
        conn = None
        while not self._stop.is_set():
            if conn is not None and conn[0].at_eof():  # closed while idle: as Go's client, redial
                await close(conn[1])
                conn = None
            if conn is None:
                conn = await self._connect()
                if conn is None:
                    continue
            if not await self._request(*conn):
                await close(conn[1])
                conn = None
        if conn is not None:
            await close(conn[1])

    async def _fresh_loop(self) -> None:
        while not self._stop.is_set():
            conn = await self._connect()
            if conn is not None:
                await self._request(*conn)
                await close(conn[1])


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed before a response")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 1)


class ServeProcess:
    """`python -m webhook serve ...` as a child process, its JSON log lines collected."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.lines: list[dict[str, Any]] = []
        self.stderr = b""
        self.proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []

    async def start(self, started: int = 1, timeout: float = 30) -> int:
        """Start, wait for `started` listeners; the port."""
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "webhook", "serve", *self.args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self._readers = [asyncio.create_task(self._read_stdout()), asyncio.create_task(self._err())]
        deadline = time.monotonic() + timeout
        while len(self.events("server.started")) < started:
            if self.proc.returncode is not None or time.monotonic() > deadline:
                await asyncio.sleep(0.2)
                raise AssertionError(f"serve did not start: {self.stderr.decode()} {self.lines}")
            await asyncio.sleep(0.05)
        return int(self.events("server.started")[0]["port"])

    async def _read_stdout(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            with contextlib.suppress(orjson.JSONDecodeError):
                self.lines.append(orjson.loads(line))

    async def _err(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        self.stderr = await self.proc.stderr.read()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == name]

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.wait_for(asyncio.gather(*self._readers), 5)
        return code

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


class Server:
    """`serving.serve` in this event loop, stopped through its `stop` event; exits `expect`."""

    def __init__(
        self, options: ServeOptions, background: list[Job] | None = None, expect: int = 0
    ) -> None:
        self.options = options
        self.background = background
        self.expect = expect
        self.stop = asyncio.Event()
        self.port = 0
        self.task: asyncio.Task[int] | None = None

    async def __aenter__(self) -> Server:
        ready = asyncio.Event()

        def started(port: int) -> None:
            self.port = port
            ready.set()

        self.task = asyncio.create_task(
            serve(
                self.options,
                SETTINGS,
                demo_cluster(),
                background=self.background,
                started=started,
                stop=self.stop,
            )
        )
        waiting = asyncio.create_task(ready.wait())
        done, _ = await asyncio.wait([self.task, waiting], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if self.task in done:
            self.task.result()  # raise what stopped it
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        assert await asyncio.wait_for(self.task, 30) == self.expect

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}"


def serve_options(cert: Path, key: Path, **extra: Any) -> ServeOptions:
    return ServeOptions(cert=cert, key=key, host=HOST, port=0, drain_seconds=0.0, **extra)
