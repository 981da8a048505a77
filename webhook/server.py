"""The aiohttp layer: read, parse, decide, answer, log one line. Nothing else happens per request.

`POST /validate` answers every well-formed AdmissionReview with 200 (allowed or not), malformed
bodies with 400 (413 when too large) and a one-line JSON reason; a failure inside kubefence is
answered with a denial, never a 500 or a dropped connection. `/healthz`, `/readyz`, `/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from aiohttp import hdrs, web

from webhook.admission import AdmissionRequest, parse_review, render_response
from webhook.cluster.approvals import RecentApprovals
from webhook.cluster.view import ClusterView, PinnedView
from webhook.decide import busy, decide, internal_error, pools, reconsider, unconfirmed
from webhook.decision import Decision, decision_fields
from webhook.decisionlog import get_logger, write_decision
from webhook.errors import BodyTooLarge, ReviewError
from webhook.metrics import CONTENT_TYPE, Metrics
from webhook.offloop import INLINE, Busy, OffLoop, Turn
from webhook.peers import UNAUTHENTICATED, ClientIdentity, caller, client_identity, peer_address
from webhook.settings import Settings

BODY_READ_TIMEOUT = 10.0  # seconds a client may take to send one request body
CONFIRM_TIMEOUT = 2.0  # upper bound of a live read before a denial
ANALYSIS_WAIT = 2.0  # upper bound of a wait for the namespace's turn to be analysed


class Confirmer(Protocol):
    """A cluster source that can re-read one namespace live (the informer); `--state` cannot."""

    async def confirm(
        self,
        namespace: str,
        timeout: float,
        *,
        not_before: float | None = None,
        caller: str = "",
    ) -> ClusterView | None:
        """A view with the namespace read live, or None when the read failed or timed out.

        With `not_before` (a `time.monotonic()` instant) only a read started at or after it
        will do: no remembered or in-flight read from before. `caller` (who asked: reads are
        bounded per caller) is the peer's address, or its verified certificate's subject.
        """
        ...


@dataclass
class Runtime:
    """Everything a request handler reads; `settings` is swapped whole on reload."""

    settings: Settings
    cluster: ClusterView
    metrics: Metrics = field(default_factory=Metrics)
    confirmer: Confirmer | None = None
    approvals: RecentApprovals = field(default_factory=RecentApprovals)
    # NetworkPolicy decisions on worker threads, one namespace at a time; None: on the loop.
    offloop: OffLoop | None = field(default_factory=OffLoop)
    # With a client CA the API server is authenticated: only its approvals (the pinned subject,
    # when one is given) change what this process remembers.
    client_ca: bool = False
    client_subject: str | None = None
    certificates_loaded: bool = True
    shutting_down: bool = False
    log: Any = field(default_factory=get_logger)
    # Told every decision of a verified API server once logged (`serve --decisions-to`:
    # webhook.decisionfeed); must not block or raise.
    on_decision: Callable[[AdmissionRequest, dict[str, Any]], None] | None = None

    @property
    def ready(self) -> bool:
        return self.certificates_loaded and self.cluster.synced and not self.shutting_down


RUNTIME = web.AppKey("runtime", Runtime)


def build_app(runtime: Runtime) -> web.Application:
    app = web.Application()
    app[RUNTIME] = runtime
    runtime.metrics.policy_revision.labels(runtime.settings.revision).set(1)
    app.router.add_post("/validate", validate)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    # Wrong method or path: one-line JSON like every other error, without a middleware on the
    # hot path (a middleware wraps every request).
    app.router.add_route("*", "/validate", _method_not_allowed)
    app.router.add_route("*", "/{path:.*}", _not_found)
    app.on_response_prepare.append(without_server_header)
    return app


async def without_server_header(request: web.Request, response: web.StreamResponse) -> None:
    """No `Server: Python/... aiohttp/...`: what runs behind the port is nobody's business.

    aiohttp adds the header before this signal runs, so it can be taken out here.
    """
    response.headers.popall(hdrs.SERVER, None)


async def validate(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    started = time.perf_counter()
    arrived = time.monotonic()
    settings = runtime.settings
    try:
        body = await _read_body(request, settings.max_body_bytes)
        review = parse_review(body)
    except ReviewError as exc:
        runtime.metrics.bad_requests.labels(str(exc.status)).inc()
        runtime.log.warning("admission.bad_request", status=exc.status, reason=str(exc))
        return _error(exc.status, str(exc))
    client = client_identity(request)
    decision = await _decide(runtime, review, settings, request, arrived, client=client)
    payload = render_response(decision.response(), review.api_version)
    latency = time.perf_counter() - started
    _record(runtime, request, review, decision, latency, client=client)
    return web.Response(body=payload, content_type="application/json")


def _trusted(runtime: Runtime, client: ClientIdentity | None) -> bool:
    """Whether this caller's approvals may be remembered.

    Without a client CA nobody is authenticated and every approval is remembered: the rules read
    them only in the direction that denies more. With one, only a verified certificate counts,
    and with `--client-subject` only that subject (a cluster CA also signs kubelets and users).
    """
    if not runtime.client_ca:
        return True
    if client is None:
        return False
    pinned = runtime.client_subject
    return pinned is None or client.matches(pinned)


async def _decide(
    runtime: Runtime,
    review: AdmissionRequest,
    settings: Settings,
    request: web.Request,
    arrived: float,
    *,
    client: ClientIdentity | None,
) -> Decision:
    try:
        return await _decide_live(runtime, review, settings, request, arrived, client=client)
    except Busy:
        runtime.metrics.analyses_busy.inc()
        return busy(review, settings)
    except Exception:
        runtime.metrics.internal_errors.inc()
        runtime.log.exception("admission.internal_error", decision_id=review.uid)
        return internal_error(review, settings)


async def _decide_live(
    runtime: Runtime,
    review: AdmissionRequest,
    settings: Settings,
    request: web.Request,
    arrived: float,
    *,
    client: ClientIdentity | None,
) -> Decision:
    """Decide; carry out the live re-check the decision asks for, if any (read its namespace
    live, then `reconsider` on that view). The final answer's approval is remembered in the same
    turn that judged it: a NetworkPolicy decision pools its namespace's policies (the costly
    kind) on a worker thread, one turn of the namespace at a time, so the next change of that
    namespace is judged with this one's approval (`webhook.offloop`)."""
    approvals = runtime.approvals
    namespace = review.namespace
    if len(approvals):
        approvals.settle(namespace, runtime.cluster.namespace(namespace))
    costly = runtime.offloop is not None and pools(review, runtime.cluster, settings)
    async with _turn(runtime, request, arrived, namespace, costly) as turn:
        # One version of the namespace and of its approvals for the whole decision, whatever
        # the loop applies meanwhile.
        view = PinnedView(runtime.cluster, namespace) if costly else runtime.cluster
        memory = approvals.of_namespace(namespace) if costly else approvals
        decision = await turn.run(lambda: decide(review, view, settings, memory))
        confirmer = runtime.confirmer
        recheck = decision.recheck if confirmer is not None else None
        if recheck is None or confirmer is None:
            _remember(runtime, decision, client)
            return decision
    namespace = recheck.namespace
    fresh = await confirmer.confirm(
        namespace,
        min(CONFIRM_TIMEOUT, _remaining(request, arrived)),  # the query is parsed only here
        not_before=arrived if recheck.fresh_only else None,
        caller=caller(request),
    )
    runtime.metrics.live_reads.labels("ok" if fresh is not None else "failed").inc()
    if fresh is None:
        return unconfirmed(review, decision, settings)
    if len(approvals):
        approvals.settle(namespace, fresh.namespace(namespace), live=True)
    cached = decision
    async with _turn(runtime, request, arrived, namespace, costly) as turn:
        memory = approvals.of_namespace(namespace) if costly else approvals
        decision = await turn.run(lambda: reconsider(cached, fresh, settings, memory))
        _remember(runtime, decision, client)
    return decision


