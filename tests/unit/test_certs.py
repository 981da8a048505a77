"""Certificates as a client sees them: names, usages, files on disk, and a real TLS handshake."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from webhook import certs
from webhook.cli import main
from webhook.errors import InputError

SERVICE, NAMESPACE = "kubefence", "kubefence-system"


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _fingerprint(path: Path) -> bytes:
    return _cert(path).fingerprint(hashes.SHA256())


def _sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return set(san.get_values_for_type(x509.DNSName)), ips


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _generate(out: Path, *extra: str) -> int:
    return main(
        [
            "certs",
            "generate",
            "--service",
            SERVICE,
            "--namespace",
            NAMESPACE,
            "--out",
            str(out),
            *extra,
        ]
    )


def _verify(ca: Path, leaf: Path, name: x509.DNSName | x509.IPAddress) -> None:
    store = Store([_cert(ca)])
    PolicyBuilder().store(store).build_server_verifier(name).verify(_cert(leaf), [])


def _handshake(ca_file: Path, cert_file: Path, key_file: Path, hostname: str) -> str:
    """Serve cert_file on 127.0.0.1, connect trusting ca_file alone; return what the server sent."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    server_ctx.load_cert_chain(cert_file, key_file)
    client_ctx = ssl.create_default_context(cafile=str(ca_file))  # trusts ca_file alone
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # as Python 3.13+ and Go's crypto/tls
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"hello over tls")
            except (ssl.SSLError, OSError):
                pass  # the client refused the certificate

        server = threading.Thread(target=serve)
        server.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client_ctx.wrap_socket(raw, server_hostname=hostname) as tls,
            ):
                return tls.recv(100).decode()
        finally:
            server.join(timeout=10)


# --- the library -----------------------------------------------------------------------------


def test_serving_cert_names_usages_and_key() -> None:
    ca_cert, ca_key = certs.generate_ca()
    cert, key = certs.issue_serving_cert(ca_cert, ca_key, ["svc", "svc.ns.svc"], ["10.0.0.1"])

    assert _sans(cert) == ({"svc", "svc.ns.svc"}, {"10.0.0.1"})
    assert cert.subject.rfc4514_string() == "CN=svc"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert not bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature
    assert not ku.key_encipherment
    assert not ku.key_cert_sign
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    # Tolerates a few minutes of clock skew between the issuer and the API server.
    assert cert.not_valid_before_utc < dt.datetime.now(dt.UTC) - dt.timedelta(minutes=4)
    cert.verify_directly_issued_by(ca_cert)


def test_rsa_serving_cert() -> None:
    ca_cert, ca_key = certs.generate_ca(key_type="rsa")
    cert, key = certs.issue_serving_cert(ca_cert, ca_key, ["svc"], [], key_type="rsa")
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature
    assert ku.key_encipherment


def test_serving_cert_never_outlives_its_ca() -> None:
    ca_cert, ca_key = certs.generate_ca(days=30)
    cert, _ = certs.issue_serving_cert(ca_cert, ca_key, ["svc"], [], days=365)
    assert cert.not_valid_after_utc == ca_cert.not_valid_after_utc


def test_service_dns_names() -> None:
    assert certs.service_dns_names("wh", "sec") == [
        "wh",
        "wh.sec",
        "wh.sec.svc",
        "wh.sec.svc.cluster.local",
    ]


def test_ca_bundle_is_base64_of_the_pem() -> None:
    ca_cert, _ = certs.generate_ca()
    pem = base64.b64decode(certs.ca_bundle_b64(ca_cert))
    assert x509.load_pem_x509_certificate(pem) == ca_cert


def test_write_bundle_leaves_only_the_four_files(tmp_path: Path) -> None:
    ca_cert, ca_key = certs.generate_ca()
    cert, key = certs.issue_serving_cert(ca_cert, ca_key, ["localhost"], [])
    paths = certs.write_bundle(tmp_path / "out", ca_cert, ca_key, cert, key)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "ca.crt",
        "ca.key",
        "tls.crt",
        "tls.key",
    ]
    assert paths.ca_key is not None
    assert _mode(paths.key) == _mode(paths.ca_key) == 0o600
    assert _cert(paths.cert) == cert


