"""The cause of an unreachable API server in words, from the chains the two clients raise.

Real sockets for refused and TLS failures are in test_cluster_flags.py; here the chains whose
causes a test machine cannot produce on demand (a name the resolver does not know, a connect
that times out), built as urllib3 and aiohttp build them.
"""

from __future__ import annotations

import socket
import ssl

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NameResolutionError

from webhook.cluster.unreachable import cause


def _raised(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as exc:
        return exc


def test_urllib3_name_not_found() -> None:
    gai = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    resolution = _raised(NameResolutionError("api.example", None, gai), gai)  # type: ignore[arg-type]
    error = MaxRetryError(None, "/api/v1/namespaces", reason=resolution)  # type: ignore[arg-type]
    assert cause(error) == "DNS name not found"


def test_urllib3_connect_timeout() -> None:
    timeout = _raised(ConnectTimeoutError(None, "Connection to h timed out"), TimeoutError("timed out"))  # fmt: skip
    error = MaxRetryError(None, "/api", reason=timeout)  # type: ignore[arg-type]
    assert cause(error) == "timed out connecting"


def test_aiohttp_refused() -> None:
    key = ConnectionKey("127.0.0.1", 1, True, True, None, None, None)
    refused = ConnectionRefusedError(111, "Connect call failed")
    error = _raised(aiohttp.ClientConnectorError(key, refused), refused)
    assert cause(error) == "connection refused (nothing listens on that port)"


def test_a_certificate_for_another_name() -> None:
    mismatch = ssl.SSLCertVerificationError(1, "certificate verify failed")
    mismatch.verify_code = 62
    mismatch.verify_message = "Hostname mismatch, certificate is not valid for 'h'."
    assert cause(MaxRetryError(None, "/", reason=mismatch)).startswith("TLS hostname mismatch")  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["something else entirely", ""])
def test_an_unknown_cause_is_its_innermost_text_on_one_line(text: str) -> None:
    error = _raised(RuntimeError("outer\nwrapper"), ValueError(f"{text}\n  continued"))
    assert "\n" not in cause(error)