def _turn(
    runtime: Runtime, request: web.Request, arrived: float, namespace: str, costly: bool
) -> AbstractAsyncContextManager[Turn]:
    """The namespace's turn on a worker thread for costly work (its wait out of the request's
    budget), or an inline turn on the loop for the rest."""
    if not costly or runtime.offloop is None:
        return contextlib.nullcontext(INLINE)
    wait = min(ANALYSIS_WAIT, _remaining(request, arrived))
    return runtime.offloop.turn(namespace, caller(request), wait)


def _remember(runtime: Runtime, decision: Decision, client: ClientIdentity | None) -> None:
    """Remember the final answer's approved NetworkPolicy change, if its caller may change
    what this process remembers."""
    approval = decision.approval
    if approval is not None and _trusted(runtime, client):
        runtime.approvals.record(approval.namespace, approval.old, approval.new)


def _record(
    runtime: Runtime,
    request: web.Request,
    review: AdmissionRequest,
    decision: Decision,
    latency: float,
    *,
    client: ClientIdentity | None,
) -> None:
    metrics = runtime.metrics
    metrics.duration.observe(latency)
    metrics.count_decision(
        decision.verdict, review.operation, [(r.rule, r.mode.value) for r in decision.failed]
    )
    fields = decision_fields(
        review,
        decision,
        cache_synced=runtime.cluster.synced,
        latency_ms=latency * 1000,
        client=client.subject if client is not None else UNAUTHENTICATED,
        peer=peer_address(request),
    )
    write_decision(runtime.log, fields)
    # Only the API server's decisions go to the monitor: it holds each for its audit event, and
    # one nobody verified can never be a gap there, only take the place of a real one.
    if runtime.on_decision is not None and runtime.client_ca and _trusted(runtime, client):
        runtime.on_decision(review, fields)


