"""Serving TLS over real loopback handshakes: protocol floor, ciphers, rotation under load, client CA.

Rotation follows a mounted Secret's update (the `..data` symlink swap) while keep-alive and
new-connection clients keep asking: no request may fail, new connections must see the new serial
within 10 s, and a broken pair must leave the old one in service, logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import shutil
import ssl
import time
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import structlog
import trustme
from serving_kit import HOST, LoadClient, SecretMount, Server, TlsMaterial, serve_options

from webhook import tls
from webhook.cli import main
from webhook.commands.demo import sample_review
from webhook.errors import InputError


async def metric(server: Server, ca_file: Path, name: str) -> dict[str, float]:
    """The samples of one metric family, by their label text."""
    context = ssl.create_default_context(cafile=str(ca_file))
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.get(server.url + "/metrics") as response,
    ):
        text = await response.text()
    samples = {}
    for line in text.splitlines():
        if line.startswith(name):
            labels, _, value = line[len(name) :].rpartition(" ")
            samples[labels] = float(value)
    return samples


# --- the protocol floor and the cipher list, as `openssl s_client` sees them -------------------


@pytest.fixture
async def rsa_server(tls_material: TlsMaterial, tmp_path: Path) -> AsyncIterator[Server]:
    """An RSA serving cert: weak RSA suites (no forward secrecy, CBC) would be possible if offered."""
    cert, key = tls_material.write(tmp_path, tls_material.issue(key_type="rsa"))
    async with Server(serve_options(cert, key)) as server:
        yield server


async def s_client(port: int, ca_file: Path, *flags: str) -> str:
    """The protocol and cipher `openssl s_client` negotiated, or '' when the handshake failed."""
    proc = await asyncio.create_subprocess_exec(
        "openssl", "s_client", "-connect", f"{HOST}:{port}", "-CAfile", str(ca_file), *flags,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("New, ") and "(NONE)" not in line:
            return line.removeprefix("New, ")  # "TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384"
    return ""


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["-tls1_3"], "TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384"),
        (["-tls1_2"], "TLSv1.2, Cipher is ECDHE-RSA-AES256-GCM-SHA384"),
        (["-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305"], "ECDHE-RSA-CHACHA20-POLY1305"),
        # refused: below the floor, though the client is willing (security level 0)
        (["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"], ""),
        (["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"], ""),
        # refused: TLS 1.2 suites without forward secrecy, or CBC/SHA-1
        (["-tls1_2", "-cipher", "AES128-GCM-SHA256"], ""),
        (["-tls1_2", "-cipher", "AES256-SHA256"], ""),
        (["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA@SECLEVEL=0"], ""),
        (["-tls1_2", "-cipher", "ECDHE-RSA-AES256-SHA384"], ""),
        (["-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256"], ""),
    ],
)
async def test_protocol_floor_and_ciphers(
    rsa_server: Server, tls_material: TlsMaterial, flags: list[str], expected: str
) -> None:
    negotiated = await s_client(rsa_server.port, tls_material.ca_file, *flags)
    if expected:
        assert expected in negotiated
    else:
        assert negotiated == ""


async def test_weak_python_client_is_refused(rsa_server: Server, tls_material: TlsMaterial) -> None:
    context = ssl.create_default_context(cafile=str(tls_material.ca_file))
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # exactly what it is about
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.open_connection(HOST, rsa_server.port, ssl=context)


# --- rotation -----------------------------------------------------------------------------------


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until `condition` held; fails after `timeout`."""
    begin = time.monotonic()
    while not condition():
        if time.monotonic() - begin > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - begin


