"""kubectl's habits in every command that reaches a cluster: `--context`, `-n`, `-o`, `KUBECONFIG`
as a list merged as kubectl merges it, and an API server that cannot be reached said in words.

`scan` runs in-process against small plain-HTTP API servers (each answers its LISTs and records
the paths asked), or against ports where nothing listens or a TLS server the kubeconfig does not
trust.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from webhook.cli import main

NAMESPACES = ["shop", "sandbox"]


class FakeApi:
    """A plain-HTTP API server with two unfenced namespaces and nothing else; `paths` is what
    it was asked."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.paths.append(self.path.split("?")[0])
                path = self.path.split("?")[0]
                body: dict[str, Any] = {"kind": "List", "metadata": {}, "items": []}
                if path == "/api/v1/namespaces":
                    body["items"] = [
                        {"metadata": {"name": n, "labels": {"kubernetes.io/metadata.name": n}}}
                        for n in NAMESPACES
                    ]
                elif path == "/apis/":
                    body = {"kind": "APIGroupList", "groups": []}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def apis() -> Iterator[tuple[FakeApi, FakeApi]]:
    first, second = FakeApi(), FakeApi()
    try:
        yield first, second
    finally:
        first.close()
        second.close()


@pytest.fixture(autouse=True)
def _outside_a_pod(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))


def kubeconfig(
    path: Path,
    *,
    current: str | None,
    contexts: dict[str, str],
    clusters: dict[str, str],
    users: str = "[{name: u, user: {token: t}}]",
) -> Path:
    """A kubeconfig: contexts by name -> cluster name, clusters by name -> server (a YAML map
    of the cluster's fields when it starts with `{`)."""
    lines = ["apiVersion: v1", "kind: Config"]
    if current is not None:
        lines.append(f"current-context: {current}")
    lines.append("contexts:")
    lines += [f"- {{name: {n}, context: {{cluster: {c}, user: u}}}}" for n, c in contexts.items()]
    lines.append("clusters:")
    for name, server in clusters.items():
        body = server if server.startswith("{") else f"{{server: '{server}'}}"
        lines.append(f"- {{name: {name}, cluster: {body}}}")
    lines.append(f"users: {users}")
    path.write_text("\n".join(lines) + "\n")
    return path


