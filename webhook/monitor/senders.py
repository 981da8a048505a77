"""Who may post to the monitor: the bearer token and the certificate subjects allowed, and the
one-line JSON error answer every refusal is. The sender is checked before its body is read."""

from __future__ import annotations

import hmac

import orjson
from aiohttp import hdrs, web

from webhook.monitor.runtime import MonitorRuntime
from webhook.peers import client_identity


def bearer_ok(request: web.Request, token: bytes) -> bool:
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, given = header.partition(" ")
    try:
        presented = given.strip().encode()
    except UnicodeEncodeError:  # bytes that are not UTF-8 (aiohttp escapes them): not our token
        return False
    return scheme.lower() == "bearer" and hmac.compare_digest(presented, token)


def unlisted_sender(
    request: web.Request, runtime: MonitorRuntime, subjects: tuple[str, ...] = ()
) -> web.Response | None:
    """403 for a verified certificate of another subject than `--client-subject`'s (or
    `subjects`), else None."""
    allowed = subjects or runtime.client_subjects
    client = client_identity(request)
    if client is not None and any(client.matches(p) for p in allowed):
        return None
    subject = client.subject if client is not None else None
    runtime.log.warning(
        "monitor.sender_refused", reason="client certificate subject not allowed", client=subject
    )
    flag = "--decisions-subject" if subjects and subjects != runtime.client_subjects else None
    return error(
        403,
        f"client certificate subject {subject!r} is not a {flag or '--client-subject'} of"
        " the monitor",
    )


def error(status: int, reason: str) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps({"error": reason}) + b"\n", content_type="application/json"
    )