def _remaining(request: web.Request, arrived: float) -> float:
    """What is left of the request's budget for waiting (its namespace's turn to be analysed, a
    live read): half the API server's timeout from its arrival, shared by every wait of the
    request so that together they stay inside `timeoutSeconds`. At least 0.1 s."""
    return max(0.1, arrived + _deadline(request) - time.monotonic())


def _deadline(request: web.Request) -> float:
    """The API server's remaining budget from `?timeout=10s`, less a margin for the answer."""
    raw = request.query.get("timeout", "")
    try:
        seconds = float(raw[:-1]) if raw.endswith("s") else float(raw or CONFIRM_TIMEOUT * 2)
    except ValueError:
        seconds = CONFIRM_TIMEOUT * 2
    return max(0.1, seconds / 2)


async def _read_body(request: web.Request, limit: int) -> bytes:
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge(f"body exceeds server.maxBodyBytes ({limit} bytes)")
    if length is not None and request.content.is_eof():
        # The common case: the API server's whole body arrived with the headers; no timer needed.
        return await request.content.read()
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_READ_TIMEOUT):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(f"body exceeds server.maxBodyBytes ({limit} bytes)")
                chunks.append(chunk)
    except TimeoutError:
        raise ReviewError(f"body not received within {BODY_READ_TIMEOUT:.0f}s") from None
    return b"".join(chunks)


def _error(status: int, reason: str) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps({"error": reason}) + b"\n", content_type="application/json"
    )


async def _method_not_allowed(request: web.Request) -> web.Response:
    response = _error(405, f"method {request.method} not allowed; POST an AdmissionReview")
    response.headers["Allow"] = "POST"
    return response


async def _not_found(request: web.Request) -> web.Response:
    return _error(404, "not found; the webhook serves POST /validate")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    if runtime.ready:
        return web.Response(text="ok\n")
    reasons = []
    if runtime.shutting_down:
        reasons.append("shutting down")
    if not runtime.certificates_loaded:
        reasons.append("certificates not loaded")
    if not runtime.cluster.synced:
        reasons.append("cluster cache not synced")
    return web.Response(status=503, text="; ".join(reasons) + "\n")


async def metrics(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    runtime.metrics.cache_synced.set(1 if runtime.cluster.synced else 0)
    runtime.metrics.cache_staleness.set(runtime.cluster.staleness())
    response = web.Response(body=runtime.metrics.render())
    response.headers["Content-Type"] = CONTENT_TYPE
    return response
