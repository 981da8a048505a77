"""`POST /audit`: the API server's audit webhook backend, an EventList a batch.

The invariants of its answers (one line; 200, 400, 413, 503 with Retry-After for a follower or a
busy monitor) are `webhook.monitor.server`'s docstring's; this is their code.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from aiohttp import hdrs, web

from webhook.monitor.batch import BatchError, iter_items
from webhook.monitor.intake import MAX_BODY_BYTES, Hold, Refusal, read_body, too_large
from webhook.monitor.runtime import RUNTIME, MonitorRuntime
from webhook.monitor.senders import bearer_ok, error, unlisted_sender

SLICE = 100  # events judged between yields to the loop
LOCK_WAIT_SECONDS = 10.0  # a batch read waits this long for the one being judged, then 503
FOLLOWER_RETRY_AFTER = 1  # seconds: a follower's 503 asks the API server to re-send this soon


async def receive(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    response = await _receive(request, runtime)
    runtime.metrics.batches.labels(str(response.status)).inc()
    return response


async def _receive(request: web.Request, runtime: MonitorRuntime) -> web.Response:
    if runtime.token is not None and not bearer_ok(request, runtime.token):
        response = error(401, "a bearer token is required (the monitor's --token-file)")
        response.headers[hdrs.WWW_AUTHENTICATE] = "Bearer"
        return response
    if runtime.client_subjects:
        refused = unlisted_sender(request, runtime)
        if refused is not None:
            return refused
    if not runtime.leading():
        return _follower(runtime, None)
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        return _too_large(runtime, length)
    hold = Hold(runtime.budget)
    try:
        body = await read_body(request.content, hold, length)
        if isinstance(body, Refusal):
            if body.status == 503:
                return _busy(runtime, body.reason)
            return _rejected(runtime, body.status, body.reason, body.size, close=True)
        try:  # one batch judged at a time, in the order they were read
            async with asyncio.timeout(LOCK_WAIT_SECONDS):
                await runtime.lock.acquire()
        except TimeoutError:
            waited = f"another batch is being judged for over {LOCK_WAIT_SECONDS:.0f}s"
            return _busy(runtime, waited)
        try:
            return await _judge(runtime, body)
        finally:
            runtime.lock.release()
    finally:
        hold.release()


async def _judge(runtime: MonitorRuntime, body: bytes) -> web.Response:
    """Count and judge the batch a slice at a time as it is parsed; 200 once all are taken."""
    if not runtime.leading():  # lost the Lease while this batch waited
        return _follower(runtime, None)
    started = time.perf_counter()
    feed = runtime.feed  # the whole batch to one feed, whatever the Lease does meanwhile
    digest = hashlib.blake2b(body, digest_size=16).digest()
    again = feed.batch_taken(digest)
    if again is not None:  # a re-send of a batch taken: its events all counted already
        runtime.metrics.duplicates.inc(again)
        return web.Response(body=b"{}\n", content_type="application/json")
    events = 0
    try:
        for part in iter_items(body):
            for start in range(0, len(part), SLICE):
                now = time.time()
                taken = feed.take(part[start : start + SLICE], now)
                _account(runtime, taken.stages, taken.duplicates, taken.malformed, now)
                if taken.unjudged:
                    runtime.metrics.unjudged.inc(taken.unjudged)
                if taken.before_registration:
                    runtime.metrics.before_registration.inc(taken.before_registration)
                for alert in taken.alerts:
                    runtime.alert(alert)
                await asyncio.sleep(0)  # a slice judged (or parsed): the loop is given back
            events += len(part)
            del part
    except BatchError as exc:
        return _rejected(runtime, 413 if exc.too_many else 400, str(exc), len(body))
    feed.took_batch(digest, events)
    runtime.metrics.batch_size.observe(events)
    runtime.metrics.batch_seconds.observe(time.perf_counter() - started)
    return web.Response(body=b"{}\n", content_type="application/json")


def _too_large(runtime: MonitorRuntime, size: int) -> web.Response:
    return _rejected(runtime, 413, too_large(size).reason, size, close=True)


def _rejected(
    runtime: MonitorRuntime, status: int, reason: str, size: int, *, close: bool = False
) -> web.Response:
    """A body refused (the API server retries it, then drops it): logged, never its content."""
    runtime.log.warning("monitor.batch_rejected", code=status, reason=reason, size=size)
    response = error(status, reason)
    if close:  # the rest of the body is not read
        response.force_close()
    return response


def _busy(runtime: MonitorRuntime, reason: str) -> web.Response:
    """503 with Retry-After: client-go re-sends after it, the audit backend retries besides."""
    runtime.log.warning("monitor.batch_deferred", reason=reason)
    response = error(503, reason)
    response.headers[hdrs.RETRY_AFTER] = str(FOLLOWER_RETRY_AFTER)
    response.force_close()
    return response


def _account(
    runtime: MonitorRuntime,
    stages: dict[str, int],
    duplicates: int,
    malformed: int,
    now: float,
) -> None:
    m = runtime.metrics
    for stage, n in stages.items():
        m.events.labels(stage).inc(n)
        runtime.received += n
    if duplicates:
        m.duplicates.inc(duplicates)
    if malformed:
        m.malformed.inc(malformed)
    if stages:  # the receiver's clock: a forged stageTimestamp in the future cannot hide silence
        m.last_event.set(now)


def _follower(runtime: MonitorRuntime, events: int | None) -> web.Response:
    """A batch sent to a replica that does not hold the Lease: judged here it would split the
    detections, so it is refused with a status the API server retries, on a new connection (this
    one is closed) that the Service gives to the holder. Two retries stack: client-go's REST
    client re-sends a 5xx carrying Retry-After after that many seconds, up to 10 times
    (k8s.io/client-go@v0.37.2 rest/with_retry.go, `checkWait`; the EventList is re-readable
    bytes), and the audit backend retries any error from 10 s, times 1.5, 5 tries
    (k8s.io/apiserver@v0.37.2 plugin/pkg/audit/webhook/webhook.go, `retryOnError`)."""
    runtime.refused += 1
    runtime.log.warning(
        "monitor.batch_refused",
        reason="not the leader: another replica holds the monitor Lease",
        lease=runtime.lease,
        events=events,
    )
    response = error(503, f"not the leader: another replica holds the Lease {runtime.lease}")
    response.headers[hdrs.RETRY_AFTER] = str(FOLLOWER_RETRY_AFTER)
    response.force_close()
    return response