async def test_secret_rotation_under_load(tls_material: TlsMaterial, tmp_path: Path) -> None:
    first, second, third = (tls_material.issue() for _ in range(3))
    mount = SecretMount(tmp_path / "tls", first)
    with structlog.testing.capture_logs() as logs:
        async with Server(serve_options(mount.cert, mount.key)) as server:
            load = LoadClient(server.port, tls_material.ca_file)
            load.start(keepalive=2, fresh=2)
            await wait_for(lambda: load.ok > 20, 10, "load running")
            assert load.serials_since(0) == {first.serial}

            rotated = time.monotonic()
            mount.update(second)
            seconds = await wait_for(
                lambda: second.serial in load.serials_since(rotated), 10, "new serial seen"
            )
            settled = time.monotonic() + 0.2
            await wait_for(lambda: load.ok_times[-1] > settled + 0.5, 5, "more answers")
            assert load.serials_since(settled) == {second.serial}

            # broken pairs: a key of another cert, then a key file cut short; the second stays
            mount.write_files(third.cert_pem, first.key_pem)
            await wait_for(lambda: len(rejected(logs)) == 1, 10, "mismatched pair rejected")
            mount.write_files(third.cert_pem, third.key_pem[:100])
            await wait_for(lambda: len(rejected(logs)) == 2, 10, "truncated key rejected")
            after_rejects = time.monotonic()
            await wait_for(lambda: load.ok_times[-1] > after_rejects + 0.5, 5, "more answers")
            assert load.serials_since(after_rejects) == {second.serial}

            reloads = await metric(server, tls_material.ca_file, "kubefence_certificate_reloads")
            expiry = await metric(server, tls_material.ca_file, "kubefence_certificate_not_after")
            await load.stop()
    assert load.failures == []
    assert load.no_connection == 0
    assert load.ok > 100
    assert seconds < 10
    assert reloads['_total{result="applied"}'] == 1
    assert reloads['_total{result="rejected"}'] == 2
    assert (
        expiry["_timestamp_seconds"]
        == tls.load_pair(*tls_material.write(tmp_path / "s", second)).not_after
    )
    assert "does not match" in rejected(logs)[0]["reason"]
    assert "not a PEM private key" in rejected(logs)[1]["reason"]
    applied = [e for e in logs if e["event"] == "certificate.reloaded"]
    assert [e["serial"] for e in applied] == [second.serial]


def rejected(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "certificate.rejected"]


def test_reloader_applies_a_change_once_it_stands_still(
    tls_material: TlsMaterial, tmp_path: Path
) -> None:
    first, second = tls_material.issue(), tls_material.issue()
    cert, key = tls_material.write(tmp_path, first)
    results: list[tuple[str, str]] = []
    reloader = tls.CertificateReloader(
        cert, key, on_result=lambda r, pair, reason: results.append((r, reason))
    )
    assert reloader.check() is None
    cert.write_bytes(second.cert_pem)  # the key is not there yet
    assert reloader.check() is None  # seen moving: wait one more poll
    key.write_bytes(second.key_pem)
    assert reloader.check() is None  # moved again
    assert reloader.check() == "applied"
    assert reloader.pair.serial == second.serial
    assert reloader.check() is None
    assert results == [("applied", "")]


def test_reloader_keeps_the_old_pair_and_reports_once(
    tls_material: TlsMaterial, tmp_path: Path
) -> None:
    first = tls_material.issue()
    cert, key = tls_material.write(tmp_path, first)
    results: list[str] = []
    reloader = tls.CertificateReloader(cert, key, on_result=lambda r, p, why: results.append(r))
    cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nbroken\n")
    assert [reloader.check(), reloader.check(), reloader.check()] == [None, "rejected", None]
    assert reloader.pair.serial == first.serial
    key.unlink()
    cert.write_bytes(first.cert_pem)
    assert [reloader.check(), reloader.check()] == [None, "rejected"]
    assert results == ["rejected", "rejected"]


def test_an_expired_pair_is_refused(tls_material: TlsMaterial, tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert(HOST, not_after=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    with pytest.raises(InputError, match=r"tls.crt: certificate expired on 2020-01-01"):
        tls.load_pair(cert, key)


# --- client certificates ------------------------------------------------------------------------


@pytest.fixture
async def mtls_server(
    tls_material: TlsMaterial, tmp_path: Path
) -> AsyncIterator[tuple[Server, trustme.CA, Path]]:
    clients = trustme.CA(organization_name="cluster")
    client_ca = tmp_path / "client-ca.crt"
    clients.cert_pem.write_to_path(str(client_ca))
    cert, key = tls_material.write(tmp_path / "serving")
    async with Server(serve_options(cert, key, client_ca=client_ca)) as server:
        yield server, clients, tmp_path


def client_files(ca: trustme.CA, directory: Path, name: str) -> tuple[Path, Path]:
    leaf = ca.issue_cert(f"{name}.client", common_name=name, organization_name="system:masters")
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


async def post_review(
    server: Server, ca_file: Path, client: tuple[Path, Path] | None
) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=str(ca_file))
    if client is not None:
        context.load_cert_chain(*client)
    body = orjson.dumps(sample_review("mtls-1", "sandbox", "web"))
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.post(server.url + "/validate", data=body) as response,
    ):
        assert response.status == 200
        return orjson.loads(await response.read())  # type: ignore[no-any-return]


async def test_client_certificate_required_and_logged(
    mtls_server: tuple[Server, trustme.CA, Path], tls_material: TlsMaterial
) -> None:
    server, clients, tmp = mtls_server
    with structlog.testing.capture_logs() as logs:
        answer = await post_review(
            server, tls_material.ca_file, client_files(clients, tmp, "kube-apiserver")
        )
    assert answer["response"]["uid"] == "mtls-1"
    (decision,) = [e for e in logs if e["event"] == "admission.decision"]
    assert "commonName=kube-apiserver" in decision["client"]
    assert "organizationName=system:masters" in decision["client"]


