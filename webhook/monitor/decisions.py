"""`POST /decisions`: `serve --decisions-to`'s sensitive decisions, held for the audit-gap watch.

Authenticated on the audit port as `/audit` is, and on the decisions port by its own token and
client CA (`webhook.monitor.server`'s docstring has the rules); a DecisionList within its caps.
"""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import hdrs, web

from webhook.correlate.decision_reader import decision_record
from webhook.monitor.intake import Refusal
from webhook.monitor.runtime import DECISIONS_ONLY, RUNTIME, MonitorRuntime
from webhook.monitor.senders import bearer_ok, error, unlisted_sender

# A DecisionList: `serve` sends at most 100 records of ~600 bytes in one; the cap leaves room.
# A DecisionList: `serve` sends at most 100 records of ~600 bytes in one; the cap leaves room.
DECISIONS_MAX_BYTES = 1 << 20
DECISIONS_MAX_ITEMS = 1000
DECISIONS_READ_SECONDS = 10.0
DECISION_LIST = "DecisionList"
DECISION_API_VERSION = "kubefence.io/v1"


async def receive_decisions(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    response = await _receive_decisions(request, runtime)
    runtime.metrics.decision_posts.labels(str(response.status)).inc()
    return response


async def _receive_decisions(request: web.Request, runtime: MonitorRuntime) -> web.Response:
    if request.app.get(DECISIONS_ONLY):  # the decisions port: its own token and certificates
        token, flag = runtime.decisions_token, "--decisions-token-file"
        subjects = runtime.decision_subjects if _has_cert(request) else ()
    else:  # the audit port: as /audit
        token, flag = runtime.token, "--token-file"
        subjects = runtime.decision_subjects or runtime.client_subjects
    if token is not None and not bearer_ok(request, token):
        response = error(401, f"a bearer token is required (the monitor's {flag})")
        response.headers[hdrs.WWW_AUTHENTICATE] = "Bearer"
        return response
    if subjects:
        refused = unlisted_sender(request, runtime, subjects)
        if refused is not None:
            return refused
    if runtime.feed.gaps is None:
        return error(404, "decisions are not taken: start the monitor with --audit-gap-window")
    length = request.content_length
    if length is not None and length > DECISIONS_MAX_BYTES:
        return _decisions_refused(runtime, 413, f"exceeds {DECISIONS_MAX_BYTES} bytes", length)
    body = await _read_small(request, DECISIONS_MAX_BYTES)
    if isinstance(body, Refusal):
        return _decisions_refused(runtime, body.status, body.reason, body.size)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _decisions_refused(runtime, 400, f"not JSON: {exc.msg}", len(body))
    if (
        not isinstance(doc, dict)
        or doc.get("kind") != DECISION_LIST
        or doc.get("apiVersion") != DECISION_API_VERSION
        or not isinstance(doc.get("items"), list)
    ):
        reason = f"not a {DECISION_API_VERSION} {DECISION_LIST} with a list of items"
        return _decisions_refused(runtime, 400, reason, len(body))
    items = doc["items"]
    if len(items) > DECISIONS_MAX_ITEMS:  # judged in one go: the loop is held that long
        reason = f"more than {DECISIONS_MAX_ITEMS} items in one DecisionList"
        return _decisions_refused(runtime, 413, reason, len(body))
    if not runtime.leading():  # the holder alerts; one sent here is the holder's too
        runtime.metrics.decisions.labels("follower").inc(len(items))
        return web.Response(body=b'{"held":0}\n', content_type="application/json")
    held = 0
    for item in items:
        record = decision_record(item)
        if record is None:
            runtime.metrics.decisions.labels("malformed").inc()
            continue
        held += 1
        for alert in runtime.feed.decision(record):
            runtime.alert(alert)
    runtime.metrics.decisions.labels("held").inc(held)
    return web.Response(body=orjson.dumps({"held": held}) + b"\n", content_type="application/json")


def _has_cert(request: web.Request) -> bool:
    transport = request.transport
    return transport is not None and bool(transport.get_extra_info("peercert"))


async def _read_small(request: web.Request, limit: int) -> bytes | Refusal:
    """A small body whole, within `limit` bytes and `DECISIONS_READ_SECONDS`."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(DECISIONS_READ_SECONDS):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    return Refusal(413, f"exceeds {limit} bytes", size)
                chunks.append(chunk)
    except TimeoutError:
        return Refusal(408, f"body not received within {DECISIONS_READ_SECONDS:.0f}s", size)
    return b"".join(chunks)


def _decisions_refused(
    runtime: MonitorRuntime, status: int, reason: str, size: int
) -> web.Response:
    runtime.log.warning("monitor.decisions_rejected", code=status, reason=reason, size=size)
    response = error(status, reason)
    if status in (408, 413):
        response.force_close()  # the rest of the body is not read
    return response
