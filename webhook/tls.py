"""Serving TLS: a hardened server context whose certificate follows its files without a restart.

The certificate and key are polled (inode, mtime, size of the resolved path), which also sees a
mounted Secret's `..data` symlink swap that inotify on the file misses. A new pair is loaded into a
scratch context first: a broken pair is refused and the old one stays in service.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

# TLS 1.2 suites with forward secrecy and AEAD only; TLS 1.3 suites are OpenSSL's (all AEAD).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

Signature = tuple[tuple[int, int, int], ...]


def server_context(
    cert: str | Path, key: str | Path, client_ca: str | Path | None = None
) -> ssl.SSLContext:
    """A TLS 1.2+ server context; with `client_ca`, clients must present a certificate it signed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.load_cert_chain(str(cert), str(key))
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=str(client_ca))
    return context


def not_after(cert: str | Path) -> float:
    """The certificate's expiry as a Unix timestamp."""
    data = Path(cert).read_bytes()
    return x509.load_pem_x509_certificate(data).not_valid_after_utc.timestamp()


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


@dataclass
class CertificateReloader:
    """Keeps a live SSLContext's certificate in step with the files it came from."""

    context: ssl.SSLContext
    cert: Path
    key: Path
    on_result: Callable[[str, float | None, str], None]  # (applied|rejected, not_after, reason)
    interval: float = 2.0

    def __post_init__(self) -> None:
        self._signature = file_signature(self.cert, self.key)

    def check(self) -> str | None:
        """Reload when the files changed; return the result, or None when nothing changed."""
        signature = file_signature(self.cert, self.key)
        if signature == self._signature:
            return None
        self._signature = signature
        try:
            scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            scratch.load_cert_chain(str(self.cert), str(self.key))
            expiry = not_after(self.cert)
            self.context.load_cert_chain(str(self.cert), str(self.key))
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.on_result("rejected", None, f"{exc.__class__.__name__}: {exc}")
            return "rejected"
        self.on_result("applied", expiry, "")
        return "applied"

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.check()
