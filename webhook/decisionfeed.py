"""`serve --decisions-to URL`: each sensitive decision sent to `kubefence monitor`, which alerts
`evasion.audit_gap` when no audit event records it (`webhook.monitor.gaps`).

The audit feed can be blinded: the truncating backend drops an event still over its limit after
truncation, and a client's padded `Audit-ID` header makes it so (k8s.io/apiserver@v0.37.2
plugin/pkg/audit/truncate/truncate.go, pkg/endpoints/filters/audit_init.go); the API server only
logs it and counts `apiserver_audit_error_total{plugin="truncate"}`. The webhook decided the
request all the same, so its decision is the evidence the monitor holds the feed against.

Sensitive: a CONNECT to a tunnel (exec, attach, portforward, the pod, service and node proxies),
an UPDATE of pods/ephemeralcontainers, a NetworkPolicy DELETE, and any decision carrying
`fence-lost`. A request the configured audit Policy (`auditScope.policyFile`) may leave without
a prompt event for some verb it may stand for (level None, or the stage that carries the
annotations omitted: ResponseComplete, for a CONNECT ResponseStarted) is not sent: its missing
event would be no evidence (as the `audit-scope` rule reads the Policy, the worst verb counts).

Invariants:
- Admission never waits: `offer` is synchronous and O(1), never raises; records wait in a
  bounded queue per target (`QUEUE_SIZE`); one offered to a full queue is dropped and counted.
- A record is the decision's metadata (id, time, verdict, operation, resource, namespace, name,
  user, dry run, the verified client): never object content, never a token.
- Each target gets every record (one URL per monitor replica, or the monitor Service): posts of
  at most `BATCH` records over TLS (the monitor's CA), with the monitor's bearer token and/or a
  client certificate (each re-read when its files change); a 5xx or a connection error is retried
  `TRIES` times with backoff, a 4xx is not (it will not change: logged once per status); each
  record's fate is counted (`kubefence_decision_feed_records_total{target,result}`).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from prometheus_client import CollectorRegistry, Counter

from webhook import tls
from webhook.admission import AdmissionRequest
from webhook.auditpolicy import Level, Policy
from webhook.correlate.timestamps import format_time
from webhook.decisionlog import DECISION_EVENT
from webhook.rules.audit_scope import PROXY_VERBS, TUNNELS, VERBS, attributes
from webhook.workloads import is_ephemeral_update

QUEUE_SIZE = 10_000  # records waiting per target
BATCH = 100  # records per POST
TRIES = 4  # posts of one batch before its records are dropped
BACKOFF = 0.5  # seconds before the first retry, doubled each time
POST_TIMEOUT = 5.0
DECISION_LIST = "DecisionList"
API_VERSION = "kubefence.io/v1"
RESULTS = ("sent", "queue_full", "failed", "refused", "unaudited")


@dataclass(frozen=True)
class FeedOptions:
    targets: tuple[str, ...]
    ca: Path | None = None  # the monitor's CA (default: the system's)
    token_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None


def sensitive(review: AdmissionRequest, annotations: dict[str, str]) -> bool:
    """Whether a decision is one whose missing audit event the monitor alerts."""
    resource = review.resource
    if review.operation == "CONNECT":
        return resource.group == "" and (resource.resource, review.sub_resource) in TUNNELS
    if is_ephemeral_update(review):
        return True
    if (
        review.operation == "DELETE"
        and resource.group == "networking.k8s.io"
        and resource.resource == "networkpolicies"
    ):
        return True
    return bool(annotations.get("fence-lost"))


def unaudited(review: AdmissionRequest, policy: Policy | None) -> bool:
    """Whether the audit Policy may leave the request without a prompt event carrying our
    annotations, for some verb it may stand for (which one it was, the review does not say):
    level None, or the stage omitted where the annotations come promptly (ResponseComplete;
    for a CONNECT ResponseStarted, since a long exec completes long after the window)."""
    if policy is None:
        return False
    connect = review.operation == "CONNECT"
    verbs = (
        PROXY_VERBS
        if connect and review.sub_resource == "proxy"
        else VERBS.get(review.operation, ())
    )
    prompt = "ResponseStarted" if connect else "ResponseComplete"
    for verb, named in verbs:
        evaluation = policy.evaluate(attributes(review, verb, named))
        if evaluation.level is Level.NONE or prompt in evaluation.omit_stages:
            return True
    return False


def record(fields: dict[str, Any], now: float) -> dict[str, Any]:
    """What is sent of one decision line: the fields the monitor's join reads."""
    return {
        "event": DECISION_EVENT,
        "timestamp": format_time(now),
        "decision_id": fields["decision_id"],
        "decision": fields["decision"],
        "allowed": fields["allowed"],
        "operation": fields["operation"],
        "resource": fields["resource"],
        "subresource": fields["subresource"],
        "namespace": fields["namespace"],
        "name": fields["name"],
        "user": fields["user"],
        "dry_run": fields["dry_run"],
        "client": fields.get("client", ""),
    }


class _Target:
    def __init__(self, url: str) -> None:
        self.url = url
        self.queue: deque[dict[str, Any]] = deque()
        self.ready = asyncio.Event()
        self.refused: int | None = None  # the last 4xx logged (once per status)