def test_load_ca_accepts_a_ca_made_elsewhere(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    ca.private_key_pem.write_to_path(str(tmp_path / "ca-key.pem"))
    ca_cert, ca_key = certs.load_ca(tmp_path / "ca.pem", tmp_path / "ca-key.pem")
    cert, _ = certs.issue_serving_cert(ca_cert, ca_key, ["svc"], [])
    cert.verify_directly_issued_by(ca_cert)


# --- kubefence certs generate ----------------------------------------------------------------


def test_generate_writes_the_bundle_and_prints_the_ca_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "certs"
    assert _generate(out, "--san", "127.0.0.1", "--san", "::1", "--san", "hook.example.com") == 0

    stdout, stderr = capsys.readouterr()
    assert base64.b64decode(stdout.strip()) == (out / "ca.crt").read_bytes()
    assert stdout.count("\n") == 1
    assert stderr.count("\n") == 1
    assert str(out) in stderr
    assert _mode(out / "tls.key") == 0o600
    assert _mode(out / "ca.key") == 0o600
    tls = _cert(out / "tls.crt")
    assert _sans(tls) == (
        {
            "kubefence",
            "kubefence.kubefence-system",
            "kubefence.kubefence-system.svc",
            "kubefence.kubefence-system.svc.cluster.local",
            "hook.example.com",
        },
        {"127.0.0.1", "::1"},
    )
    ca = _cert(out / "ca.crt")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    _verify(out / "ca.crt", out / "tls.crt", x509.DNSName("kubefence.kubefence-system.svc"))
    _verify(out / "ca.crt", out / "tls.crt", x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    with pytest.raises(VerificationError):
        _verify(out / "ca.crt", out / "tls.crt", x509.DNSName("other.kubefence-system.svc"))


def test_tls_handshake_with_the_generated_cert(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    assert _generate(out, "--san", "127.0.0.1", "--san", "localhost") == 0
    files = (out / "ca.crt", out / "tls.crt", out / "tls.key")
    for hostname in ("127.0.0.1", "localhost", "kubefence.kubefence-system.svc"):
        assert _handshake(*files, hostname=hostname) == "hello over tls"
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(*files, hostname="evil.example")


def test_tls_handshake_fails_against_another_ca(tmp_path: Path) -> None:
    assert _generate(tmp_path / "a", "--san", "127.0.0.1") == 0
    assert _generate(tmp_path / "b", "--san", "127.0.0.1") == 0
    files = (tmp_path / "b" / "ca.crt", tmp_path / "a" / "tls.crt", tmp_path / "a" / "tls.key")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(*files, hostname="127.0.0.1")


def test_rsa_key_type_end_to_end(tmp_path: Path) -> None:
    assert _generate(tmp_path, "--key-type", "rsa", "--san", "127.0.0.1") == 0
    key = serialization.load_pem_private_key((tmp_path / "tls.key").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    files = (tmp_path / "ca.crt", tmp_path / "tls.crt", tmp_path / "tls.key")
    assert _handshake(*files, hostname="127.0.0.1") == "hello over tls"


def test_rerun_keeps_the_ca_and_renews_the_serving_cert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _generate(tmp_path) == 0
    first_bundle = capsys.readouterr().out
    ca_fp, ca_key = _fingerprint(tmp_path / "ca.crt"), (tmp_path / "ca.key").read_bytes()
    first_serial = _cert(tmp_path / "tls.crt").serial_number

    assert _generate(tmp_path, "--san", "127.0.0.1") == 0
    assert capsys.readouterr().out == first_bundle
    assert _fingerprint(tmp_path / "ca.crt") == ca_fp
    assert (tmp_path / "ca.key").read_bytes() == ca_key
    assert _cert(tmp_path / "tls.crt").serial_number != first_serial
    assert "127.0.0.1" in _sans(_cert(tmp_path / "tls.crt"))[1]


def test_given_ca_signs_and_is_not_copied_with_its_key(tmp_path: Path) -> None:
    assert _generate(tmp_path / "ca") == 0
    out = tmp_path / "out"
    ca_args = [
        "--ca-cert",
        str(tmp_path / "ca" / "ca.crt"),
        "--ca-key",
        str(tmp_path / "ca" / "ca.key"),
    ]
    assert _generate(out, *ca_args, "--san", "127.0.0.1") == 0
    assert _fingerprint(out / "ca.crt") == _fingerprint(tmp_path / "ca" / "ca.crt")
    assert not (out / "ca.key").exists()
    assert (
        _handshake(out / "ca.crt", out / "tls.crt", out / "tls.key", "127.0.0.1")
        == "hello over tls"
    )


@pytest.mark.parametrize(
    ("ca_cert", "ca_key", "message"),
    [
        ("missing.crt", "missing.key", "missing.crt: no such"),
        ("bad.crt", "x/ca.key", "bad.crt: not a PEM certificate"),
        ("x/tls.crt", "x/tls.key", "x/tls.crt: not a CA"),  # a serving cert, with its own key
        ("x/ca.crt", "x/tls.key", "x/tls.key: key does not match"),
        ("x/ca.crt", "x/ca.crt", "x/ca.crt: not a PEM private key"),
    ],
)
def test_bad_ca_files_exit_2_naming_the_file(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    ca_cert: str,
    ca_key: str,
    message: str,
) -> None:
    assert _generate(tmp_path / "x") == 0
    (tmp_path / "bad.crt").write_text("this is not a certificate\n")
    capsys.readouterr()

    code = _generate(
        tmp_path / "out", "--ca-cert", str(tmp_path / ca_cert), "--ca-key", str(tmp_path / ca_key)
    )

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert f"{tmp_path}/{message}" in err
    assert not (tmp_path / "out").exists()


def test_broken_ca_in_out_dir_exits_2_instead_of_replacing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ca.crt").write_text("garbage\n")
    assert _generate(tmp_path) == 2
    assert f"{tmp_path / 'ca.crt'}: not a PEM certificate" in capsys.readouterr().err
    assert (tmp_path / "ca.crt").read_text() == "garbage\n"


@pytest.mark.parametrize(
    "extra",
    [
        ["--san", "not a host!"],
        ["--days", "0"],
        ["--ca-cert", "only-one.crt"],
        ["--service", "Bad_Name"],
    ],
)
def test_bad_flags_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    code: object
    try:
        code = _generate(tmp_path, *extra)
    except SystemExit as exc:  # argparse refuses a malformed flag before the command runs
        code = exc.code
    assert code == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "tls.crt").exists()


# --- ensure_dev_certs ------------------------------------------------------------------------


def test_dev_certs_serve_localhost(tmp_path: Path) -> None:
    paths = certs.ensure_dev_certs(tmp_path / "dev")
    assert paths.ca_key is not None
    assert _sans(_cert(paths.cert)) == ({"localhost"}, {"127.0.0.1", "::1"})
    assert _mode(paths.key) == _mode(paths.ca_key) == 0o600
    for hostname in ("localhost", "127.0.0.1"):
        assert _handshake(paths.ca_cert, paths.cert, paths.key, hostname) == "hello over tls"


def test_dev_certs_are_reused_while_good(tmp_path: Path) -> None:
    paths = certs.ensure_dev_certs(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    certs.ensure_dev_certs(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert paths == certs.ensure_dev_certs(tmp_path)


def test_dev_cert_renewed_under_the_same_ca_when_expiring_or_missing_names(
    tmp_path: Path,
) -> None:
    paths = certs.ensure_dev_certs(tmp_path)
    assert paths.ca_key is not None
    ca_fp = _fingerprint(paths.ca_cert)
    ca_cert, ca_key = certs.load_ca(paths.ca_cert, paths.ca_key)

    for dns, ips, days in [(["localhost"], ["127.0.0.1", "::1"], 3), (["other"], [], 365)]:
        cert, key = certs.issue_serving_cert(ca_cert, ca_key, dns, ips, days=days)
        certs.write_bundle(tmp_path, ca_cert, None, cert, key)
        certs.ensure_dev_certs(tmp_path)
        renewed = _cert(paths.cert)
        assert renewed.serial_number != cert.serial_number
        assert _sans(renewed) == ({"localhost"}, {"127.0.0.1", "::1"})
        assert _fingerprint(paths.ca_cert) == ca_fp

    paths.cert.unlink()
    certs.ensure_dev_certs(tmp_path)
    assert _fingerprint(paths.ca_cert) == ca_fp
    assert paths.cert.exists()


def test_dev_certs_replace_a_broken_ca(tmp_path: Path) -> None:
    paths = certs.ensure_dev_certs(tmp_path)
    old_fp = _fingerprint(paths.ca_cert)
    paths.ca_cert.write_text("garbage\n")
    certs.ensure_dev_certs(tmp_path)
    assert _fingerprint(paths.ca_cert) != old_fp
    _verify(paths.ca_cert, paths.cert, x509.DNSName("localhost"))


def test_hosts_that_are_neither_names_nor_ips_are_input_errors() -> None:
    with pytest.raises(InputError, match="not a host"):
        certs.split_sans(["localhost", "not a host"])


def test_given_ca_refuses_an_out_dir_holding_another_cas_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _generate(tmp_path / "ca") == 0
    assert _generate(tmp_path / "out") == 0  # out/ca.key now belongs to a CA of its own
    capsys.readouterr()
    ca_args = ["--ca-cert", str(tmp_path / "ca" / "ca.crt")]
    ca_args += ["--ca-key", str(tmp_path / "ca" / "ca.key")]
    assert _generate(tmp_path / "out", *ca_args) == 2
    assert f"{tmp_path / 'out' / 'ca.key'}: key does not match" in capsys.readouterr().err
