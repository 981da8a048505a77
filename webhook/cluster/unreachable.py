"""Why the API server could not be reached, in words a user acts on, from a client's exception.

The clients wrap the socket's error two or three deep (urllib3: `MaxRetryError` ->
`NewConnectionError` -> `ConnectionRefusedError`; aiohttp: `ClientConnectorError` -> `OSError`),
and their own text is the whole chain (`HTTPSConnectionPool(host=..., port=...): Max retries
exceeded with url: ... (Caused by NewConnectionError(...))`). `cause` walks the chain to the
socket, TLS or resolver error at its bottom and names it: connection refused, timed out, TLS
certificate not trusted, TLS hostname mismatch, DNS name not found.

Invariant: pure; reads only the standard library's exception types, so neither client is
imported here.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Iterator

# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH.
_NAME_MISMATCH = {62: "the host name", 64: "the IP address"}
_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused (nothing listens on that port)",
    errno.ECONNRESET: "connection reset by the server",
    errno.ETIMEDOUT: "timed out connecting",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
}
_NOT_FOUND = {
    getattr(socket, name) for name in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, name)
}


def cause(exc: BaseException) -> str:
    """The reason at the bottom of `exc`'s chain, in words; the innermost text when it is none
    of the known kinds."""
    chain = list(_chain(exc))
    for found in chain:
        if isinstance(found, ssl.SSLCertVerificationError):
            return _certificate(found)
    for found in chain:
        if isinstance(found, socket.gaierror):
            if found.errno in _NOT_FOUND:
                return "DNS name not found"
            return f"DNS lookup failed: {found.strerror or found}"
    for found in chain:
        if isinstance(found, ssl.SSLError):
            return f"TLS handshake failed: {found.reason or found}"
    for found in chain:
        if isinstance(found, TimeoutError):  # socket.timeout and asyncio's too
            return "timed out connecting"
    for found in chain:
        if isinstance(found, OSError) and found.errno in _ERRNO_WORDS:
            return _ERRNO_WORDS[found.errno]
    return " ".join(str(chain[-1]).split()) or type(chain[-1]).__name__


def _certificate(exc: ssl.SSLCertVerificationError) -> str:
    mismatch = _NAME_MISMATCH.get(exc.verify_code)
    if mismatch is not None:
        return f"TLS hostname mismatch: the server's certificate is not valid for {mismatch}"
    detail = exc.verify_message or exc.reason or str(exc)
    return f"TLS certificate not trusted ({detail}): check the kubeconfig's certificate-authority"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it wraps, outermost first: causes, contexts, and the exceptions clients
    keep as attributes (urllib3's `reason`, aiohttp's `os_error`) or arguments."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        inner: list[object] = [current.__cause__, current.__context__]
        inner += [getattr(current, name, None) for name in ("reason", "os_error")]
        inner += list(current.args)
        todo += [e for e in inner if isinstance(e, BaseException)]