class DecisionFeed:
    """The sender: `offer` from the request path, `run` as a job beside the server."""

    def __init__(
        self,
        options: FeedOptions,
        *,
        registry: CollectorRegistry,
        log: Any,
        policy: Callable[[], Policy | None] = lambda: None,
    ) -> None:
        self.options = options
        self.log = log
        self.policy = policy  # the audit Policy in force (settings are swapped on reload)
        self.targets = [_Target(url) for url in options.targets]
        self.records = Counter(
            "kubefence_decision_feed_records_total",
            "Sensitive decisions for `kubefence monitor` (--decisions-to), by target and result:"
            " sent, queue_full (dropped, admission never waits), failed (retries spent),"
            " refused (a 4xx), unaudited (the audit Policy may leave the request without a prompt"
            " event: not sent).",
            ["target", "result"],
            registry=registry,
        )
        for target in self.targets:
            for result in RESULTS:
                self.records.labels(target.url, result)
        self._token: str | None = None
        self._token_signature: Any = None
        self._context: ssl.SSLContext | None = None
        self._context_signature: Any = None

    def offer(self, review: AdmissionRequest, fields: dict[str, Any]) -> None:
        """Queue the decision for every target when it is sensitive; never raises, never waits."""
        try:
            annotations = fields.get("audit_annotations") or {}
            if not sensitive(review, annotations):
                return
            if unaudited(review, self.policy()):
                for target in self.targets:
                    self.records.labels(target.url, "unaudited").inc()
                return
            item = record(fields, time.time())
        except Exception:  # a decision is answered whatever happens here
            self.log.exception("decision_feed.failed", decision_id=fields.get("decision_id"))
            return
        for target in self.targets:
            if len(target.queue) >= QUEUE_SIZE:
                self.records.labels(target.url, "queue_full").inc()
                continue
            target.queue.append(item)
            target.ready.set()

    async def run(self) -> None:
        """Send until cancelled, each target on its own."""
        connector = aiohttp.TCPConnector(limit_per_host=2)
        timeout = aiohttp.ClientTimeout(total=POST_TIMEOUT)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(self._send(session, target) for target in self.targets))

    def _ssl(self) -> ssl.SSLContext:
        """The client context, made again when the CA or the client pair changed on disk (a
        rotated Secret); the one in force when the new files do not load (logged)."""
        o = self.options
        files = [path for path in (o.ca, o.client_cert, o.client_key) if path is not None]
        signature = tls.file_signature(*files) if files else None
        if self._context is None or signature != self._context_signature:
            self._context_signature = signature
            try:
                self._context = self.context(o)
            except (OSError, ValueError) as exc:
                if self._context is None:
                    raise
                self.log.error("decision_feed.tls_rejected", reason=str(exc))
        return self._context

    @staticmethod
    def context(o: FeedOptions) -> ssl.SSLContext:
        """The client TLS context: the monitor's CA, the client pair when given."""
        context = ssl.create_default_context(cafile=str(o.ca) if o.ca is not None else None)
        if o.client_cert is not None and o.client_key is not None:
            context.load_cert_chain(o.client_cert, o.client_key)
        return context

    async def _send(self, session: aiohttp.ClientSession, target: _Target) -> None:
        while True:
            await target.ready.wait()
            batch = [target.queue.popleft() for _ in range(min(BATCH, len(target.queue)))]
            if not target.queue:
                target.ready.clear()
            if batch:
                try:
                    result = await self._post(session, target, batch)
                except Exception:  # the sender goes on with the next batch
                    self.log.exception("decision_feed.failed", target=target.url)
                    result = "failed"
                self.records.labels(target.url, result).inc(len(batch))

    async def _post(
        self, session: aiohttp.ClientSession, target: _Target, batch: list[dict[str, Any]]
    ) -> str:
        body = orjson.dumps({"kind": DECISION_LIST, "apiVersion": API_VERSION, "items": batch})
        delay = BACKOFF
        reason = ""
        for attempt in range(TRIES):
            if attempt:
                await asyncio.sleep(delay)
                delay *= 2
            headers = {"Content-Type": "application/json"}
            token = self._read_token()
            if token is not None:
                headers["Authorization"] = "Bearer " + token
            try:
                async with session.post(
                    target.url, data=body, headers=headers, ssl=self._ssl()
                ) as response:
                    status = response.status
                    text = (await response.content.read(300)).decode(errors="replace").strip()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                reason = type(exc).__name__
                continue
            if status < 300:
                target.refused = None
                return "sent"
            reason = f"HTTP {status}: {text[:200]}"
            if 400 <= status < 500 and status not in (408, 429):
                if target.refused != status:  # a configuration error: once, not per batch
                    target.refused = status
                    self.log.error("decision_feed.refused", target=target.url, reason=reason)
                return "refused"
        self.log.warning(
            "decision_feed.failed", target=target.url, records=len(batch), reason=reason
        )
        return "failed"

    def _read_token(self) -> str | None:
        """The bearer token, re-read when its file changes; the last good one on a bad read
        (unreadable, empty, not printable ASCII: logged, never the token itself)."""
        path = self.options.token_file
        if path is None:
            return None
        signature = tls.file_signature(path)
        if signature != self._token_signature:
            self._token_signature = signature
            try:
                token = path.read_bytes().strip().decode("ascii")
            except (OSError, UnicodeDecodeError) as exc:
                self.log.error("decision_feed.token_rejected", file=str(path), reason=str(exc))
                return self._token
            if token and token.isprintable():
                self._token = token
            else:
                self.log.error("decision_feed.token_rejected", file=str(path), reason="empty")
        return self._token