def scan(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    # --strict: these tests ask which cluster scan read, told by its findings; an unfenced
    # namespace without workloads is advisory, exit 0 without it.
    code = main(["scan", "--strict", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- KUBECONFIG as a list, merged as client-go merges it ----------------------------------------


def test_the_first_file_to_set_current_context_wins(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    apis: tuple[FakeApi, FakeApi],
) -> None:
    first, second = apis
    a = kubeconfig(tmp_path / "a", current="one", contexts={"one": "k1"}, clusters={"k1": first.url})  # fmt: skip
    b = kubeconfig(tmp_path / "b", current="two", contexts={"two": "k2"}, clusters={"k2": second.url})  # fmt: skip
    monkeypatch.setenv("KUBECONFIG", f"{a}:{b}")
    code, _, err = scan(capsys)
    assert code == 1, err  # two unfenced namespaces
    assert first.paths
    assert second.paths == []  # kubectl too: the first current-context, not the last


def test_a_file_without_current_context_leaves_it_to_the_next(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    apis: tuple[FakeApi, FakeApi],
) -> None:
    first, _ = apis
    a = kubeconfig(tmp_path / "a", current=None, contexts={"one": "k1"}, clusters={"k1": first.url})  # fmt: skip
    b = kubeconfig(tmp_path / "b", current="one", contexts={}, clusters={})
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}:{a}:{b}")  # a missing one is skipped
    assert scan(capsys)[0] == 1
    assert first.paths


def test_the_first_file_to_define_a_name_wins_whole(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    apis: tuple[FakeApi, FakeApi],
) -> None:
    first, second = apis
    a = kubeconfig(tmp_path / "a", current="c", contexts={"c": "k"}, clusters={"k": first.url})
    b = kubeconfig(tmp_path / "b", current="c", contexts={"c": "k"}, clusters={"k": second.url})
    monkeypatch.setenv("KUBECONFIG", f"{a}:{b}")
    assert scan(capsys)[0] == 1
    assert (bool(first.paths), bool(second.paths)) == (True, False)


def test_a_relative_file_is_read_beside_the_file_its_entry_came_from(tmp_path: Path) -> None:
    ca = trustme.CA()
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    ca.cert_pem.write_to_path(str(tmp_path / "two" / "ca.crt"))
    a = kubeconfig(tmp_path / "one" / "config", current="c", contexts={"c": "k"}, clusters={})
    b = kubeconfig(
        tmp_path / "two" / "config",
        current=None,
        contexts={},
        clusters={"k": "{server: 'https://127.0.0.1:1', certificate-authority: ca.crt}"},
    )
    from webhook.cluster.kubeconfig import CredentialsError, load

    loaded = load([a, b])
    (cluster,) = loaded.document["clusters"]
    assert cluster["cluster"]["certificate-authority"] == str((tmp_path / "two" / "ca.crt").absolute())  # fmt: skip
    with pytest.raises(CredentialsError, match=r"two/config: clusters\[0\]\.cluster\.certificate-authority"):  # fmt: skip
        load([a, kubeconfig(tmp_path / "two" / "config", current=None, contexts={}, clusters={"k": "{server: 'https://h:1', certificate-authority: gone.crt}"})])  # fmt: skip


# --- --context ----------------------------------------------------------------------------------


def test_context_picks_another_context_of_the_kubeconfig(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, apis: tuple[FakeApi, FakeApi]
) -> None:
    first, second = apis
    path = kubeconfig(
        tmp_path / "k",
        current="one",
        contexts={"one": "k1", "two": "k2"},
        clusters={"k1": first.url, "k2": second.url},
    )
    assert scan(capsys, "--kubeconfig", str(path), "--context", "two")[0] == 1
    assert (bool(first.paths), bool(second.paths)) == (False, True)


def test_context_works_on_the_kubeconfig_env_too(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    apis: tuple[FakeApi, FakeApi],
) -> None:
    _, second = apis
    path = kubeconfig(tmp_path / "k", current=None, contexts={"two": "k2"}, clusters={"k2": second.url})  # fmt: skip
    monkeypatch.setenv("KUBECONFIG", str(path))
    assert scan(capsys, "--context", "two")[0] == 1
    assert second.paths


def test_an_unknown_context_is_one_line_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = kubeconfig(tmp_path / "k", current="one", contexts={"one": "k"}, clusters={"k": "http://127.0.0.1:1"})  # fmt: skip
    code, out, err = scan(capsys, "--kubeconfig", str(path), "--context", "nope")
    assert (code, out) == (2, "")
    assert err == (
        f"kubefence scan: {path}: cannot load cluster credentials: --context nope:"
        " no entry named 'nope' in contexts\n"
    )


def test_context_is_refused_with_state(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = scan(capsys, "--state", str(tmp_path), "--context", "x")
    assert code == 2
    assert err == "kubefence scan: --context names a kubeconfig context: not with --state DIR\n"


# --- -n/--namespace and -o ----------------------------------------------------------------------


def test_namespace_reads_and_reports_only_that_namespace(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, apis: tuple[FakeApi, FakeApi]
) -> None:
    first, _ = apis
    path = kubeconfig(tmp_path / "k", current="c", contexts={"c": "k"}, clusters={"k": first.url})
    code, out, err = scan(capsys, "--kubeconfig", str(path), "-n", "shop", "-o", "json")
    assert code == 1, err
    report = json.loads(out)
    assert [f["namespace"] for f in report["unfenced"]] == ["shop"]
    asked = set(first.paths) - {"/api/v1/namespaces", "/apis/"}
    assert asked
    assert all(p.startswith(("/api/v1/namespaces/shop/", "/apis/")) for p in asked), asked
    assert all("/namespaces/shop/" in p for p in asked), asked
    assert not any("clusterrole" in p for p in first.paths)


def test_namespace_that_does_not_exist_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, apis: tuple[FakeApi, FakeApi]
) -> None:
    path = kubeconfig(tmp_path / "k", current="c", contexts={"c": "k"}, clusters={"k": apis[0].url})  # fmt: skip
    code, out, err = scan(capsys, "--kubeconfig", str(path), "--namespace", "nope")
    assert (code, out) == (2, "")
    assert err == "kubefence scan: --namespace nope: no such namespace\n"


def test_namespace_narrows_a_state_folder_too(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "ns.yaml").write_text(
        "".join(
            f"---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {n}}}\n" for n in NAMESPACES
        )
    )
    code, out, _ = scan(capsys, "--state", str(tmp_path), "-n", "sandbox", "--output", "json")
    assert code == 1
    assert [f["namespace"] for f in json.loads(out)["unfenced"]] == ["sandbox"]


# --- an API server that cannot be reached, in words ---------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_refused_connection_is_one_line_in_words(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    server = f"http://127.0.0.1:{_free_port()}"
    path = kubeconfig(tmp_path / "k", current="c", contexts={"c": "k"}, clusters={"k": server})
    code, out, err = scan(capsys, "--kubeconfig", str(path))
    assert (code, out) == (2, "")
    assert err == (
        f"kubefence scan: {server}: cannot reach the API server:"
        " connection refused (nothing listens on that port)\n"
    )


class TlsServer:
    """Accepts TLS handshakes with `cert` (and nothing more) until closed."""

    def __init__(self, cert: trustme.LeafCert) -> None:
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self._context)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            try:
                with self._context.wrap_socket(raw, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                pass

    def close(self) -> None:
        self._listener.close()


@pytest.mark.parametrize(
    ("issued_for", "trusted", "words"),
    [
        ("127.0.0.1", False, "TLS certificate not trusted ("),
        ("elsewhere.example", True, "TLS hostname mismatch: the server's certificate is not valid for the IP address"),
    ],
)  # fmt: skip
def test_a_tls_failure_is_one_line_in_words(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    issued_for: str,
    trusted: bool,
    words: str,
) -> None:
    ca, other = trustme.CA(), trustme.CA()
    server = TlsServer(ca.issue_cert(issued_for))
    try:
        (ca if trusted else other).cert_pem.write_to_path(str(tmp_path / "ca.crt"))
        url = f"https://127.0.0.1:{server.port}"
        body = f"{{server: '{url}', certificate-authority: ca.crt}}"
        path = kubeconfig(tmp_path / "k", current="c", contexts={"c": "k"}, clusters={"k": body})
        code, out, err = scan(capsys, "--kubeconfig", str(path))
    finally:
        server.close()
    assert (code, out) == (2, "")
    assert err.startswith(f"kubefence scan: {url}: cannot reach the API server: {words}")
    assert err.count("\n") == 1
    assert "HTTPSConnectionPool" not in err


def test_o_is_the_short_form_of_format_in_correlate_too(capsys: pytest.CaptureFixture[str]) -> None:
    logs = Path(__file__).parent / "fixtures" / "correlate"
    argv = ["correlate", "--audit-log", str(logs / "edge.audit.log"), "--decision-log", str(logs / "edge.decisions.log")]  # fmt: skip
    main([*argv, "-o", "json"])
    assert "summary" in json.loads(capsys.readouterr().out)


def test_a_server_that_never_accepts_is_timed_out_connecting(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listener whose backlog is full drops the SYN: the connect waits for CONNECT_TIMEOUT
    (30 s, as kubectl's dialer; 1 s here), once."""
    from webhook.cluster import transport

    monkeypatch.setattr(transport, "CONNECT_TIMEOUT", 1.0)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        try:
            server = f"http://127.0.0.1:{port}"
            path = kubeconfig(tmp_path / "k", current="c", contexts={"c": "k"}, clusters={"k": server})  # fmt: skip
            code, out, err = scan(capsys, "--kubeconfig", str(path))
        finally:
            for filler in fillers:
                filler.close()
    assert (code, out) == (2, "")
    assert err == f"kubefence scan: {server}: cannot reach the API server: timed out connecting\n"


def test_check_takes_the_cluster_of_a_context(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    apis: tuple[FakeApi, FakeApi],
) -> None:
    """`check --context NAME` applies the manifests to that context's cluster ($KUBECONFIG)."""
    first, second = apis
    path = kubeconfig(
        tmp_path / "k",
        current="one",
        contexts={"one": "k1", "two": "k2"},
        clusters={"k1": first.url, "k2": second.url},
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    (tmp_path / "pod.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop}\n"
        "spec: {containers: [{name: c, image: nginx}]}\n"
    )
    code = main(["check", str(tmp_path / "pod.yaml"), "--context", "two"])
    capsys.readouterr()
    assert code == 1  # shop is not fenced in that cluster
    assert (bool(first.paths), bool(second.paths)) == (False, True)


@pytest.mark.parametrize("command", ["serve", "monitor"])
def test_serve_and_monitor_take_context_too(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    """Their credentials are checked before serving: an unknown context is one line, exit 2."""
    certs = tmp_path / "certs"
    assert main(["certs", "generate", "--service", "kf", "--namespace", "ns", "--out", str(certs)]) == 0  # fmt: skip
    path = kubeconfig(tmp_path / "k", current="one", contexts={"one": "k"}, clusters={"k": "http://127.0.0.1:1"})  # fmt: skip
    argv = [command, "--cert", str(certs / "tls.crt"), "--key", str(certs / "tls.key"), "--port", "0"]  # fmt: skip
    if command == "monitor":
        argv += ["--insecure-allow-unauthenticated", "--canary", "5", "--canary-configmap", "a/b"]
    capsys.readouterr()
    code = main([*argv, "--kubeconfig", str(path), "--context", "nope"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (
        f"kubefence {command}: {path}: cannot load cluster credentials: --context nope:"
        " no entry named 'nope' in contexts\n"
    )
