"""Serving TLS: a hardened server context whose certificate follows its files without a restart.

Invariants: TLS 1.2 is the floor and TLS 1.2 offers only forward-secret AEAD suites (TLS 1.3
suites are all AEAD). The context in service always holds a matching, unexpired certificate and
key: a new pair is read once, checked completely, and only then installed from that same copy, so
a broken or half-written pair is refused and the old one stays in service. Connections already
open keep the certificate they were made with; new handshakes get the new one.

The files are polled (inode, mtime, size after following symlinks), which also sees the `..data`
symlink swap of a mounted Secret that inotify on the file misses. A change is applied once it has
stood still for one poll, so a pair copied file by file is not caught half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import ssl
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from webhook import certs
from webhook.errors import InputError

# TLS 1.2 suites with forward secrecy and AEAD only; TLS 1.3 suites are OpenSSL's (all AEAD).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
POLL_INTERVAL = 1.0  # seconds; a change is applied within two polls

Signature = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class KeyPair:
    """A certificate chain and its key as read from disk once, checked to belong together."""

    cert_file: Path
    key_file: Path
    chain_pem: bytes
    key_pem: bytes
    leaf: x509.Certificate

    @property
    def not_after(self) -> float:
        return self.leaf.not_valid_after_utc.timestamp()

    @property
    def serial(self) -> str:
        return f"{self.leaf.serial_number:x}"


def load_pair(cert: str | Path, key: str | Path) -> KeyPair:
    """Read and check a serving pair; InputError naming the file that will not do."""
    cert_file, key_file = Path(cert), Path(key)
    chain = certs.load_certificates(cert_file)
    private = certs.load_private_key(key_file)
    leaf = chain[0]
    if not certs.key_matches(private, leaf):
        raise InputError(f"{key_file}: key does not match the certificate in {cert_file}")
    if leaf.not_valid_after_utc <= dt.datetime.now(dt.UTC):
        raise InputError(f"{cert_file}: certificate expired on {leaf.not_valid_after_utc:%F %T}Z")
    chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    key_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pair = KeyPair(cert_file, key_file, chain_pem, key_pem, leaf)
    install(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), pair)  # what OpenSSL refuses, refuse now
    return pair


def hardened_context(pair: KeyPair, client_ca: str | Path | None = None) -> ssl.SSLContext:
    """A TLS 1.2+ server context; with `client_ca`, clients must present a certificate it signed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= (
        ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    )
    install(context, pair)
    if client_ca is not None:
        authorities = certs.load_certificates(client_ca)
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in authorities)
        context.load_verify_locations(cadata=pem.decode("ascii"))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


# OpenSSL's reasons for a refused handshake, in the few kinds an operator acts on. A bounded
# label set: anything else is "other".
HANDSHAKE_FAILURES = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no_client_certificate",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "no_client_certificate",
    "CERTIFICATE_VERIFY_FAILED": "untrusted_client_certificate",
    "WRONG_VERSION_NUMBER": "not_tls",
    "HTTP_REQUEST": "not_tls",
    "HTTPS_PROXY_REQUEST": "not_tls",
    "UNSUPPORTED_PROTOCOL": "protocol",
    "NO_SHARED_CIPHER": "protocol",
    "VERSION_TOO_LOW": "protocol",
}
HANDSHAKE_FAILURE_KINDS = (*dict.fromkeys(HANDSHAKE_FAILURES.values()), "other")


def count_handshake_failures(context: ssl.SSLContext, count: Callable[[str], None]) -> None:
    """Call `count(kind)` for every handshake the context refuses, with the kind of refusal.

    asyncio reports a refused handshake nowhere (an SSLError is an OSError, which its SSL
    transport drops unless the loop runs in debug mode), so a client refused for lack of a
    client certificate would leave no trace. The context's SSLObject class is the one hook every
    asyncio TLS connection goes through (`SSLContext.wrap_bio`).
    """

    class _Counting(ssl.SSLObject):
        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise
            except ssl.SSLError as exc:
                count(HANDSHAKE_FAILURES.get(exc.reason or "", "other"))
                raise

    context.sslobject_class = _Counting


def server_context(
    cert: str | Path, key: str | Path, client_ca: str | Path | None = None
) -> ssl.SSLContext:
    """`hardened_context` over the pair in the files."""
    return hardened_context(load_pair(cert, key), client_ca)


def install(context: ssl.SSLContext, pair: KeyPair) -> None:
    """Put the pair into the context for the handshakes that start from now on."""
    try:
        with _private_file(pair.chain_pem + pair.key_pem) as path:
            context.load_cert_chain(path)
    except ssl.SSLError as exc:
        raise InputError(f"{pair.cert_file}: refused by OpenSSL: {exc.reason or exc}") from None


@contextlib.contextmanager
def _private_file(data: bytes) -> Iterator[str]:
    """A path to `data` that only this process can open; in memory where Linux allows."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("kubefence-tls", os.MFD_CLOEXEC)
        try:
            with open(fd, "wb", closefd=False) as f:
                f.write(data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="kubefence-tls-") as tmp:
        path = Path(tmp, "pair.pem")
        path.touch(mode=0o600)
        path.write_bytes(data)
        yield str(path)


def not_after(cert: str | Path) -> float:
    """The certificate's expiry as a Unix timestamp."""
    return certs.load_certificates(cert)[0].not_valid_after_utc.timestamp()


def file_signature(*paths: str | Path) -> Signature:
    """What changes when any of the files is replaced, including through a symlink swap."""
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append((0, 0, 0))
            continue
        out.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


# (result "applied" | "rejected", the pair now in service when applied, reason when rejected)
ReloadReport = Callable[[str, KeyPair | None, str], None]


class CertificateReloader:
    """Owns the serving context: loads the pair at start, then keeps it in step with its files."""

    def __init__(
        self,
        cert: str | Path,
        key: str | Path,
        client_ca: str | Path | None = None,
        *,
        on_result: ReloadReport | None = None,
        interval: float = POLL_INTERVAL,
    ) -> None:
        self.cert, self.key = Path(cert), Path(key)
        self.on_result = on_result
        self.interval = interval
        self._seen = file_signature(self.cert, self.key)  # before reading: a change is not lost
        self.pair = load_pair(self.cert, self.key)
        self.context = hardened_context(self.pair, client_ca)
        self._pending: Signature | None = None

    def check(self) -> str | None:
        """Reload a change that has stood still since the last check; the result, or None."""
        signature = file_signature(self.cert, self.key)
        if signature == self._seen:
            self._pending = None
            return None
        if signature != self._pending:
            self._pending = signature
            return None
        self._seen, self._pending = signature, None
        try:
            pair = load_pair(self.cert, self.key)
            install(self.context, pair)
        except InputError as exc:
            self._report("rejected", None, str(exc))
            return "rejected"
        self.pair = pair
        self._report("applied", pair, "")
        return "applied"

    def _report(self, result: str, pair: KeyPair | None, reason: str) -> None:
        if self.on_result is not None:
            self.on_result(result, pair, reason)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.check()