@pytest.mark.parametrize("who", ["none", "stranger"])
async def test_handshake_fails_without_a_valid_client_certificate(
    mtls_server: tuple[Server, trustme.CA, Path], tls_material: TlsMaterial, who: str
) -> None:
    server, _, tmp = mtls_server
    client = client_files(trustme.CA(), tmp, "mallory") if who == "stranger" else None
    with (
        structlog.testing.capture_logs() as logs,
        pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)),
    ):
        await post_review(server, tls_material.ca_file, client)
    assert [e for e in logs if e["event"] == "admission.decision"] == []


async def test_refused_handshakes_are_counted_by_kind(
    mtls_server: tuple[Server, trustme.CA, Path], tls_material: TlsMaterial
) -> None:
    """A client the client CA turns away reaches no handler: the counter is its only trace."""
    server, clients, tmp = mtls_server
    stranger = client_files(trustme.CA(), tmp, "mallory")
    for client in (None, None, stranger):
        with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
            await post_review(server, tls_material.ca_file, client)
    # Plain HTTP to the TLS port, once (an HTTP client would retry the GET on the reset).
    reader, writer = await asyncio.open_connection(HOST, server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: kubefence\r\n\r\n")
    await writer.drain()
    with contextlib.suppress(ConnectionError):
        await reader.read()  # until the server closes
    writer.close()
    await post_review(server, tls_material.ca_file, client_files(clients, tmp, "kube-apiserver"))
    context = ssl.create_default_context(cafile=str(tls_material.ca_file))
    context.load_cert_chain(*client_files(clients, tmp, "scraper"))
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.get(server.url + "/metrics") as response,
    ):
        text = await response.text()
    counts = {
        line.split('"')[1]: float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("kubefence_tls_handshake_failures_total{")
    }
    assert counts == {
        "no_client_certificate": 2.0,
        "untrusted_client_certificate": 1.0,
        "not_tls": 1.0,
        "protocol": 0.0,
        "other": 0.0,
    }


async def test_probe_port_answers_without_a_client_certificate(
    tls_material: TlsMaterial, tmp_path: Path
) -> None:
    client_ca = tmp_path / "client-ca.crt"
    trustme.CA().cert_pem.write_to_path(str(client_ca))
    cert, key = tls_material.write(tmp_path)
    statuses = {}
    with structlog.testing.capture_logs() as logs:
        async with Server(serve_options(cert, key, client_ca=client_ca, probe_port=0)):
            (started,) = [e for e in logs if e["event"] == "server.started"]
            async with aiohttp.ClientSession() as session:
                for path in ("/healthz", "/readyz", "/metrics", "/validate"):
                    url = f"http://{HOST}:{started['probe_port']}{path}"
                    async with session.get(url) as response:
                        statuses[path] = response.status
                        assert "Server" not in response.headers, path
    assert statuses == {"/healthz": 200, "/readyz": 200, "/metrics": 200, "/validate": 404}


# --- start-up errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("missing-cert", "tls.crt: no such certificate file"),
        ("garbage-cert", "tls.crt: not a PEM certificate"),
        ("garbage-key", "tls.key: not a PEM private key"),
        ("other-key", "tls.key: key does not match the certificate in"),
        ("garbage-ca", "ca.pem: not a PEM certificate"),
        ("directory-key", "tls.key: is a directory, not a key file"),
    ],
)
def test_startup_errors_are_one_line_naming_the_file(
    tls_material: TlsMaterial,
    tmp_path: Path,
    state_dir: Path,
    *,
    capsys: pytest.CaptureFixture[str],
    change: str,
    message: str,
) -> None:
    cert, key = tls_material.write(tmp_path)
    ca = tmp_path / "ca.pem"
    ca.write_bytes(tls_material.ca_file.read_bytes())
    if change == "missing-cert":
        cert.unlink()
    elif change == "garbage-cert":
        cert.write_text("not a certificate\n")
    elif change == "garbage-key":
        key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    elif change == "other-key":
        key.write_bytes(tls_material.issue().key_pem)
    elif change == "garbage-ca":
        ca.write_text("junk")
    elif change == "directory-key":
        key.unlink()
        key.mkdir()
    argv = ["serve", "--state", str(state_dir), "--cert", str(cert), "--key", str(key)]
    code = main([*argv, "--client-ca", str(ca), "--host", HOST, "--port", "0"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.startswith("kubefence serve: ")
    assert err.count("\n") == 1
