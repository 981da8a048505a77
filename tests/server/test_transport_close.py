"""The API client closes every connection it opened, also when the server never says goodbye.

A watch is dropped mid-stream by closing its connection; over TLS that close is a handshake
(close_notify, then the peer's). A server that never answers it (a slow one, a busy one, one being
restarted) left the socket open until the event loop went away, and a ResourceWarning ("unclosed
transport", "unclosed socket") surfaced at some later garbage collection, in whatever test was
running then (issue 19, item 15). Here the server never answers: once `transport.close` returns
and the loop is gone, nothing of the connection may be left to collect.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from webhook.cluster import transport

WATCH_EVENT = b'{"type":"ADDED","object":{"kind":"Namespace","metadata":{"name":"a"}}}\n'


class SilentTlsServer:
    """Answers one watch request with one event, then never reads or writes again."""

    def __init__(self, ca: trustme.CA) -> None:
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(self._context)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._held: list[ssl.SSLSocket] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with self._listener:
            while not self._done.is_set():
                try:
                    raw, _ = self._listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                raw.settimeout(None)
                conn = self._context.wrap_socket(raw, server_side=True)
                self._held.append(conn)
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(4096)
                if b"watch=1" in request.split(b"\r\n", 1)[0]:
                    chunk = b"%x\r\n%s\r\n" % (len(WATCH_EVENT), WATCH_EVENT)
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n" + chunk
                    )
                else:  # a LIST whose body stops short
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b'Content-Length: 1000\r\n\r\n{"items": ['
                    )
                # Then nothing: no more bytes, no reply to the client's close_notify.

    def close(self) -> None:
        self._done.set()
        self._listener.close()
        self._thread.join(5)
        for conn in self._held:
            conn.close()


@pytest.fixture
def silent_server() -> Iterator[tuple[SilentTlsServer, trustme.CA]]:
    ca = trustme.CA()
    server = SilentTlsServer(ca)
    try:
        yield server, ca
    finally:
        server.close()


def _kubeconfig(tmp_path: Path, port: int, ca: trustme.CA) -> Path:
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
        f"clusters: [{{name: k, cluster: {{server: 'https://127.0.0.1:{port}',"
        " certificate-authority: ca.crt}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
    )
    return path


def _open_sockets_to(port: int) -> list[socket.socket]:
    return [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, socket.socket) and obj.fileno() != -1 and _peer_port(obj) == port
    ]


def _peer_port(sock: socket.socket) -> int | None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        return int(sock.getpeername()[1])
    except OSError:
        return None


async def _watch_one_event_then_drop_it(kubeconfig: Path, port: int) -> bytes:
    api, _ = await transport.connect(kubeconfig)
    try:
        kube = transport.KubeTransport(api)
        async with kube.watch("/api/v1/namespaces", [("watch", "1")], timeout=10) as lines:
            event = await lines.readline()
            assert len(_open_sockets_to(port)) == 1
    finally:
        await transport.close(api)
    assert _open_sockets_to(port) == []  # closed on return, not on some later turn of the loop
    return event


def test_a_dropped_watch_leaves_no_socket_behind_when_the_server_never_answers_the_close(
    silent_server: tuple[SilentTlsServer, trustme.CA], tmp_path: Path
) -> None:
    server, ca = silent_server
    kubeconfig = _kubeconfig(tmp_path, server.port, ca)
    gc.collect()  # what earlier tests left is theirs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        # Its own loop, closed as soon as the client is: as a test's or a command's would be.
        assert asyncio.run(_watch_one_event_then_drop_it(kubeconfig, server.port)) == WATCH_EVENT
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


async def _list_until_the_timeout(kubeconfig: Path, port: int) -> None:
    api, _ = await transport.connect(kubeconfig)
    try:
        with pytest.raises(TimeoutError):
            await transport.KubeTransport(api).get("/api/v1/namespaces", timeout=0.5)
    finally:
        await transport.close(api)
    assert _open_sockets_to(port) == []


def test_a_read_cut_by_its_timeout_leaves_no_socket_behind_either(
    silent_server: tuple[SilentTlsServer, trustme.CA], tmp_path: Path
) -> None:
    server, ca = silent_server
    kubeconfig = _kubeconfig(tmp_path, server.port, ca)
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        asyncio.run(_list_until_the_timeout(kubeconfig, server.port))
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
